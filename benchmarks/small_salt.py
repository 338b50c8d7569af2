"""Where the tiles with little salt are lost, on a run's out-of-fold predictions, and whether a
"rescue" step wins them back.

For the tiles with (0, 10%] salt: how many hold no pixel above the tuned threshold (the model did not see
them), how many the minimum area or the empty gate emptied, and the IoU of the ones predicted. Then the
rescue hypothesis: a tile the post-processing leaves empty whose largest probability is at least ``m``
gets the pixels above ``r`` times that largest probability. ``m`` and ``r`` are chosen on the other folds
and scored on the held-out one (leave-one-fold-out; the post-processing itself too), so the gain is honest.

Usage:
    python benchmarks/small_salt.py RUN [--out benchmarks/results/small-salt-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from saltseg.artifacts import OutOfFold, PostprocessConfig
from saltseg.inference.postprocess import apply_postprocess
from saltseg.inference.tune import load_oof, tune_postprocess
from saltseg.metrics.kaggle import SMALL_SALT_CLASS, coverage, coverage_class, kaggle_scores

RESCUE_MAX_PROB = (0.2, 0.3, 0.4, 0.5, 0.6)
RESCUE_RATIO = (0.5, 0.6, 0.7, 0.8, 0.9)


def rescue(masks: np.ndarray, probs: np.ndarray, min_max_prob: float, ratio: float) -> np.ndarray:
    """``masks`` with every empty tile whose largest probability is >= ``min_max_prob`` given the pixels
    at or above ``ratio`` times that largest probability."""
    n = len(masks)
    top = probs.reshape(n, -1).max(axis=1)
    empty = ~masks.reshape(n, -1).any(axis=1) & (top >= min_max_prob)
    out = masks.copy()
    out[empty] = probs[empty] >= ratio * top[empty, None, None]
    return out


def tuned_masks(oof: OutOfFold, cfg: PostprocessConfig) -> np.ndarray:
    return apply_postprocess(oof.probs, cfg, oof.images, oof.salt)


def where_lost(oof: OutOfFold, cfg: PostprocessConfig, masks: np.ndarray) -> dict:
    """Why each small-salt tile scores what it does under ``cfg``, whose ``masks`` are given."""
    n = len(oof.ids)
    cov = coverage(oof.truth)
    small = coverage_class(oof.truth) == SMALL_SALT_CLASS
    predicted = masks.reshape(n, -1).any(axis=1)
    above = (oof.probs > cfg.threshold).reshape(n, -1).any(axis=1)
    inter = (masks & oof.truth).reshape(n, -1).sum(axis=1)
    union = (masks | oof.truth).reshape(n, -1).sum(axis=1)
    iou = inter / np.maximum(union, 1)
    scores = kaggle_scores(masks, oof.truth)
    px = cov * oof.truth[0].size
    top = oof.probs.reshape(n, -1).max(axis=1)
    return {
        "small_tiles": int(small.sum()),
        "small_score": round(float(scores[small].mean()), 4),
        "no_pixel_above_threshold": int((small & ~above).sum()),
        "emptied_by_post_processing": int((small & above & ~predicted).sum()),
        "predicted": int((small & predicted).sum()),
        "iou_of_predicted_q25_q50_q75": np.quantile(iou[small & predicted], [0.25, 0.5, 0.75])
        .round(3)
        .tolist()
        if (small & predicted).any()
        else None,
        "true_salt_px_median_unseen": float(np.median(px[small & ~above]))
        if (small & ~above).any()
        else None,
        "true_salt_px_median_predicted": float(np.median(px[small & predicted]))
        if (small & predicted).any()
        else None,
        "largest_prob_median": {
            "empty tiles": round(float(np.median(top[cov == 0])), 3),
            "small salt": round(float(np.median(top[small])), 3),
        },
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run (or ensemble) folder with out-of-fold predictions")
    ap.add_argument("--out", type=Path, help="results JSON")
    args = ap.parse_args()
    oof = load_oof(args.run)
    assert oof.fold is not None and oof.probs is not None
    n = len(oof.ids)
    small = coverage_class(oof.truth) == SMALL_SALT_CLASS
    plain, rescued = np.zeros(n), np.zeros(n)
    folds = []
    for k in np.unique(oof.fold):
        held = np.flatnonzero(oof.fold == k)
        rest = np.flatnonzero(oof.fold != k)
        train, test = oof.take(rest), oof.take(held)
        cfg, _ = tune_postprocess(train)
        base_train = tuned_masks(train, cfg)
        grid = [(m, r) for m in RESCUE_MAX_PROB for r in RESCUE_RATIO]
        gains = [kaggle_scores(rescue(base_train, train.probs, m, r), train.truth).mean() for m, r in grid]
        base_score = kaggle_scores(base_train, train.truth).mean()
        best = int(np.argmax(gains))
        use = gains[best] > base_score
        test_masks = tuned_masks(test, cfg)
        plain[held] = kaggle_scores(test_masks, test.truth)
        rescued[held] = kaggle_scores(
            rescue(test_masks, test.probs, *grid[best]) if use else test_masks, test.truth
        )
        folds.append(
            {
                "fold": int(k),
                "tiles": len(held),
                "postprocess": cfg.model_dump(exclude_defaults=True),
                "rescue": {"min_max_prob": grid[best][0], "ratio": grid[best][1]} if use else None,
                "rescue_gain_on_the_other_folds": round(float(gains[best] - base_score), 4),
                "held_out_score": round(float(plain[held].mean()), 4),
                "held_out_score_with_rescue": round(float(rescued[held].mean()), 4),
                "where_small_salt_is_lost": where_lost(test, cfg, test_masks),
            }
        )
        print(json.dumps(folds[-1]), flush=True)
    result = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": platform.processor() or platform.machine(),
        "run": str(args.run),
        "command": f"python benchmarks/small_salt.py {args.run}",
        "oof_score": round(float(plain.mean()), 4),
        "oof_score_with_rescue": round(float(rescued.mean()), 4),
        "small_salt_score": round(float(plain[small].mean()), 4),
        "small_salt_score_with_rescue": round(float(rescued[small].mean()), 4),
        "folds": folds,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "folds"}, indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
