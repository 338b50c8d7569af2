"""Diagnostics subcommands: ``report``, ``show``, ``runs``."""

from __future__ import annotations

import argparse
from pathlib import Path

from saltseg.commands.registry import command


def _is_saltseg_report(path: Path) -> bool:
    """True when ``path`` is an HTML page of ``saltseg report`` (an earlier output it may replace)."""
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(1 << 20)
    except (OSError, UnicodeDecodeError):
        return False
    return head.startswith("<!DOCTYPE html>") and "by saltseg report</p>" in head


def _is_show_png(path: Path) -> bool:
    """True when ``path`` is a PNG that ``saltseg show`` drew (its ``Software`` text), not a tile."""
    from PIL import Image

    from saltseg.diagnostics.show import SHOW_SOFTWARE

    try:
        with Image.open(path) as img:
            return img.format == "PNG" and img.info.get("Software") == SHOW_SOFTWARE
    except Exception:  # not an image at all
        return False


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
        from saltseg.utils.io import check_output_file, refuse_foreign_file

        check_output_file(args.out, inputs=args.runs, may_replace=_is_saltseg_report)
        refuse_foreign_file(args.out, _is_saltseg_report, "a report saltseg wrote")
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
        from saltseg.utils.io import check_output_file, refuse_foreign_file

        inputs = [args.pred] if args.pred else []
        check_output_file(args.out, inputs=inputs, datasets=[args.data_dir], may_replace=_is_show_png)
        refuse_foreign_file(args.out, _is_show_png, "a picture saltseg show drew")
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
