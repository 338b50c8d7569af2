"""``saltseg ensemble``: weighted averages of runs (each already an average of its folds and snapshots),
weighted equally, by CV score, or with weights optimised on out-of-fold predictions.

A run without a mask head (the separate empty/non-empty classifier) takes no part in the mask average;
it feeds the image-level salt probability that the empty gate thresholds, with as much weight as all
segmentation runs together. ``saltseg predict`` averages the same way (see :mod:`saltseg.predictor`), so
the settings tuned on the ensemble's OOF predictions are the ones prediction meets.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from saltseg.artifacts import (
    EnsembleDir,
    EnsembleMember,
    EnsembleSummary,
    OutOfFold,
    RunDir,
    open_oof_source,
    read_data_dir,
    save_probs,
)
from saltseg.errors import DataError
from saltseg.metrics.kaggle import kaggle_scores

Weighting = Literal["equal", "cv", "optimize"]


def _align(oofs: list[OutOfFold], runs: list[Path]) -> list[OutOfFold]:
    common = set(oofs[0].ids)
    for o in oofs[1:]:
        common &= set(o.ids)
    if not common:
        raise DataError("the runs share no out-of-fold tile; they must be trained on the same data", runs[0])
    order = sorted(common)
    out = []
    for o in oofs:
        pos = {i: k for k, i in enumerate(o.ids)}
        out.append(o.take(np.array([pos[i] for i in order])))
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


def ensemble_weights(oofs: list[OutOfFold], how: Weighting) -> tuple[np.ndarray, list[float]]:
    """Weights (summing to 1) of aligned OOF predictions, and each member's own CV score.

    ``equal``: 1/n each; ``cv``: proportional to each member's OOF score (equal if all score 0);
    ``optimize``: searched to maximise the OOF score of the weighted average, never below the best
    member alone nor the equal and CV weightings.
    """
    cv = [_score(o.probs, o.truth) for o in oofs if o.probs is not None]
    if len(cv) != len(oofs):
        raise DataError("ensemble_weights weighs segmentation runs only (a run here has no masks)")
    n = len(oofs)
    equal = np.full(n, 1.0 / n)
    cv_w = np.asarray(cv, dtype=float)
    cv_w = cv_w / cv_w.sum() if cv_w.sum() > 0 else equal.copy()
    if how == "equal" or n == 1:
        return equal, cv
    if how == "cv":
        return cv_w, cv
    stack = np.stack([o.probs for o in oofs if o.probs is not None])
    starts = [equal, cv_w, *np.eye(n)]
    return _search_weights(stack, oofs[0].truth, starts), cv


def _weighted(arrays: list[np.ndarray], weights: list[float]) -> np.ndarray:
    return np.tensordot(np.asarray(weights) / sum(weights), np.stack(arrays), axes=1).astype(np.float32)


def build_ensemble(
    runs: list[str | Path], out: str | Path, how: Weighting | Sequence[float] = "cv"
) -> EnsembleSummary:
    """Combine runs into ensemble folder ``out``: ``ensemble.json`` (members and weights), ``oof.npz``
    (weighted OOF probabilities, so that ``saltseg tune`` and ``saltseg report`` work on it) and
    ``summary.json``.

    Segmentation runs are weighted by ``how`` (``equal``, ``cv``, ``optimize``, or the user's own
    weights, one per run, as the talk weighted by leaderboard scores); classifier runs (no masks) share a
    weight equal to the segmentation runs' total (equally, or in proportion to their given weights), and
    count only for the image-level salt probability.
    """
    runs_p = [Path(r) for r in runs]
    out = Path(out)
    given = None if isinstance(how, str) else [float(w) for w in how]
    if given is not None and (len(given) != len(runs_p) or any(not np.isfinite(w) or w < 0 for w in given)):
        raise DataError(f"need one non-negative weight per run: {len(given)} weights for {len(runs_p)} runs")
    if RunDir.looks_like(out) or any(out.resolve() == r.resolve() for r in runs_p):
        raise DataError("the ensemble folder must not be a run folder; choose a new --out", out)
    oofs = _align([open_oof_source(r).load_oof() for r in runs_p], runs_p)
    seg = [k for k, o in enumerate(oofs) if o.probs is not None]
    if not seg:
        raise DataError("no run with a mask head: an ensemble needs at least one segmentation run", runs_p[0])
    if given is not None:
        seg_given = [given[k] for k in seg]
        if sum(seg_given) <= 0:
            raise DataError("the segmentation runs' weights add up to 0")
        seg_w, cv = ensemble_weights([oofs[k] for k in seg], "equal")
        seg_w = np.asarray(seg_given) / sum(seg_given)
    else:
        seg_w, cv = ensemble_weights([oofs[k] for k in seg], how)  # type: ignore[arg-type]
    cls = [k for k in range(len(oofs)) if k not in seg]
    cls_given = [given[k] for k in cls] if given is not None else [1.0] * len(cls)
    cls_total = sum(cls_given) or 1.0
    weights = [0.0] * len(oofs)  # the classifiers' share (their total 1); the segmentation runs' below
    for k, g in zip(cls, cls_given, strict=True):
        weights[k] = g / cls_total
    scores: list[float | None] = [None] * len(oofs)
    for k, w, c in zip(seg, seg_w, cv, strict=True):
        weights[k], scores[k] = float(w), c
    probs = _weighted([oofs[k].probs for k in seg], [weights[k] for k in seg])  # type: ignore[misc]
    with_salt = [k for k, o in enumerate(oofs) if o.salt is not None and weights[k] > 0]
    salt = (
        _weighted([oofs[k].salt for k in with_salt], [weights[k] for k in with_salt]) if with_salt else None
    )  # type: ignore[misc]
    out.mkdir(parents=True, exist_ok=True)
    folder = EnsembleDir(out)
    save_probs(folder.oof_file, oofs[0].ids, probs, salt, oofs[0].truth)
    total = sum(weights)
    summary = EnsembleSummary(
        weighting=how if isinstance(how, str) else "given",
        members=[
            EnsembleMember(
                run=str(r.resolve()), weight=w / total, cv_score=c, has_mask=oofs[k].probs is not None
            )
            for k, (r, w, c) in enumerate(zip(runs_p, weights, scores, strict=True))
        ],
        n_oof=len(oofs[0].ids),
        oof_score=_score(probs, oofs[0].truth),
    )
    folder.write(summary)
    data_dir = read_data_dir(runs_p[0])
    if data_dir is not None:
        folder.write_data_dir(data_dir)
    return summary
