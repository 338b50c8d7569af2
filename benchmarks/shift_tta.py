"""Shift TTA on one fold's validation tiles: does averaging the flip TTA over shifted copies of the tile
(reflect-padded, shifted by +-PX pixels, shifted back; each pixel averaged over the views that saw it)
add to the fold's score at threshold 0.5? Uses the fold's best weights and its ``oof.npz`` tile list.

Usage: python benchmarks/shift_tta.py RUN/round1 --fold 0 --data ../shared/data/tgs-salt --px 6
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from saltseg.checkpoints import load_model
from saltseg.inference.tta import predict_batch
from saltseg.metrics.kaggle import SMALL_SALT_CLASS, coverage_class_of, kaggle_scores
from saltseg.training.data import LabelledTiles

TILE = 101


@torch.no_grad()
def shifted_probs(model: torch.nn.Module, x: torch.Tensor, dy: int, dx: int, pad: int) -> torch.Tensor:
    """Flip-TTA probabilities of ``x`` shifted by (dy, dx), moved back into place (NaN where unseen)."""
    xp = F.pad(x, (pad, pad, pad, pad), mode="reflect")
    out = predict_batch(model, xp[..., pad + dy : pad + dy + TILE, pad + dx : pad + dx + TILE])["mask"]
    canvas = torch.full((x.shape[0], 1, TILE + 2 * pad, TILE + 2 * pad), float("nan"))
    canvas[..., pad + dy : pad + dy + TILE, pad + dx : pad + dx + TILE] = out
    return canvas[..., pad : pad + TILE, pad : pad + TILE][:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="a round folder holding foldK/best.safetensors and foldK/oof.npz")
    ap.add_argument("--fold", type=int, default=0)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument("--px", type=int, default=6)
    ap.add_argument("--out", type=Path, help="write the scores here as JSON")
    args = ap.parse_args()
    fold = args.run / f"fold{args.fold}"
    ids = list(np.load(fold / "oof.npz")["ids"])
    tiles = LabelledTiles.load(args.data)
    pos = {t: i for i, t in enumerate(tiles.ids)}
    images, masks = tiles.arrays(np.array([pos[t] for t in ids]))
    truth = masks > 0
    model = load_model(fold / "best.safetensors")
    x = torch.from_numpy(images).float().div(255)[:, None]
    s = args.px
    shifts = {"none": (0, 0), "down": (s, 0), "up": (-s, 0), "right": (0, s), "left": (0, -s)}
    probs: dict[str, np.ndarray] = {}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name, (dy, dx) in shifts.items():
            parts = [shifted_probs(model, x[b : b + 64], dy, dx, s + 2) for b in range(0, len(x), 64)]
            probs[name] = torch.cat(parts).numpy()
    cov = truth.mean((1, 2))
    small = coverage_class_of(cov) == SMALL_SALT_CLASS
    views = {
        "flip": ["none"],
        "flip + 4 shifts": list(shifts),
        "flip + vertical shifts": ["none", "down", "up"],
        "flip + horizontal shifts": ["none", "right", "left"],
    }
    result: dict[str, dict[str, float]] = {}
    for label, names in views.items():
        p = np.nanmean(np.stack([probs[n] for n in names]), axis=0)
        scores = kaggle_scores(p > 0.5, truth)
        result[label] = {"score": float(scores.mean()), "small_salt": float(scores[small].mean())}
        print(f"{label:>26}: {scores.mean():.4f} (tiles with <= 10% salt {scores[small].mean():.3f})")
    if args.out:
        args.out.write_text(
            json.dumps({"run": str(args.run), "fold": args.fold, "px": s, **result}, indent=1)
        )


if __name__ == "__main__":
    main()
