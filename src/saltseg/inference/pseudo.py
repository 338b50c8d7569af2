"""``saltseg pseudo``: confident predictions on unlabelled tiles as a new labelled dataset.

A tile is confident when the fraction of its pixels with p < ``low`` or p > ``high`` is at least
``confidence`` (first place: 0.2 / 0.8 / 0.97). Selected tiles are balanced by coverage class so that
no class dominates, and written as ``images/`` + ``masks/`` (readable by every saltseg command). A
training config uses them with ``data.pseudo_labels: DIR``; they never enter a validation fold.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from saltseg.artifacts import PredictionDir, PseudoSummary, names
from saltseg.data.tiles import open_dataset
from saltseg.errors import DataError
from saltseg.inference.calibrate import apply_temperature
from saltseg.metrics.kaggle import COVERAGE_BINS, coverage_class


def confidence(probs: np.ndarray, low: float = 0.2, high: float = 0.8) -> np.ndarray:
    """Fraction of confident pixels (p < low or p > high) per tile."""
    conf = (probs < low) | (probs > high)
    return conf.reshape(len(conf), -1).mean(axis=1)


def select_pseudo_labels(
    probs: np.ndarray,
    min_confidence: float = 0.97,
    balance: bool = True,
    low: float = 0.2,
    high: float = 0.8,
    seed: int = 0,
    threshold: float = 0.5,
) -> np.ndarray:
    """Indices of tiles to pseudo-label: confident ones, capped per coverage class when ``balance``
    (see :func:`balance_by_coverage`). Coverage classes are those of the masks ``probs > threshold``."""
    keep = np.flatnonzero(confidence(probs, low, high) >= min_confidence)
    if not balance or keep.size == 0:
        return keep
    return balance_by_coverage(keep, coverage_class(probs[keep] > threshold), seed)


def balance_by_coverage(keep: np.ndarray, classes: np.ndarray, seed: int = 0) -> np.ndarray:
    """The sorted subset of tile indices ``keep`` (coverage classes ``classes``) with each class capped.

    The cap per class is the size of the median non-empty class, so that empty tiles (the easiest to be
    confident about) do not swamp the set.
    """
    if keep.size == 0:
        return keep
    counts = np.bincount(classes, minlength=len(COVERAGE_BINS))
    nonzero = counts[1:][counts[1:] > 0]
    cap = int(np.median(nonzero)) if nonzero.size else int(counts[0])
    rng = np.random.default_rng(seed)
    chosen = []
    for c in range(len(COVERAGE_BINS)):
        idx = keep[classes == c]
        if idx.size > cap:
            idx = rng.choice(idx, cap, replace=False)
        chosen.append(idx)
    return np.sort(np.concatenate(chosen))


def _prediction_threshold(pred_dir: Path) -> float:
    """The pixel threshold the prediction folder's masks were made with (0.5 when unknown)."""
    try:
        return float(PredictionDir(pred_dir).read_meta().postprocess["threshold"])
    except (DataError, ValueError, KeyError, TypeError):
        return 0.5


def write_pseudo_dataset(
    pred_dir: str | Path,
    images: str | Path,
    out: str | Path,
    min_confidence: float = 0.97,
    balance: bool = True,
    exclude: str | Path | None = None,
    temperature: float = 1.0,
    soft: bool = False,
) -> PseudoSummary:
    """Select confident tiles of prediction folder ``pred_dir`` and write them to ``out``.

    ``images`` is the dataset the predictions were made on (its images are copied); ``exclude`` is a
    labelled dataset whose ids must never be pseudo-labelled (defaults to ``images`` itself).
    ``temperature`` calibrates the probabilities before the confidence rule (see
    :func:`saltseg.inference.calibrate.fit_temperature`); the masks are those of the uncalibrated
    probabilities at the prediction's threshold. ``pseudo.json`` counts, per coverage class, the tiles
    that passed the rule and those kept after balancing.

    ``soft`` writes soft targets for distillation instead of masks: the calibrated probabilities as
    8-bit PNGs (``p * 255``; ``"soft": true`` in ``pseudo.json``), which training reads as targets in
    [0, 1]. With ``min_confidence=0`` and ``balance=False`` every unlabelled tile is kept.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("output exists and is not a folder", out)
    if out.exists() and any(out.iterdir()):
        raise DataError("output folder exists and is not empty", out)
    pred = PredictionDir(Path(pred_dir)).load_probs()
    threshold = _prediction_threshold(Path(pred_dir))
    src = open_dataset(images)
    labelled = set(src.labelled_ids) | (set(open_dataset(exclude).labelled_ids) if exclude else set())
    usable = np.array([i not in labelled for i in pred["ids"]])
    ids_all = pred["ids"][usable]
    probs = pred["probs"][usable]
    if len(ids_all) == 0:
        raise DataError("no unlabelled tile among the predictions", pred_dir)
    calibrated = apply_temperature(probs, temperature)
    passing = np.flatnonzero(confidence(calibrated) >= min_confidence)
    # coverage classes of the written masks; calibration is monotonic, so the same as at its threshold
    passed = coverage_class(probs[passing] > threshold) if len(passing) else np.array([], dtype=int)
    sel = balance_by_coverage(passing, passed) if balance else passing
    classes = passed[np.searchsorted(passing, sel)]
    tmp = out.with_name(f".{out.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "images").mkdir(parents=True)
    (tmp / "masks").mkdir()
    for k in sel:
        tile_id = str(ids_all[k])
        shutil.copyfile(src.image_path(tile_id), tmp / "images" / f"{tile_id}.png")
        target = np.round(calibrated[k] * 255) if soft else (probs[k] > threshold) * 255
        Image.fromarray(target.astype(np.uint8)).save(tmp / "masks" / f"{tile_id}.png")
    info = PseudoSummary(
        source=str(pred_dir),
        candidates=len(ids_all),
        selected=len(sel),
        min_confidence=min_confidence,
        balanced=balance,
        threshold=threshold,
        temperature=temperature,
        soft=soft,
        passed=len(passing),
        passed_per_coverage_class={n: int((passed == c).sum()) for c, (n, _, _) in enumerate(COVERAGE_BINS)},
        per_coverage_class={n: int((classes == c).sum()) for c, (n, _, _) in enumerate(COVERAGE_BINS)},
    )
    info.write(tmp / names.PSEUDO_FILE)
    if out.exists():
        out.rmdir()
    tmp.rename(out)
    return info
