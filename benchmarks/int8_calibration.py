"""int8 against the number of calibration tiles: the fold score of each graph backend's int8 model when
calibrated on the first N validation tiles (N = the batch size of the first call).

Usage:
    python benchmarks/int8_calibration.py RUN [--data ../shared/data/tgs-salt] [--tiles 128 256]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from saltseg.artifacts import RunDir, resolve_models
from saltseg.checkpoints import load_model
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.predictor import EnsemblePredictor
from saltseg.training.data import LabelledTiles


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a run trained on some folds (its OOF tiles are scored)")
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    args = ap.parse_args()
    oof = RunDir(args.run).load_oof()
    tiles = LabelledTiles.load(args.data)
    index = {t: i for i, t in enumerate(tiles.ids)}
    images, truth = tiles.arrays(np.array([index[i] for i in oof.ids]))
    members = resolve_models([args.run])
    models = [load_model(m.path) for m in members]
    weights = [m.weight for m in members]
    fp32 = EnsemblePredictor(models, weights, backend="torch", autocast=False).predict_tiles(images)
    print(f"torch fp32: {kaggle_scores(fp32.probs > 0.5, truth).mean():.5f}")
    for backend in ("openvino", "onnxruntime"):
        for n in args.tiles:
            predictor = EnsemblePredictor(models, weights, backend=backend, precision="int8")
            pred = predictor.predict_tiles(images, batch_size=n)
            score = kaggle_scores(pred.probs > 0.5, truth).mean()
            print(f"{backend} int8, calibrated on {n} tiles: {score:.5f} ({predictor.check.describe()})")


if __name__ == "__main__":
    main()
