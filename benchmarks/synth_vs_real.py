"""Compare synthetic tiles with real TGS tiles: a picture, throughput and grey-level/emptiness statistics.

Usage: ``python benchmarks/synth_vs_real.py [--real DIR] [--n 2000] [--seed 0]``. Saves
``benchmarks/figures/synth_vs_real.png`` (synthetic tiles on the left, real tiles on the right, salt
contours in red). Works without the real data (then it shows and measures synthetic tiles only).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from PIL import Image

from saltseg.data.synth import generate_tiles

HERE = Path(__file__).resolve().parent
DEFAULT_REAL = HERE.parent.parent / "shared" / "data" / "tgs-salt"


def load_real(root: Path, n: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Real train images (first channel) and masks (value > 0); all of them, or ``n`` at random."""
    ids = sorted(p.stem for p in (root / "train" / "images").glob("*.png"))
    if n is not None:
        ids = [ids[i] for i in np.random.default_rng(seed).choice(len(ids), n, replace=False)]
    images = np.stack([np.asarray(Image.open(root / "train" / "images" / f"{i}.png"))[..., 0] for i in ids])
    masks = np.stack([np.asarray(Image.open(root / "train" / "masks" / f"{i}.png")) > 0 for i in ids])
    return images, masks


def summary(name: str, images: np.ndarray, masks: np.ndarray) -> None:
    """Print grey-level and coverage statistics of a set of tiles."""
    n = len(images)
    flat = images.reshape(n, -1)
    cov = masks.reshape(n, -1).mean(axis=1)
    hist = np.histogram(cov[cov > 0], bins=[0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0001])[0] / max(n, 1)
    print(
        f"{name:>9}: n={n}  grey mean={images.mean():6.1f} std={images.std():5.1f}  "
        f"per-tile std median={np.median(flat.std(axis=1)):5.1f}  empty={np.mean(cov == 0):.3f}  "
        f"flat={np.mean(flat.std(axis=1) == 0):.3f}  mean coverage={cov.mean():.3f}"
    )
    print(f"{'':>9}  coverage bins (0,.01,.1,.3,.5,.7,.9,1] share: {np.round(hist, 3).tolist()}")


def draw(ax: plt.Axes, image: np.ndarray, mask: np.ndarray, title: str) -> None:
    """One tile in grey with its salt contour."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=255)
    if mask.any() and not mask.all():
        ax.contour(mask.astype(float), levels=[0.5], colors="red", linewidths=0.9)
    ax.set_title(title, fontsize=8)
    ax.axis("off")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--n", type=int, default=4000, help="synthetic tiles for the throughput test")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=HERE / "figures" / "synth_vs_real.png")
    args = parser.parse_args()

    generate_tiles(64, seed=args.seed + 1)  # warm-up (caches, imports)
    t0 = time.perf_counter()
    synth = generate_tiles(args.n, seed=args.seed)
    dt = time.perf_counter() - t0
    print(f"throughput: {args.n / dt:.0f} tiles/s ({args.n} tiles in {dt:.2f} s, one process)")
    summary("synthetic", synth.images, synth.masks)

    have_real = (args.real / "train" / "images").is_dir()
    if have_real:
        real_images, real_masks = load_real(args.real)
        summary("real", real_images, real_masks)
    else:
        print(f"real data not found at {args.real}: showing synthetic tiles only")

    rows, per_side = 4, 4
    rng = np.random.default_rng(args.seed)
    pick_s = rng.choice(args.n, rows * per_side, replace=False)
    pick_r = rng.choice(len(real_images), rows * per_side, replace=False) if have_real else []
    fig, axes = plt.subplots(
        rows,
        2 * per_side + 1,
        figsize=(2 * 2 * per_side + 0.4, 2.15 * rows),
        gridspec_kw={"width_ratios": [1] * per_side + [0.15] + [1] * per_side},
    )
    for r in range(rows):
        axes[r, per_side].axis("off")
        for c in range(per_side):
            k = pick_s[r * per_side + c]
            draw(axes[r, c], synth.images[k], synth.masks[k], f"synth cov={synth.masks[k].mean():.2f}")
            if have_real:
                k = pick_r[r * per_side + c]
                draw(
                    axes[r, per_side + 1 + c],
                    real_images[k],
                    real_masks[k],
                    f"real cov={real_masks[k].mean():.2f}",
                )
            else:
                axes[r, per_side + 1 + c].axis("off")
    fig.suptitle("synthetic (left) vs real TGS tiles (right); salt contour in red")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
