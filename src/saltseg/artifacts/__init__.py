"""What the stages leave for each other: the folders (run, fold, ensemble, prediction), the names of
their files (:mod:`saltseg.artifacts.names`, the only place that knows them), typed records of their
JSON files, the one probability store and the post-processing settings.

``training``, ``inference``, ``diagnostics`` and the pipeline hand each other runs, folds, ensembles and
predictions only through this package (the pipeline's own ``pipeline.json`` and the search's study files
are still written by their owners, under names from :mod:`saltseg.artifacts.names`).
"""

from saltseg.artifacts import names
from saltseg.artifacts.folders import (
    EnsembleDir,
    FoldDir,
    Member,
    PredictionDir,
    RunDir,
    find_postprocess,
    init_checkpoint,
    open_oof_source,
    read_data_dir,
    resolve_models,
    write_data_dir,
)
from saltseg.artifacts.postprocess import PostprocessConfig, load_postprocess, save_postprocess
from saltseg.artifacts.probs import OutOfFold, decode_probs, encode_probs, load_probs, read_oof, save_probs
from saltseg.artifacts.records import (
    EnsembleMember,
    EnsembleSummary,
    FoldState,
    FoldSummary,
    ModelWeight,
    PredictionMeta,
    PseudoSummary,
    RefitSummary,
    RunSummary,
    read_record,
)

__all__ = [
    "EnsembleDir",
    "EnsembleMember",
    "EnsembleSummary",
    "FoldDir",
    "FoldState",
    "FoldSummary",
    "Member",
    "ModelWeight",
    "OutOfFold",
    "PostprocessConfig",
    "PredictionDir",
    "PredictionMeta",
    "PseudoSummary",
    "RefitSummary",
    "RunDir",
    "RunSummary",
    "decode_probs",
    "encode_probs",
    "find_postprocess",
    "init_checkpoint",
    "load_postprocess",
    "load_probs",
    "names",
    "open_oof_source",
    "read_data_dir",
    "read_oof",
    "read_record",
    "resolve_models",
    "save_postprocess",
    "save_probs",
    "write_data_dir",
]
