"""Does a tuning step generalise? Leave-one-fold-out over a run's out-of-fold predictions: the
post-processing is tuned on the other folds' tiles, with and without the seeded-regions (hysteresis)
step, and scored on the held-out fold; the sum over folds is the honest OOF score of each tuner.

Usage:
    python benchmarks/postprocess_cv.py RUN [--out benchmarks/results/postprocess-cv-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from saltseg.inference.postprocess import apply_postprocess
from saltseg.inference.tune import load_oof, tune_postprocess
from saltseg.metrics.kaggle import SMALL_SALT_CLASS, coverage_class, kaggle_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run (or ensemble) folder with out-of-fold predictions")
    ap.add_argument("--out", type=Path, help="results JSON")
    args = ap.parse_args()
    oof = load_oof(args.run)
    assert oof.fold is not None and oof.probs is not None
    small = coverage_class(oof.truth) == SMALL_SALT_CLASS
    scores = {"without seeds": np.zeros(len(small)), "with seeds": np.zeros(len(small))}
    folds = []
    for k in np.unique(oof.fold):
        held = oof.fold == k
        rest, test = oof.take(np.flatnonzero(~held)), oof.take(np.flatnonzero(held))
        row: dict = {"fold": int(k), "tiles": int(held.sum())}
        for name, seeds in (("without seeds", False), ("with seeds", True)):
            t0 = time.time()
            cfg, _ = tune_postprocess(rest, try_seeds=seeds)
            s = kaggle_scores(apply_postprocess(test.probs, cfg, test.images, test.salt), test.truth)
            scores[name][held] = s
            row[name] = {"score": round(float(s.mean()), 4), "tune_s": round(time.time() - t0, 1)}
            row[name]["postprocess"] = cfg.model_dump(exclude_defaults=True)
        folds.append(row)
        print(json.dumps(row), flush=True)
    summary = {
        name: {"oof": round(float(s.mean()), 4), "small_salt": round(float(s[small].mean()), 4)}
        for name, s in scores.items()
    }
    print(json.dumps(summary))
    if args.out:
        result = {
            "command": f"python benchmarks/postprocess_cv.py {args.run}",
            "date": datetime.now(timezone.utc).isoformat(timespec="minutes"),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
            "tiles": len(small),
            "folds": folds,
            "leave_one_fold_out": summary,
        }
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
