"""The TGS Salt competition metric (mean precision over IoU thresholds 0.50..0.95), IoU and Dice.

All functions take boolean batches of shape (N, H, W) and are vectorised over the batch. Threshold
comparisons are done in exact integer arithmetic: ``IoU > t`` with ``t = (10 + k) / 20`` is evaluated
as ``20 * intersection > (10 + k) * union``, so IoU exactly 0.5 (or 0.95) is not a hit.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

THRESHOLDS = np.round(np.arange(10, 20) / 20, 2)  # 0.50, 0.55, ..., 0.95
_THRESHOLD_NUMERATORS = np.arange(10, 20, dtype=np.int64)  # t = numerator / 20

COVERAGE_BINS: tuple[tuple[str, float, float], ...] = (
    ("empty", 0.0, 0.0),
    ("(0,10%]", 0.0, 0.10),
    ("(10,25%]", 0.10, 0.25),
    ("(25,50%]", 0.25, 0.50),
    ("(50,75%]", 0.50, 0.75),
    ("(75,100%]", 0.75, 1.0),
)
SMALL_SALT_CLASS = 1  # index of "(0,10%]" in COVERAGE_BINS: the tiles with little salt
DEPTH_BANDS: tuple[tuple[str, float, float], ...] = (
    ("z<200", -np.inf, 200),
    ("200-400", 200, 400),
    ("400-600", 400, 600),
    ("600-800", 600, 800),
    ("z>=800", 800, np.inf),
)


def _as_batch(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W) or (H, W), got {a.shape}")
    return a.astype(bool, copy=False)


def _intersection_union(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, truth = _as_batch(pred), _as_batch(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    n = pred.shape[0]
    p, t = pred.reshape(n, -1), truth.reshape(n, -1)
    inter = np.count_nonzero(p & t, axis=1).astype(np.int64)
    union = np.count_nonzero(p | t, axis=1).astype(np.int64)
    return inter, union


def kaggle_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image competition score in [0, 1] for boolean masks of shape (N, H, W).

    An empty truth scores 1 only for an empty prediction; a non-empty truth with an empty prediction
    scores 0; otherwise the score is the fraction of thresholds t in 0.50..0.95 with IoU > t.

    Example:
        >>> kaggle_scores(np.ones((1, 2, 2), bool), np.ones((1, 2, 2), bool))
        array([1.])
    """
    inter, union = _intersection_union(pred, truth)
    hits = (20 * inter[:, None] > _THRESHOLD_NUMERATORS[None, :] * union[:, None]).mean(axis=1)
    truth_empty = union == 0  # both empty
    return np.where(truth_empty, 1.0, hits)


def kaggle_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean competition score over a batch of boolean masks."""
    return float(kaggle_scores(pred, truth).mean())


def iou_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image IoU; 1.0 where both masks are empty."""
    inter, union = _intersection_union(pred, truth)
    return np.where(union == 0, 1.0, inter / np.maximum(union, 1))


def dice_scores(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-image Dice coefficient; 1.0 where both masks are empty."""
    inter, union = _intersection_union(pred, truth)
    total = inter + union  # |P| + |T| = |P n T| + |P u T|
    return np.where(total == 0, 1.0, 2 * inter / np.maximum(total, 1))


def coverage(masks: np.ndarray) -> np.ndarray:
    """Fraction of salt pixels per mask."""
    masks = _as_batch(masks)
    return masks.reshape(masks.shape[0], -1).mean(axis=1)


def coverage_class(masks: np.ndarray) -> np.ndarray:
    """Index into :data:`COVERAGE_BINS` for each mask (0 = empty)."""
    return coverage_class_of(coverage(masks))


def coverage_class_of(cov: np.ndarray) -> np.ndarray:
    """Index into :data:`COVERAGE_BINS` for each salt fraction in ``cov`` (0 = empty)."""
    cov = np.asarray(cov)
    out = np.zeros(cov.shape, dtype=np.int64)
    for i, (_, lo, hi) in enumerate(COVERAGE_BINS[1:], start=1):
        out[(cov > lo) & (cov <= hi)] = i
    return out


def depth_band(depths: Sequence[float] | np.ndarray) -> np.ndarray:
    """Index into :data:`DEPTH_BANDS` for each depth (NaN depths get -1)."""
    z = np.asarray(depths, dtype=float)
    out = np.full(z.shape, -1, dtype=np.int64)
    for i, (_, lo, hi) in enumerate(DEPTH_BANDS):
        out[(z >= lo) & (z < hi)] = i
    return out


def score_breakdown(
    scores: np.ndarray, truth: np.ndarray, depths: np.ndarray | None = None
) -> dict[str, list[dict[str, float | int | str]]]:
    """Group per-image scores by coverage class of the truth and, if depths are given, by depth band.

    Returns ``{"coverage": [{"group", "count", "score", "lost"}...], "depth": [...]}`` where ``lost`` is
    the share of the total score lost in that group (``count * (1 - score) / N``).
    """
    scores = np.asarray(scores, dtype=float)
    n = max(scores.size, 1)

    def rows(labels: np.ndarray, names: Sequence[str]) -> list[dict[str, float | int | str]]:
        out: list[dict[str, float | int | str]] = []
        for i, name in enumerate(names):
            sel = labels == i
            if sel.any():
                s = scores[sel]
                out.append(
                    {
                        "group": name,
                        "count": int(sel.sum()),
                        "score": float(s.mean()),
                        "lost": float((1 - s).sum() / n),
                    }
                )
        return out

    result = {"coverage": rows(coverage_class(truth), [b[0] for b in COVERAGE_BINS])}
    if depths is not None:
        result["depth"] = rows(depth_band(depths), [b[0] for b in DEPTH_BANDS])
    return result
