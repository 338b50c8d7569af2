"""Quality benchmark: a saltseg config vs the plain smp reference recipe, same wall-clock budget, fold 0.

The reference (issue 5): smp ``Unet("resnet34", encoder_weights=None, in_channels=1)``, BCE, Adam 1e-3,
batch 32, reflect-pad 101 -> 128, horizontal flip only, threshold 0.5, no TTA, bf16 + channels_last,
trained in a plain PyTorch loop for the same minutes. Fold 0 of the depth-stratified 5-fold split.

saltseg: the config's epochs are scaled to the budget from a short throughput calibration, then
``saltseg train`` runs fold 0 (keep-best / snapshots, flip TTA) and ``saltseg tune`` tunes the
post-processing on the fold's out-of-fold probabilities.

Usage:
    python benchmarks/quality.py --data ../shared/data/tgs-salt --minutes 30 --config configs/cpu_fast.yaml
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F

from saltseg.data.folds import make_folds
from saltseg.inference.tune import tune_run
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.training.budget import fit_epochs_to_budget
from saltseg.training.config import load_config
from saltseg.training.data import LabelledTiles
from saltseg.training.train import train_run


def fold0_split(tiles: LabelledTiles) -> tuple[np.ndarray, np.ndarray]:
    folds = make_folds(tiles.ids, k=5, by="depth", depths=tiles.source.depth_array(tiles.ids), seed=0)
    f = np.array([folds[i] for i in tiles.ids])
    return np.flatnonzero(f != 0), np.flatnonzero(f == 0)


def run_reference(tiles: LabelledTiles, minutes: float, seed: int = 0) -> dict:
    """The plain smp recipe in an eager loop; evaluates after every epoch (evaluation time not counted)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tr, va = fold0_split(tiles)
    x_tr = torch.from_numpy(tiles.images[tr]).float().div(255)[:, None]
    y_tr = torch.from_numpy(tiles.masks[tr]).float()[:, None]
    x_va = torch.from_numpy(tiles.images[va]).float().div(255)[:, None]
    y_va = tiles.masks[va]
    model = smp.Unet("resnet34", encoder_weights=None, in_channels=1, classes=1).to(
        memory_format=torch.channels_last
    )
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    pad = (13, 14, 13, 14)
    budget, trained, epoch, curve = minutes * 60, 0.0, 0, []
    while trained < budget:
        model.train()
        t0 = time.time()
        order = rng.permutation(len(tr))
        for s in range(0, len(order) - 31, 32):
            idx = order[s : s + 32]
            x, y = x_tr[idx], y_tr[idx]
            flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            x = F.pad(x, pad, mode="reflect").contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)[..., 13:114, 13:114]
            loss = F.binary_cross_entropy_with_logits(logits.float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if trained + time.time() - t0 > budget:
                break
        trained += time.time() - t0
        epoch += 1
        model.eval()
        preds = []
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for s in range(0, len(x_va), 128):
                xb = F.pad(x_va[s : s + 128], pad, mode="reflect").contiguous(
                    memory_format=torch.channels_last
                )
                preds.append((model(xb)[..., 13:114, 13:114].float() > 0)[:, 0].numpy())
        score = float(kaggle_scores(np.concatenate(preds), y_va).mean())
        curve.append({"epoch": epoch, "minutes": round(trained / 60, 2), "score": score})
        print(f"reference epoch {epoch}: {trained / 60:.1f} min, fold-0 score {score:.4f}", flush=True)
    return {
        "recipe": "reference smp Unet resnet34, BCE, Adam 1e-3, flip, thr 0.5, no TTA",
        "epochs": epoch,
        "minutes": round(trained / 60, 2),
        "score_last": curve[-1]["score"],
        "score_best": max(c["score"] for c in curve),
        "curve": curve,
    }


def coverage_scores(run_dir: Path) -> dict:
    """Fold-0 score by coverage class (tuned post-processing) and the share of salt tiles predicted empty."""
    from saltseg.inference.postprocess import apply_postprocess, load_postprocess
    from saltseg.inference.tune import load_oof
    from saltseg.metrics.kaggle import score_breakdown

    oof = load_oof(run_dir)
    pp = load_postprocess(run_dir / "postprocess.json")
    pred = apply_postprocess(oof.probs, pp, oof.images, oof.salt)
    scores = kaggle_scores(pred, oof.truth)
    groups = {g["group"]: round(float(g["score"]), 4) for g in score_breakdown(scores, oof.truth)["coverage"]}
    salt = oof.truth.reshape(len(scores), -1).any(1)
    missed = int((salt & ~pred.reshape(len(scores), -1).any(1)).sum())
    return {
        "score": round(float(scores.mean()), 4),
        "by_coverage": groups,
        "salt_tiles_predicted_empty": f"{missed} of {int(salt.sum())}",
    }


def run_saltseg(cfg_path: Path, data: Path, out: Path, minutes: float, overrides: list[str]) -> dict:
    cfg = load_config(cfg_path, [*overrides, "data.folds=5", "data.stratify=depth", "data.fold_seed=0"])
    tiles = LabelledTiles.load(data)
    tr, va = fold0_split(tiles)
    cfg, fit = fit_epochs_to_budget(cfg, tiles, minutes, len(tr), len(va))
    calib = fit.as_dict()
    print(f"calibration: {calib} -> stage epochs {fit.epochs}", flush=True)
    t0 = time.time()
    summary = train_run(cfg, data, out, folds_to_run=[0], progress=False)
    train_min = (time.time() - t0) / 60
    fold = summary.folds[0].model_dump()
    pp, log = tune_run(out)
    curve = []
    total_epochs = fold["epochs"]  # trained: the stage re-fit may change the calibration's count
    per_epoch = fold["minutes"] / max(total_epochs, 1)
    k = 0
    for si in range(len(cfg.stages)):
        mfile = out / "fold0" / "logs" / f"stage{si}" / "metrics.csv"
        if not mfile.exists():
            continue
        with open(mfile, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("val_score")]
        for r in rows:
            k += 1
            curve.append({"epoch": k, "minutes": round(k * per_epoch, 2), "score": float(r["val_score"])})
    return {
        "recipe": f"saltseg {cfg_path}",
        "overrides": overrides,
        "config": cfg.name,
        "epochs": total_epochs,
        "calibration": calib,
        "minutes": round(train_min, 2),
        "best_val_score": fold["best_val_score"],
        "score_members_thr05": fold["oof_score"],
        "members": fold["members"],
        "score_tuned": log[-1][1],
        "tuning": log,
        "postprocess": pp.model_dump(),
        "curve": curve,
        "breakdown": coverage_scores(out),
    }


def latest_reference(minutes: float) -> tuple[dict, str] | None:
    """The reference result of the newest ``benchmarks/results/quality-*.json`` with this budget."""
    for path in sorted(Path("benchmarks/results").glob("quality-*.json"), reverse=True):
        r = json.loads(path.read_text())
        if r.get("minutes") == minutes and "reference" in r and "reference_from" not in r:
            return r["reference"], path.name
    return None


def plot_curves(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    ref_label = "smp reference (val)"
    if "reference_from" in results:
        ref_label += f", from {results['reference_from']}"
    for key, label in (("saltseg", "saltseg default (val, flip TTA)"), ("reference", ref_label)):
        if key in results and results[key]["curve"]:
            c = results[key]["curve"]
            ax.plot([p["minutes"] for p in c], [p["score"] for p in c], marker="o", ms=3, label=label)
    if "saltseg" in results:
        ax.axhline(
            results["saltseg"]["score_tuned"],
            ls="--",
            c="C0",
            lw=1,
            label=f"saltseg final (members + tuned) {results['saltseg']['score_tuned']:.3f}",
        )
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("fold-0 Kaggle score")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(f"TGS salt fold 0, {results['minutes']} min budget")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def plot_compare(paths: list[Path], out: Path, labels: list[str] | None = None) -> None:
    """The saltseg learning curves of several results JSONs in one figure (recipes side by side)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    for k, path in enumerate(paths):
        r = json.loads(path.read_text())
        s = r["saltseg"]
        c = s["curve"]
        name = labels[k] if labels and k < len(labels) else s["config"]
        label = f"{name} ({s['epochs']} epochs, final {s['score_tuned']:.3f})"
        ax.plot([p["minutes"] for p in c], [p["score"] for p in c], marker="o", ms=2.5, label=label)
    ax.set_xlabel("training minutes (2-core CPU)")
    ax.set_ylabel("fold-0 validation score (flip TTA, threshold 0.5)")
    ax.set_ylim(0.4, 0.85)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("TGS salt fold 0, 30-minute recipes")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/tgs-salt"))
    ap.add_argument("--config", type=Path, default=Path("configs/cpu_fast.yaml"))
    ap.add_argument("--minutes", type=float, default=30)
    ap.add_argument("--out", type=Path, default=Path("runs/bench_quality"))
    ap.add_argument(
        "--skip-reference",
        action="store_true",
        help="do not train the reference; compare with the newest one of this budget in benchmarks/results",
    )
    ap.add_argument("--skip-saltseg", action="store_true")
    ap.add_argument("overrides", nargs="*")
    ap.add_argument("--plot-from", type=Path, help="only redraw the learning-curve plot from a results JSON")
    ap.add_argument("--breakdown", type=Path, help="only print the coverage breakdown of a tuned run folder")
    ap.add_argument("--compare", type=Path, nargs="+", help="only plot these results JSONs' curves together")
    ap.add_argument("--compare-out", type=Path, default=Path("benchmarks/figures/recipes_30min.png"))
    ap.add_argument("--compare-labels", nargs="+", help="legend names of the --compare JSONs, in order")
    args = ap.parse_args()
    if args.compare:
        plot_compare(args.compare, args.compare_out, args.compare_labels)
        return
    if args.breakdown:
        print(json.dumps(coverage_scores(args.breakdown), indent=1))
        return
    if args.plot_from:
        results = json.loads(args.plot_from.read_text())
        earlier = None if "reference" in results else latest_reference(results["minutes"])
        if earlier is not None:
            results["reference"], results["reference_from"] = earlier
        plot_curves(results, Path("benchmarks/figures") / f"learning_curve_{int(results['minutes'])}min.png")
        return
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M")
    results: dict = {
        "date": stamp,
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads",
        "minutes": args.minutes,
        "torch": torch.__version__,
    }
    if not args.skip_saltseg:
        results["saltseg"] = run_saltseg(
            args.config, args.data, args.out / f"saltseg-{stamp}", args.minutes, args.overrides
        )
        print(json.dumps({k: v for k, v in results["saltseg"].items() if k != "curve"}, indent=1), flush=True)
    if not args.skip_reference:
        results["reference"] = run_reference(LabelledTiles.load(args.data), args.minutes)
    else:  # compare with the latest reference trained for the same budget on this machine, if any
        earlier = latest_reference(args.minutes)
        if earlier is not None:
            results["reference"], results["reference_from"] = earlier
    if "saltseg" in results and "reference" in results:
        s, r = results["saltseg"], results["reference"]
        results["difference_vs_last"] = s["score_tuned"] - r["score_last"]
        results["difference_vs_best"] = s["score_tuned"] - r["score_best"]
    out_json = Path("benchmarks/results") / f"quality-{stamp}.json"
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(results, indent=1))
    if not args.overrides and not args.skip_saltseg:  # the plot shows the shipped config, not search runs
        plot_curves(results, Path("benchmarks/figures") / f"learning_curve_{int(args.minutes)}min.png")
    for key in ("saltseg", "reference"):
        if key in results:
            r = results[key]
            score = r.get("score_tuned", r.get("score_last"))
            print(
                f"{key:>9}: score {score:.4f} in {r['minutes']} min, {r['epochs']} epochs "
                f"(best epoch {r.get('best_val_score', r.get('score_best')) or math.nan:.4f})"
            )
    if "difference_vs_last" in results:
        print(
            f"difference: {results['difference_vs_last']:+.4f} vs the reference's last epoch, "
            f"{results['difference_vs_best']:+.4f} vs its best epoch"
        )


if __name__ == "__main__":
    main()
