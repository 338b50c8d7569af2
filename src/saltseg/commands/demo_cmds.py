"""``saltseg demo`` (what ``make run`` runs): the whole pipeline on built-in synthetic data in minutes."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path

from saltseg.commands.registry import command
from saltseg.errors import SaltsegError
from saltseg.utils.io import atomic_write, claim_output_dir

DEMO_CONFIG = "demo"
"""The shipped config the demo trains (``saltseg config show demo``); ``--quick`` uses ``demo_quick``."""


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
        from saltseg.pipeline import run_pipeline
        from saltseg.training.config import load_config

        if args.n < 50 or args.n_heldout < 1:
            raise SaltsegError("the demo needs --n of at least 50 and --n-heldout of at least 1")
        started = time.time()
        out: Path = args.out
        claim_output_dir(out, "demo", fresh=args.fresh)  # never a folder saltseg demo did not make
        train_dir, held_dir, pipe_dir = out / "data_train", out / "data_heldout", out / "pipeline"
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
        if pipe_dir.exists():
            shutil.rmtree(pipe_dir)
        # the pipeline on fold 0: train, tune on its out-of-fold tiles, report, predict the held-out tiles
        cfg = load_config(DEMO_CONFIG + ("_quick" if args.quick else ""))
        result = run_pipeline(cfg, train_dir, pipe_dir, test_images=held_dir, folds=[0], test_split="train")
        r1 = result.rounds[1]
        fold = r1.folds[0]
        shown = "none" if fold.best_val_score is None else f"{fold.best_val_score:.4f}"
        print(f"[2/6] trained fold 0 in {fold.minutes} min: validation score {shown}")
        pp = r1.postprocess
        print(
            f"[3/6] tuned post-processing on out-of-fold tiles: {r1.tuning[0].oof_score:.4f} -> "
            f"{r1.oof_score_tuned:.4f} (threshold {pp['threshold']:.2f}, min area {pp['min_area']}); "
            f"report: {pipe_dir / 'round1' / 'report.html'}"
        )
        assert result.submission is not None
        sub, pred_dir = out / "submission.csv", pipe_dir / "test_pred"
        with atomic_write(sub) as f:  # the demo's own copy, beside its pictures
            f.write(Path(result.submission.csv).read_text())
        rate = result.submission.tiles / max(result.submission.seconds or 0.0, 1e-9)
        print(f"[4/6] predicted {result.submission.tiles} held-out tiles ({rate:.1f} tiles/s), ", end="")
        print(f"submission: {sub}")
        lines = evaluate_predictions(pred_dir, held_dir)
        ids = [line.split(",")[0] for line in sub.read_text().splitlines()[1:9]]
        picture = show_tiles(held_dir, ids, out / "overlay.png", pred=pred_dir)
        print(f"[5/6] overlay picture: {picture}")
        section = _survey_section(pipe_dir / "round1", pp["threshold"], out / "survey.png")
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
