"""The Python API under the CLI: every command's work as a function, and a segmenter for arrays in memory.

Example:
    >>> import saltseg
    >>> cfg = saltseg.load_config("cpu_fast", ["stages.0.epochs=2"])
    >>> saltseg.train(cfg, "../shared/data/tgs-salt", "runs/nb", folds=[0])
    >>> seg = saltseg.Segmenter.from_runs("runs/nb")
    >>> masks = seg.masks(tiles)            # (N, 101, 101) uint8 -> (N, 101, 101) bool
    >>> probs = saltseg.predict_arrays("runs/nb", section)  # (H, W) section of any size -> (H, W) float32

Each function returns the typed record its command writes (:mod:`saltseg.artifacts.records`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from saltseg.artifacts import (
    EnsembleSummary,
    PostprocessConfig,
    PredictionMeta,
    RefitSummary,
    RunSummary,
    resolve_models,
)
from saltseg.artifacts.records import PipelineSummary, RecipeSummary
from saltseg.backends import BackendName
from saltseg.errors import DataError
from saltseg.inference.postprocess import apply_postprocess
from saltseg.inference.predict import default_postprocess, predict_folder
from saltseg.inference.tune import tune_run
from saltseg.predictor import EnsemblePredictor
from saltseg.training.config import ExperimentConfig, load_config
from saltseg.training.train import train_run

if TYPE_CHECKING:
    from saltseg.inference.export import ExportReport

__all__ = [
    "Segmenter",
    "ensemble",
    "export",
    "load_config",
    "predict",
    "predict_arrays",
    "refit",
    "run_pipeline",
    "run_recipe",
    "train",
    "tune",
]


def _config(cfg: ExperimentConfig | str | Path) -> ExperimentConfig:
    return cfg if isinstance(cfg, ExperimentConfig) else load_config(cfg)


def train(
    cfg: ExperimentConfig | str | Path,
    data: str | Path,
    out: str | Path,
    folds: list[int] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> RunSummary:
    """``saltseg train``: train ``folds`` (default all) of a config (object, shipped name or YAML path)."""
    summary = train_run(_config(cfg), data, out, folds_to_run=folds, resume=resume, progress=progress)
    if summary is None:
        raise DataError("train() runs in one process; launch multi-process training with `saltseg train`")
    return summary


def tune(run: str | Path) -> PostprocessConfig:
    """``saltseg tune``: tune the post-processing on a run's out-of-fold predictions (saved in the run)."""
    return tune_run(run)[0]


def refit(
    run: str | Path, out: str | Path, data: str | Path | None = None, resume: bool = False
) -> RefitSummary:
    """``saltseg refit``: train a cross-validated run's config on every labelled tile into ``out`` (one
    model, the run's epochs and tuned post-processing; ``predict(out, ...)`` uses it)."""
    from saltseg.training.refit import refit_run

    return refit_run(run, out, data, resume=resume, progress=False)


def predict(
    models: list[str | Path] | str | Path,
    images: str | Path,
    out: str | Path,
    csv: str | Path | None = None,
    **kwargs: object,
) -> PredictionMeta:
    """``saltseg predict``: predict a dataset or folder of tiles into a prediction folder (and CSV)."""
    paths = [models] if isinstance(models, str | Path) else list(models)
    return predict_folder(paths, images, out, csv_path=csv, **kwargs)  # type: ignore[arg-type]


def ensemble(runs: list[str | Path], out: str | Path, weights: str | list[float] = "cv") -> EnsembleSummary:
    """``saltseg ensemble``: combine runs into an ensemble folder, weighted ``equal``, ``cv``,
    ``optimize`` or by the given weights (one per run); ``tune`` and ``predict`` then take the folder."""
    from saltseg.inference.ensemble import build_ensemble

    return build_ensemble(runs, out, weights)  # type: ignore[arg-type]


def export(models: list[str | Path] | str | Path, out_file: str | Path, **kwargs: object) -> ExportReport:
    """``saltseg export``: the models (checkpoints, folds, runs, ensembles) as one verified ONNX graph
    averaging their probabilities (flip TTA inside); returns the export report."""
    from saltseg.inference.export import export_onnx

    paths = [models] if isinstance(models, str | Path) else list(models)
    return export_onnx(paths, out_file, **kwargs)  # type: ignore[arg-type]


def run_pipeline(
    cfg: ExperimentConfig | str | Path, data: str | Path, out: str | Path, **kwargs: object
) -> PipelineSummary:
    """``saltseg pipeline``: every fold, OOF tuning, the report, pseudo-label rounds, the student and the
    refit (``pseudo_rounds``, ``distill``, ``refit``), the submission (``test_images``), within
    ``minutes``."""
    from saltseg.pipeline import run_pipeline as _run

    return _run(_config(cfg), data, out, **kwargs)  # type: ignore[arg-type]


def run_recipe(recipe: str | Path, data: str | Path, out: str | Path, **kwargs: object) -> RecipeSummary:
    """``saltseg recipe``: every step of a multi-stage recipe (a shipped name such as ``first_place``
    or a file); ``scale`` shortens every stage, ``test_images`` feeds its pseudo-labels and submission."""
    from saltseg.recipe import load_recipe
    from saltseg.recipe import run_recipe as _run

    return _run(load_recipe(recipe), data, out, **kwargs)  # type: ignore[arg-type]


def predict_arrays(
    models: list[str | Path] | str | Path,
    arrays: np.ndarray,
    batch_size: int = 64,
    stride: int = 50,
    **kwargs: object,
) -> np.ndarray:
    """Salt probabilities of arrays already in memory: uint8 tiles (N, 101, 101) -> (N, 101, 101), or
    one section of any size (H, W) -> (H, W) by blended sliding windows (``stride`` apart). ``models``
    and the keyword arguments as for :meth:`Segmenter.from_runs`."""
    paths = [models] if isinstance(models, str | Path) else list(models)
    seg = Segmenter.from_runs(*paths, **kwargs)  # type: ignore[arg-type]
    arrays = np.asarray(arrays)
    if arrays.ndim == 2 and arrays.shape != (101, 101):
        return seg.section_probabilities(arrays, stride, batch_size)
    return seg.probabilities(arrays, batch_size)[0]


@dataclass
class Segmenter:
    """Runs, folds or checkpoint files as one ensemble, with their tuned post-processing, on arrays.

    Attributes:
        predictor: The ensemble (flip TTA, bf16 where the device supports it).
        postprocess: Threshold, flat-tile, minimum-area and empty-gate settings.
    """

    predictor: EnsemblePredictor
    postprocess: PostprocessConfig

    @classmethod
    def from_runs(
        cls,
        *models: str | Path,
        best_only: bool = False,
        hflip: bool = True,
        device: str | None = None,
        backend: BackendName = "auto",
        precision: str = "auto",
    ) -> Segmenter:
        """Load MODEL arguments as ``saltseg predict`` does (runs, folds, ensembles, ``.safetensors``);
        ``backend`` and ``precision`` as for ``saltseg predict`` (:mod:`saltseg.backends`)."""
        members = resolve_models(list(models), best_only)
        predictor = EnsemblePredictor.load(
            members, hflip=hflip, device=device, backend=backend, precision=precision
        )
        return cls(predictor, default_postprocess(list(models)))

    def probabilities(self, tiles: np.ndarray, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray | None]:
        """Salt probabilities (N,H,W) float32 of uint8 tiles (N,H,W) or (H,W), and image-level ones."""
        tiles = np.asarray(tiles)
        if tiles.ndim == 2:
            tiles = tiles[None]
        if tiles.ndim != 3 or tiles.dtype != np.uint8:
            raise DataError(f"tiles must be uint8 of shape (N, H, W), got {tiles.dtype} {tiles.shape}")
        return self.predictor.predict_array(tiles, batch_size)

    def section_probabilities(
        self, section: np.ndarray, stride: int = 50, batch_size: int = 64
    ) -> np.ndarray:
        """Salt probabilities (H, W) float32 of a section of any size (uint8, or float in [0, 1]), by
        blended windows of the training tile size ``stride`` apart."""
        from saltseg.inference.sliding import predict_large

        section = np.asarray(section)
        if section.ndim != 2 or not np.isfinite(section).all():
            raise DataError(f"a section must be a finite 2-D array, got shape {section.shape}")
        return predict_large(self.predictor, section, stride=stride, batch_size=batch_size)

    def masks(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Final boolean masks (N,H,W): probabilities, then the tuned post-processing."""
        tiles = np.asarray(tiles)
        probs, salt = self.probabilities(tiles, batch_size)
        return apply_postprocess(probs, self.postprocess, tiles.reshape(probs.shape), salt)
