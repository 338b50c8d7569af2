"""Probability calibration by temperature scaling, fitted on out-of-fold predictions.

A Lovasz hinge pushes logits only to about +-1, so the probabilities of a Lovasz-trained model sit
between 0.27 and 0.73 and almost no tile passes a confidence rule such as "97% of pixels below 0.2 or
above 0.8". One temperature ``T``, fitted by minimising the pixel log-loss of the out-of-fold
probabilities against their truth, maps ``p -> sigmoid(logit(p) / T)``: monotonic, so masks at the
matching threshold are unchanged, but the probabilities mean what they say.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import minimize_scalar

__all__ = ["apply_temperature", "fit_run_temperature", "fit_temperature"]

_EPS = 0.5 / 255  # probabilities are stored as uint8 (p * 255): keep logits finite at 0 and 1


def _logits(probs: np.ndarray, dtype: type = np.float64) -> np.ndarray:
    p = np.clip(np.asarray(probs, dtype=dtype), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def apply_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``sigmoid(logit(probs) / temperature)`` as float32 (``temperature`` 1 leaves them as they are)."""
    if not temperature > 0 or not np.isfinite(temperature):
        raise ValueError(f"temperature must be a positive number, got {temperature}")
    if temperature == 1.0:
        return np.asarray(probs, dtype=np.float32)
    # float32 throughout: the test set's probabilities are 18000 x 101 x 101
    z = _logits(probs, np.float32) / np.float32(temperature)
    return (np.float32(1.0) / (np.float32(1.0) + np.exp(-z))).astype(np.float32, copy=False)


def fit_temperature(
    probs: np.ndarray, truth: np.ndarray, max_pixels: int = 2_000_000, seed: int = 0
) -> float:
    """The temperature that minimises the mean pixel log-loss of ``probs`` against binary ``truth``.

    Args:
        probs: Out-of-fold probabilities (N,H,W) in [0, 1].
        truth: Their masks (N,H,W), bool or {0, 1}.
        max_pixels: Pixels drawn (uniformly, seeded) when there are more.
        seed: Seed of that draw.

    Returns:
        ``T`` in [0.02, 50]; below 1 sharpens the probabilities, above 1 softens them.
    """
    z = _logits(probs).reshape(-1)
    y = np.asarray(truth, dtype=bool).reshape(-1)
    if z.size != y.size:
        raise ValueError(f"probabilities ({np.shape(probs)}) and truth ({np.shape(truth)}) differ in shape")
    if z.size == 0:
        raise ValueError("no pixels to calibrate on")
    if z.size > max_pixels:
        idx = np.random.default_rng(seed).choice(z.size, max_pixels, replace=False)
        z, y = z[idx], y[idx]
    sign = np.where(y, 1.0, -1.0)

    def nll(log_t: float) -> float:
        # -log sigmoid(sign * z / T), computed stably
        return float(np.logaddexp(0.0, -sign * z / np.exp(log_t)).mean())

    res = minimize_scalar(nll, bounds=(np.log(0.02), np.log(50.0)), method="bounded")
    return float(np.exp(res.x))


def fit_run_temperature(run: str | Path) -> tuple[float, int]:
    """The temperature fitted on a run's (or ensemble's) out-of-fold predictions, and their tile count."""
    from saltseg.inference.tune import load_oof

    oof = load_oof(run, with_images=False)
    return fit_temperature(oof.probs, oof.truth), len(oof.ids)
