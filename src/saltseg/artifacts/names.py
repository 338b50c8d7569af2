"""The names of every file saltseg writes into its folders: the only place that knows them.

Run folder (``saltseg train``)::

    RUN/config.yaml      resolved config           RUN/folds.csv        the K-fold split
    RUN/data.json        the data folder           RUN/summary.json     folds and OOF score
    RUN/postprocess.json tuned post-processing     RUN/report.html      the diagnostics report
    RUN/fold{k}/state.json        completed stages, status, re-fitted epochs (resume reads it)
    RUN/fold{k}/stage{i}/last.ckpt  Lightning checkpoint of the stage in progress (resume)
    RUN/fold{k}/stage{i}/end.safetensors  the model at the end of stage i
    RUN/fold{k}/best.safetensors  best validation epoch   fold{k}/snapshots/*.safetensors  per-cycle bests
    RUN/fold{k}/swa.safetensors   SWA average             fold{k}/swa/epoch*.safetensors  SWA's members
    RUN/fold{k}/oof.npz           ids, uint8 probabilities of the fold's members on its tiles, truth
    RUN/fold{k}/summary.json      the fold's summary      fold{k}/logs/  CSV and TensorBoard logs

Ensemble folder (``saltseg ensemble``): ``ensemble.json`` (members and weights), ``summary.json``,
``oof.npz``, ``data.json`` and, once tuned, ``postprocess.json``.

Refit folder (``saltseg refit``, ``OUT/refit`` of a pipeline): one fold folder trained on every tile
(``state.json``, ``stage{i}/``, ``summary.json``, ``logs/``) plus ``refit.json``, ``data.json`` and the
run's ``postprocess.json``.

Prediction folder (``saltseg predict``): ``masks.csv`` (submission format), ``meta.json``,
``probs/chunk-*.npz``.
"""

CONFIG_FILE = "config.yaml"
DATA_FILE = "data.json"
FOLDS_FILE = "folds.csv"
SUMMARY_FILE = "summary.json"
STATE_FILE = "state.json"
OOF_FILE = "oof.npz"
BEST_FILE = "best.safetensors"
END_FILE = "end.safetensors"
LAST_CKPT_FILE = "last.ckpt"
SNAPSHOT_DIR = "snapshots"
SWA_DIR = "swa"
SWA_FILE = "swa.safetensors"
LOGS_DIR = "logs"
METRICS_FILE = "metrics.csv"  # fold{k}/logs/stage{i}/metrics.csv: one row per logging call
POSTPROCESS_FILE = "postprocess.json"
REPORT_FILE = "report.html"
ENSEMBLE_FILE = "ensemble.json"
META_FILE = "meta.json"
PRED_MASKS_FILE = "masks.csv"
PROBS_DIR = "probs"
PSEUDO_FILE = "pseudo.json"
PIPELINE_FILE = "pipeline.json"
RECIPE_FILE = "recipe.json"
QUEUE_FILE = "queue.json"
STUDY_FILE = "study.db"
SEARCH_FILE = "search.json"
TRIAL_FILE = "trial.json"
SUBMISSION_FILE = "submission.csv"
REFIT_FILE = "refit.json"
REFIT_DIR = "refit"


def stage_dir_name(stage: int) -> str:
    """The folder of a fold's stage ``stage``."""
    return f"stage{stage}"


def snapshot_name(stage: int, cycle: int) -> str:
    """The file of the best epoch of snapshot cycle ``cycle`` of stage ``stage``."""
    return f"s{stage}_c{cycle}.safetensors"


CHUNK_PATTERN = "chunk-*.npz"
"""The names of a prediction folder's probability chunks (:func:`chunk_name`)."""


def chunk_name(index: int) -> str:
    """The file of a prediction folder's probability chunk ``index``."""
    return f"chunk-{index:05d}.npz"
