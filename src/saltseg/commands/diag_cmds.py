"""Diagnostics subcommands: ``report``, ``show``, ``runs``."""

from __future__ import annotations

import argparse
from pathlib import Path

from saltseg.cli import command


@command(
    "report",
    "Write one self-contained HTML report (curves, score breakdowns, threshold, galleries) of runs.",
    "saltseg report runs/r1 runs/r2 --out report.html",
)
def _report(p: argparse.ArgumentParser):
    p.add_argument("runs", type=Path, nargs="+", metavar="RUN_DIR", help="run or ensemble folders")
    p.add_argument("--out", type=Path, default=Path("report.html"), help="HTML file to write")

    def run(args: argparse.Namespace) -> int:
        import matplotlib

        matplotlib.use("Agg")
        from saltseg.diagnostics.report import write_report

        out = write_report(args.runs, args.out)
        print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
        return 0

    return run


@command(
    "show",
    "Draw image, mask and prediction of chosen tiles into one PNG.",
    "saltseg show ../shared/data/tgs-salt 0005bb9630 000a68e46c --pred preds/r1 --out tiles.png",
)
def _show(p: argparse.ArgumentParser):
    p.add_argument("data_dir", type=Path)
    p.add_argument("ids", nargs="+", metavar="ID", help="tile ids")
    p.add_argument("--pred", type=Path, help="prediction folder (saltseg predict) or submission CSV")
    p.add_argument("--out", type=Path, default=Path("tiles.png"), help="PNG file to write")

    def run(args: argparse.Namespace) -> int:
        import matplotlib

        matplotlib.use("Agg")
        from saltseg.diagnostics.show import show_tiles

        out = show_tiles(args.data_dir, args.ids, args.out, args.pred)
        print(f"wrote {out}")
        return 0

    return run


@command(
    "runs",
    "List past runs, ensembles and queued experiments under a folder, with their scores and status.",
    "saltseg runs runs --sort score",
)
def _runs(p: argparse.ArgumentParser):
    p.add_argument("dir", type=Path, nargs="?", default=Path("runs"), help="folder to search (default: runs)")
    p.add_argument("--sort", choices=["time", "score", "name"], default="time", help="row order")

    def run(args: argparse.Namespace) -> int:
        from rich.console import Console

        from saltseg.diagnostics.runs import format_runs, format_study, list_runs, sort_rows
        from saltseg.training.study import STUDY_FILE, read_study

        rows = sort_rows(list_runs(args.dir), args.sort)
        console = Console()
        if not console.is_terminal:
            console = Console(width=160)
        for db in sorted(args.dir.rglob(STUDY_FILE)):
            console.print(format_study(read_study(db.parent)))
        if not rows:
            console.print(f"no runs under {args.dir}")
            return 0
        console.print(format_runs(rows, title=f"runs under {args.dir}"))
        return 0

    return run
