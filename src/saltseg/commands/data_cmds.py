"""Data subcommands: ``data check``, ``data folds``, ``synth``, ``evaluate``, ``submission check``."""

from __future__ import annotations

import argparse
from pathlib import Path

from saltseg.commands.registry import comma_floats, command


@command("data", "Check a dataset or make its K-fold split.", "saltseg data check ../shared/data/tgs-salt")
def _data(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    c = sub.add_parser(
        "check",
        help="validate every file and print a summary",
        description="Validate every image, mask and CSV; exit 0 only when there is no problem."
        "\n\nexample:\n  saltseg data check ../shared/data/tgs-salt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("data_dir", type=Path)
    f = sub.add_parser(
        "folds",
        help="write a stratified K-fold split as CSV",
        description="Stratified K-fold split of the labelled tiles.\n\nexample:\n"
        "  saltseg data folds DATA --k 5 --by depth --out folds.csv",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    f.add_argument("data_dir", type=Path)
    f.add_argument("--k", type=int, default=5)
    f.add_argument("--by", choices=["depth", "coverage", "depth_coverage", "random"], default="depth")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--out", type=Path, required=True)

    def run(args: argparse.Namespace) -> int:
        if args.data_command == "check":
            from saltseg.data.validate import check_dataset, format_report

            rep = check_dataset(args.data_dir)
            for line in format_report(rep):
                print(line)
            return 0 if rep.ok else 1
        from saltseg.data.folds import save_folds
        from saltseg.training.data import folds_for
        from saltseg.utils.io import check_output_file, refuse_foreign_file

        # never over the dataset's own files, nor over a file that is not an earlier folds CSV
        check_output_file(args.out, datasets=[args.data_dir])
        refuse_foreign_file(args.out, _is_folds_csv, "a folds CSV (id,fold)")
        folds = folds_for(args.data_dir, k=args.k, by=args.by, seed=args.seed)
        save_folds(args.out, folds)
        counts = [sum(1 for v in folds.values() if v == i) for i in range(args.k)]
        print(f"wrote {args.out}: {len(folds)} tiles in {args.k} folds {counts}")
        return 0

    return run


def _is_folds_csv(path: Path) -> bool:
    """True when ``path`` starts with the ``id,fold`` header of ``data folds`` (an earlier output)."""
    try:
        with open(path, encoding="utf-8") as f:
            return f.readline().strip().replace(" ", "") == "id,fold"
    except (OSError, UnicodeDecodeError):
        return False


@command(
    "synth",
    "Generate a synthetic seismic dataset in the Kaggle layout.",
    "saltseg synth data/synth --n 2000 --n-test 500 --seed 0",
)
def _synth(p: argparse.ArgumentParser):
    p.add_argument("out_dir", type=Path)
    p.add_argument("--n", type=int, default=2000, help="labelled tiles")
    p.add_argument("--n-test", type=int, default=0, help="unlabelled test tiles")
    p.add_argument("--seed", type=int, default=0)

    def run(args: argparse.Namespace) -> int:
        from saltseg.data.synth import write_kaggle_layout

        out = write_kaggle_layout(args.out_dir, n_train=args.n, n_test=args.n_test, seed=args.seed)
        print(f"wrote {args.n} labelled and {args.n_test} test tiles to {out}")
        return 0

    return run


@command(
    "evaluate",
    "Score a submission CSV or a prediction folder against the masks of a dataset.",
    "saltseg evaluate submission.csv ../shared/data/tgs-salt",
)
def _evaluate(p: argparse.ArgumentParser):
    p.add_argument("predictions", type=Path, help="a Kaggle-format CSV or a prediction folder")
    p.add_argument("data_dir", type=Path)
    p.add_argument("--partial", action="store_true", help="score only the labelled tiles present in the file")

    def run(args: argparse.Namespace) -> int:
        from saltseg.evaluation import evaluate_predictions

        for line in evaluate_predictions(args.predictions, args.data_dir, partial=args.partial):
            print(line)
        return 0

    return run


def _weights(text: str) -> list[float]:
    try:
        return comma_floats(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of numbers: {text!r}") from None


@command(
    "blend",
    "Blend Kaggle submission CSVs: a pixel-wise weighted vote (the competition's RLE blend).",
    "saltseg blend a.csv b.csv c.csv --weights 0.5,0.3,0.2 --out blend.csv",
)
def _blend(p: argparse.ArgumentParser):
    p.add_argument("files", nargs="+", type=Path, metavar="SUB.csv", help="two or more submissions")
    p.add_argument("--out", type=Path, required=True, help="the blended submission")
    p.add_argument("--weights", type=_weights, help="one weight per file, comma-separated (default: equal)")

    def run(args: argparse.Namespace) -> int:
        from saltseg.submission import blend_submissions

        n, empty = blend_submissions(args.files, args.out, args.weights)
        print(f"blended {len(args.files)} submissions: {n} tiles, {empty} empty masks -> {args.out}")
        return 0

    return run


@command(
    "submission",
    "Check a Kaggle submission CSV.",
    "saltseg submission check submission.csv ../shared/data/tgs-salt",
)
def _submission(p: argparse.ArgumentParser):
    sub = p.add_subparsers(dest="sub_command", metavar="ACTION", required=True)
    c = sub.add_parser(
        "check",
        help="ids match the test tiles and every RLE is valid",
        description="Check that the ids are the test tiles' (the sample submission's when there is one), "
        "with no duplicate, and that every RLE is valid; exit 0 only when there is no problem."
        "\n\nexample:\n  saltseg submission check submission.csv ../shared/data/tgs-salt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("file", type=Path)
    c.add_argument("data_dir", type=Path)

    def run(args: argparse.Namespace) -> int:
        from saltseg.submission import check_submission

        problems = check_submission(args.file, args.data_dir)
        for line in problems:
            print(line)
        if not problems:
            print(f"{args.file}: valid submission")
        return 1 if problems else 0

    return run
