"""The Python API under the CLI: every command's work as a function, and a segmenter for arrays in memory.

Example:
    >>> import saltseg
    >>> cfg = saltseg.load_config("cpu_fast", ["stages.0.epochs=2"])
    >>> saltseg.train(cfg, "../shared/data/tgs-salt", "runs/nb", folds=[0])
    >>> seg = saltseg.Segmenter.from_runs("runs/nb")
    >>> masks = seg.masks(tiles)            # (N, 101, 101) uint8 -> (N, 101, 101) bool
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.artifacts import PostprocessConfig, PredictionMeta, RunSummary, resolve_models
from saltseg.backends import BackendName
from saltseg.errors import DataError
from saltseg.inference.postprocess import apply_postprocess
from saltseg.inference.predict import default_postprocess, predict_folder
from saltseg.inference.tune import tune_run
from saltseg.predictor import EnsemblePredictor
from saltseg.training.config import ExperimentConfig, load_config
from saltseg.training.train import train_run

__all__ = ["Segmenter", "load_config", "predict", "train", "tune"]


def train(
    cfg: ExperimentConfig | str | Path,
    data: str | Path,
    out: str | Path,
    folds: list[int] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> RunSummary:
    """``saltseg train``: train ``folds`` (default all) of a config (object, shipped name or YAML path)."""
    if not isinstance(cfg, ExperimentConfig):
        cfg = load_config(cfg)
    summary = train_run(cfg, data, out, folds_to_run=folds, resume=resume, progress=progress)
    if summary is None:
        raise DataError("train() runs in one process; launch multi-process training with `saltseg train`")
    return summary


def tune(run: str | Path) -> PostprocessConfig:
    """``saltseg tune``: tune the post-processing on a run's out-of-fold predictions (saved in the run)."""
    return tune_run(run)[0]


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

    def masks(self, tiles: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """Final boolean masks (N,H,W): probabilities, then the tuned post-processing."""
        tiles = np.asarray(tiles)
        probs, salt = self.probabilities(tiles, batch_size)
        return apply_postprocess(probs, self.postprocess, tiles.reshape(probs.shape), salt)
