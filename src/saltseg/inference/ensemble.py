"""``saltseg ensemble``: weighted averages of runs (each already an average of its folds and snapshots),
weighted equally, by CV score, or with weights optimised on out-of-fold predictions."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np

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


def _search_weights(stack: np.ndarray, truth: np.ndarray, starts: list[np.ndarray]) -> np.ndarray:
    """Weights on the simplex maximising the OOF score at threshold 0.5.

    The score is piecewise constant in the weights, so gradient-free local search from a smooth start
    goes nowhere; instead the best of ``starts`` (each member alone, equal, CV weights) is improved by
    moving weight between pairs of members in steps of 0.25, 0.1, 0.05 and 0.02, keeping a move only
    when it raises the score. The result is never worse than any start.
    """
    n = stack.shape[0]

    def score(w: np.ndarray) -> float:
        return _score(np.tensordot(w.astype(stack.dtype), stack, axes=1), truth)

    scored = [(score(w), k, w) for k, w in enumerate(starts)]
    best_score, _, best = max(scored, key=lambda t: (t[0], -t[1]))  # ties: the earlier start
    for step in (0.25, 0.1, 0.05, 0.02):
        for _ in range(20):  # sweeps at this step size
            improved = False
            for i in range(n):
                for j in range(n):
                    if i == j or best[j] <= 1e-12:
                        continue
                    move = min(step, best[j])
                    cand = best.copy()
                    cand[i] += move
                    cand[j] -= move
                    s = score(cand)
                    if s > best_score + 1e-12:
                        best, best_score, improved = cand, s, True
            if not improved:
                break
    best = np.clip(best, 0.0, None)
    return best / best.sum()


def ensemble_weights(oofs: list[OOF], how: Weighting) -> tuple[np.ndarray, list[float]]:
    """Weights (summing to 1) of aligned OOF predictions, and each member's own CV score.

    ``equal``: 1/n each; ``cv``: proportional to each member's OOF score (equal if all score 0);
    ``optimize``: searched to maximise the OOF score of the weighted average, never below the best
    member alone nor the equal and CV weightings.
    """
    cv = [_score(o.probs, o.truth) for o in oofs]
    n = len(oofs)
    equal = np.full(n, 1.0 / n)
    cv_w = np.asarray(cv, dtype=float)
    cv_w = cv_w / cv_w.sum() if cv_w.sum() > 0 else equal.copy()
    if how == "equal" or n == 1:
        return equal, cv
    if how == "cv":
        return cv_w, cv
    stack = np.stack([o.probs for o in oofs])
    starts = [equal, cv_w, *np.eye(n)]
    return _search_weights(stack, oofs[0].truth, starts), cv


def build_ensemble(runs: list[str | Path], out: str | Path, how: Weighting = "cv") -> dict:
    """Combine runs into ensemble folder ``out``: ``ensemble.json`` (members and weights), ``oof.npz``
    (weighted OOF probabilities, so that ``saltseg tune`` and ``saltseg report`` work on it) and
    ``summary.json``."""
    from saltseg.training.train import save_probs

    runs_p = [Path(r) for r in runs]
    out = Path(out)
    if (out / "config.yaml").exists() or any(out.resolve() == r.resolve() for r in runs_p):
        raise DataError("the ensemble folder must not be a run folder; choose a new --out", out)
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
