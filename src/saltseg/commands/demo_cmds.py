"""``saltseg demo`` (what ``make run`` runs): the whole pipeline on built-in synthetic data in minutes."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from saltseg.cli import command
from saltseg.errors import SaltsegError
from saltseg.utils.io import claim_output_dir

DEMO_CONFIG = "demo"
"""The shipped config the demo trains (``saltseg config show demo``); ``--quick`` uses ``demo_quick``."""


def demo_config(quick: bool = False) -> dict:
    """The demo's experiment config as a raw dict (a fresh copy), or its ``--quick`` variant."""
    import yaml

    from saltseg.training.config import resolve_config_path

    return yaml.safe_load(resolve_config_path(DEMO_CONFIG + ("_quick" if quick else "")).read_text())


@command(
    "demo",
    "Run the whole pipeline on synthetic seismic data: generate, train, tune, predict "
    "held-out tiles, score, write a submission and an overlay picture (a few minutes on a CPU).",
    "saltseg demo --out runs/demo",
)
def _demo(p: argparse.ArgumentParser):
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--n", type=int, default=1500, help="synthetic labelled tiles to train on")
    p.add_argument("--n-heldout", type=int, default=300, help="synthetic held-out labelled tiles to score")
    p.add_argument(
        "--fresh", action="store_true", help="empty --out first (only a folder an earlier demo made)"
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="a tiny model trained 1+1 epochs: checks the pipeline in seconds (scores are poor)",
    )

    def run(args: argparse.Namespace) -> int:
        from saltseg.data.synth import write_kaggle_layout
        from saltseg.data.tiles import open_dataset
        from saltseg.diagnostics.show import show_tiles
        from saltseg.evaluation import evaluate_predictions
        from saltseg.inference.predict import predict_folder
        from saltseg.inference.tune import tune_run
        from saltseg.training.config import parse_config
        from saltseg.training.train import train_run

        if args.n < 50 or args.n_heldout < 1:
            raise SaltsegError("the demo needs --n of at least 50 and --n-heldout of at least 1")
        started = time.time()
        out: Path = args.out
        claim_output_dir(out, "demo", fresh=args.fresh)  # never a folder saltseg demo did not make
        train_dir, held_dir, run_dir = out / "data_train", out / "data_heldout", out / "run"
        if not train_dir.exists():
            write_kaggle_layout(train_dir, n_train=args.n, n_test=0, seed=0)
        if not held_dir.exists():
            write_kaggle_layout(held_dir, n_train=args.n_heldout, n_test=0, seed=1)
        n_train, n_held = (len(open_dataset(d).labelled_ids) for d in (train_dir, held_dir))
        reused = (n_train, n_held) != (args.n, args.n_heldout)
        note = " (made by an earlier demo; --fresh makes new ones)" if reused else ""
        print(
            f"[1/6] synthetic data: {n_train} training tiles in {train_dir}, "
            f"{n_held} held-out tiles in {held_dir}{note}"
        )
        cfg = parse_config(demo_config(args.quick), "demo config")
        if run_dir.exists():
            shutil.rmtree(run_dir)
        summary = train_run(cfg, train_dir, run_dir, folds_to_run=[0], progress=True)
        assert summary is not None  # the demo runs in one process
        fold = summary.folds[0]
        best = fold.best_val_score
        shown = "none" if best is None else f"{best:.4f}"
        print(f"[2/6] trained fold 0 in {fold.minutes} min: validation score {shown}")
        pp, log = tune_run(run_dir)
        print(
            f"[3/6] tuned post-processing on out-of-fold tiles: {log[0][1]:.4f} -> {log[-1][1]:.4f} "
            f"(threshold {pp.threshold:.2f}, min area {pp.min_area})"
        )
        sub = out / "submission.csv"
        meta = predict_folder([run_dir], held_dir, out / "pred_heldout", csv_path=sub, split="train")
        print(
            f"[4/6] predicted {meta.n_tiles} held-out tiles ({meta.tiles_per_second} tiles/s), "
            f"submission: {sub}"
        )
        lines = evaluate_predictions(out / "pred_heldout", held_dir)
        ids = [line.split(",")[0] for line in sub.read_text().splitlines()[1:9]]
        picture = show_tiles(held_dir, ids, out / "overlay.png", pred=out / "pred_heldout")
        print(f"[5/6] overlay picture: {picture}")
        section = _survey_section(run_dir, pp.threshold, out / "survey.png")
        print(f"[6/6] {section}")
        print(f"held-out {lines[-1]}   (total {(time.time() - started) / 60:.1f} min)")
        return 0

    return run


def _survey_section(run_dir: Path, threshold: float, out: Path) -> str:
    """Segment one inline of a small synthetic 3-D survey (diapirs in folded layers) with the demo's model
    and draw it beside its true salt; returns the line to print."""
    import numpy as np

    from saltseg.diagnostics.figures import png_bytes, show_figure
    from saltseg.inference.sliding import ensemble_of, load_ensemble, predict_large
    from saltseg.utils.io import atomic_path
    from saltseg.volume.segy import to_uint8
    from saltseg.volume.synth3d import SyntheticSurvey

    amps, salt = SyntheticSurvey((3, 202, 202), seed=2).block(1, 2)
    section = to_uint8(amps[0], float(np.percentile(np.abs(amps), 99))).T  # depth down the rows
    truth = salt[0].T
    models, weights = load_ensemble([run_dir])
    pred = predict_large(ensemble_of(models, weights), section) > threshold
    union = np.logical_or(pred, truth).sum()
    iou = float(np.logical_and(pred, truth).sum() / union) if union else 1.0
    fig = show_figure(["survey inline"], [section], [truth], [pred], [f"prediction, IoU {iou:.2f}"])
    with atomic_path(out) as tmp:
        tmp.write_bytes(png_bytes(fig, dpi=110))
    return (
        f"one inline of a synthetic 3-D survey (202 x 202, `saltseg volume synth`) segmented by the same "
        f"model: salt IoU {iou:.2f} -> {out}"
    )
