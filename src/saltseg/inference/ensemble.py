"""``saltseg ensemble``: weighted averages of runs (each already an average of its folds and snapshots),
weighted equally, by CV score, or with weights optimised on out-of-fold predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.optimize import minimize

from saltseg.errors import DataError
from saltseg.inference.tune import OOF, load_oof
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.utils.io import write_json

Weighting = Literal["equal", "cv", "optimize"]


def _align(oofs: list[OOF], runs: list[Path]) -> list[OOF]:
    common = set(oofs[0].ids)
    for o in oofs[1:]:
        common &= set(o.ids)
    if not common:
        raise DataError("the runs share no out-of-fold tile; they must be trained on the same data", runs[0])
    order = sorted(common)
    out = []
    for o in oofs:
        pos = {i: k for k, i in enumerate(o.ids)}
        idx = np.array([pos[i] for i in order])
        out.append(
            OOF(
                order,
                o.probs[idx],
                o.truth[idx],
                None if o.salt is None else o.salt[idx],
                None if o.images is None else o.images[idx],
            )
        )
    return out


def _score(probs: np.ndarray, truth: np.ndarray) -> float:
    return float(kaggle_scores(probs > 0.5, truth).mean())


def ensemble_weights(oofs: list[OOF], how: Weighting) -> tuple[np.ndarray, list[float]]:
    """Weights (summing to 1) of aligned OOF predictions, and each member's own CV score."""
    cv = [_score(o.probs, o.truth) for o in oofs]
    n = len(oofs)
    if how == "equal" or n == 1:
        return np.full(n, 1.0 / n), cv
    if how == "cv":
        w = np.asarray(cv)
        return w / w.sum(), cv
    stack = np.stack([o.probs for o in oofs])
    truth = oofs[0].truth

    def loss(theta: np.ndarray) -> float:
        w = np.exp(theta - theta.max())
        w /= w.sum()
        return -_score(np.tensordot(w, stack, axes=1), truth)

    res = minimize(loss, np.zeros(n), method="Nelder-Mead", options={"maxiter": 40 * n, "xatol": 1e-2})
    w = np.exp(res.x - res.x.max())
    return w / w.sum(), cv


def build_ensemble(runs: list[str | Path], out: str | Path, how: Weighting = "cv") -> dict:
    """Combine runs into ensemble folder ``out``: ``ensemble.json`` (members and weights), ``oof.npz``
    (weighted OOF probabilities, so that ``saltseg tune`` and ``saltseg report`` work on it) and
    ``summary.json``."""
    from saltseg.training.train import save_probs

    runs_p = [Path(r) for r in runs]
    out = Path(out)
    oofs = _align([load_oof(r, with_images=False) for r in runs_p], runs_p)
    weights, cv = ensemble_weights(oofs, how)
    probs = np.tensordot(weights, np.stack([o.probs for o in oofs]), axes=1).astype(np.float32)
    salts = [o.salt for o in oofs]
    salt = None
    if all(s is not None for s in salts):
        salt = np.tensordot(weights, np.stack(salts), axes=1)
    out.mkdir(parents=True, exist_ok=True)
    save_probs(out / "oof.npz", oofs[0].ids, probs, salt, oofs[0].truth)
    members = [
        {"run": str(r.resolve()), "weight": float(w), "cv_score": c}
        for r, w, c in zip(runs_p, weights, cv, strict=True)
    ]
    write_json(out / "ensemble.json", {"weighting": how, "members": members})
    data_json = runs_p[0] / "data.json"
    if data_json.exists():
        write_json(out / "data.json", json.loads(data_json.read_text()))
    summary = {
        "members": members,
        "weighting": how,
        "n_oof": len(oofs[0].ids),
        "oof_score": _score(probs, oofs[0].truth),
    }
    write_json(out / "summary.json", summary)
    return summary
