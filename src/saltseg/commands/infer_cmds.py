"""Inference subcommands: ``predict``, ``tune``, ``ensemble``, ``pseudo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from saltseg.artifacts import names
from saltseg.commands.registry import add_backend_argument, comma_floats, command
from saltseg.errors import SaltsegError


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


@command(
    "predict",
    "Predict tiles with runs, folds, snapshots or checkpoint files (flip TTA on), "
    "writing probabilities, masks and optionally a Kaggle submission.",
    "saltseg predict runs/r1 --images ../shared/data/tgs-salt --out runs/r1/pred --csv submission.csv",
)
def _predict(p: argparse.ArgumentParser):
    p.add_argument(
        "models",
        nargs="+",
        type=Path,
        metavar="MODEL",
        help="run folder, fold folder, ensemble folder or .safetensors file",
    )
    p.add_argument("--images", type=Path, required=True, help="dataset or folder of tiles")
    p.add_argument("--out", type=Path, required=True, help="prediction folder")
    p.add_argument("--csv", type=Path, help="also write the Kaggle submission here")
    p.add_argument(
        "--split",
        choices=["test", "train", "all"],
        default="test",
        help="which tiles of a Kaggle-layout dataset (default: test)",
    )
    p.add_argument("--no-tta", action="store_true", help="no horizontal-flip TTA")
    p.add_argument("--batch-size", type=_positive_int, default=64)
    p.add_argument("--postprocess", type=Path, help="post-processing JSON (default: the run's tuned one)")
    p.add_argument("--threshold", type=float, help="override the pixel threshold")
    p.add_argument("--no-probs", action="store_true", help="do not save probabilities")
    p.add_argument(
        "--compile", action="store_true", help="torch.compile the models (slow start; the torch backend)"
    )
    p.add_argument(
        "--best-member",
        action="store_true",
        help="one model per fold: the snapshot that scored best on its validation tiles (faster)",
    )
    p.add_argument("--device", default="auto", help="torch device: auto (cuda if available), cpu, cuda:0...")
    add_backend_argument(p)
    p.add_argument(
        "--fuse",
        action="store_true",
        help="run an ensemble's members as one graph (onnxruntime / openvino: one call per batch)",
    )

    def run(args: argparse.Namespace) -> int:
        from saltseg.inference.postprocess import load_postprocess, validate_postprocess
        from saltseg.inference.predict import default_postprocess, predict_folder
        from saltseg.utils.device import resolve_device

        pp = load_postprocess(args.postprocess) if args.postprocess else default_postprocess(args.models)
        if args.threshold is not None:
            pp = validate_postprocess({**pp.model_dump(), "threshold": args.threshold}, "--threshold")
        meta = predict_folder(
            args.models,
            args.images,
            args.out,
            csv_path=args.csv,
            split=args.split,
            hflip=not args.no_tta,
            batch_size=args.batch_size,
            postprocess=pp,
            save_probs=not args.no_probs,
            compile=args.compile,
            best_only=args.best_member,
            device=resolve_device(args.device),
            backend=args.backend,
            precision=args.precision,
            fuse=args.fuse,
        )
        print(
            f"predicted {meta.n_tiles} tiles with {len(meta.models)} model(s) on {meta.backend} "
            f"in {meta.seconds} s "
            f"({meta.tiles_per_second} tiles/s); {meta.n_empty} empty masks -> {args.out}"
        )
        if meta.backend_check:
            print(f"backend: {meta.backend_check}")
        if args.csv:
            print(f"submission: {args.csv}")
        return 0

    return run


def _ensemble_weights(text: str) -> str | list[float]:
    if text in ("equal", "cv", "optimize"):
        return text
    try:
        return comma_floats(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"equal, cv, optimize or comma-separated numbers, got {text!r}"
        ) from None


@command(
    "tune",
    "Tune post-processing (threshold, flat tiles, min area, empty gate, CRF) on out-of-fold "
    "probabilities; prints the score after each step and saves postprocess.json.",
    "saltseg tune runs/r1 --crf",
)
def _tune(p: argparse.ArgumentParser):
    p.add_argument("run_dir", type=Path, help="run or ensemble folder")
    p.add_argument("--crf", action="store_true", help="also try a dense CRF (slow)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.inference.tune import tune_run

        _, log = tune_run(args.run_dir, try_crf=args.crf)
        prev = None
        for step, score in log:
            gain = "" if prev is None else f" ({score - prev:+.4f})"
            print(f"{step:<40} oof score {score:.4f}{gain}")
            prev = score
        print(f"saved {args.run_dir / names.POSTPROCESS_FILE}")
        return 0

    return run


@command(
    "ensemble",
    "Average runs, weighted equally, by CV score, or optimised on out-of-fold predictions.",
    "saltseg ensemble runs/a runs/b --out runs/ens --weights optimize",
)
def _ensemble(p: argparse.ArgumentParser):
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--weights",
        type=_ensemble_weights,
        default="cv",
        help="equal, cv (by out-of-fold score; the default), optimize, or one weight per run: 0.3,0.7",
    )

    def run(args: argparse.Namespace) -> int:
        from saltseg.artifacts.folders import EnsembleDir, RunDir
        from saltseg.errors import DataError
        from saltseg.inference.ensemble import build_ensemble

        out = args.out
        if out.exists() and not out.is_dir():
            raise DataError("the output exists and is a file, not a folder; choose a new --out", out)
        if (
            out.is_dir()
            and any(out.iterdir())
            and not EnsembleDir.looks_like(out)
            and not RunDir.looks_like(out)
        ):
            raise DataError(
                "the folder exists and is not an ensemble folder; it is left untouched: choose a new or "
                "empty --out",
                out,
            )
        s = build_ensemble(args.runs, args.out, args.weights)
        for m in s.members:
            cv = "classifier (empty gate only)" if m.cv_score is None else f"cv {m.cv_score:.4f}"
            print(f"{m.run}: weight {m.weight:.3f}, {cv}")
        print(f"ensemble oof score: {s.oof_score:.4f} over {s.n_oof} tiles -> {args.out}")
        return 0

    return run


@command(
    "pseudo",
    "Select confident predictions on unlabelled tiles as pseudo-labels for the next round.",
    "saltseg pseudo runs/ens/pred_test --images ../shared/data/tgs-salt --out data/pseudo1",
)
def _pseudo(p: argparse.ArgumentParser):
    p.add_argument("pred_dir", type=Path, help="prediction folder (saltseg predict) on unlabelled tiles")
    p.add_argument("--images", type=Path, required=True, help="the dataset the predictions were made on")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--confidence", type=_fraction, default=0.97, help="minimum fraction of pixels with p<0.2 or p>0.8"
    )
    p.add_argument("--no-balance", action="store_true", help="do not balance coverage classes")
    p.add_argument(
        "--exclude",
        type=Path,
        help="a labelled dataset whose ids are never pseudo-labelled (besides those of --images)",
    )
    cal = p.add_mutually_exclusive_group()
    cal.add_argument(
        "--calibrate",
        type=Path,
        metavar="RUN",
        help="calibrate the probabilities first with a temperature fitted on RUN's out-of-fold predictions "
        "(needed for Lovasz-trained models, whose probabilities stay near 0.3-0.7)",
    )
    cal.add_argument(
        "--temperature", type=float, help="calibrate with this temperature (p -> sigmoid(logit/T))"
    )

    def run(args: argparse.Namespace) -> int:
        from saltseg.inference.pseudo import write_pseudo_dataset

        temperature = 1.0
        if args.temperature is not None:
            if not args.temperature > 0:
                raise SaltsegError(f"--temperature must be positive, got {args.temperature}")
            temperature = args.temperature
        elif args.calibrate is not None:
            from saltseg.inference.calibrate import fit_run_temperature

            temperature, n_tiles = fit_run_temperature(args.calibrate)
            print(f"temperature {temperature:.3f} fitted on {n_tiles} out-of-fold tiles of {args.calibrate}")
        info = write_pseudo_dataset(
            args.pred_dir,
            args.images,
            args.out,
            args.confidence,
            not args.no_balance,
            exclude=args.exclude,
            temperature=temperature,
        )
        print(f"{info.passed} of {info.candidates} tiles pass the confidence rule; kept {info.selected}")
        print(
            "passed per coverage class: "
            + ", ".join(f"{k} {v}" for k, v in info.passed_per_coverage_class.items())
        )
        print("kept per coverage class: " + ", ".join(f"{k} {v}" for k, v in info.per_coverage_class.items()))
        print(f"use it with: data.pseudo_labels={args.out}")
        return 0

    return run
