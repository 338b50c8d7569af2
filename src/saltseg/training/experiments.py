"""A queue of experiments: each config trains in its own run folder; a failure is recorded and the
queue goes on; a summary table closes it."""

from __future__ import annotations

import time
import traceback
from pathlib import Path

from rich.console import Console
from rich.table import Table

from saltseg.artifacts import names
from saltseg.errors import SaltsegError
from saltseg.utils.io import write_json


def run_queue(
    configs: list[Path],
    data_dir: Path,
    out: Path,
    folds: list[int] | None,
    overrides: list[str] | None = None,
) -> list[dict]:
    """Train every config in turn into ``out/<config name>``; returns one result row per config.

    A config whose name is already taken in this queue trains into ``out/<name>_<file stem>``.
    """
    from saltseg.training.config import load_config
    from saltseg.training.train import train_run

    results: list[dict] = []
    used: set[str] = set()
    console = Console(stderr=True)
    for path in configs:
        started = time.time()
        row: dict = {"config": str(path), "name": path.stem, "run": str(out / path.stem)}
        try:
            cfg = load_config(path, overrides)
            # Two configs of the same ``name`` (a copy with one change) each get their own folder.
            folder = cfg.name
            if folder in used:
                folder = f"{cfg.name}_{path.stem}"
            k = 2
            while folder in used:
                folder, k = f"{cfg.name}_{path.stem}_{k}", k + 1
            used.add(folder)
            row["name"] = folder
            row["run"] = str(out / folder)
            summary = train_run(cfg, data_dir, out / folder, folds_to_run=folds, progress=False)
            assert summary is not None  # a queue runs in one process
            row.update(
                status="done",
                oof_score=summary.oof_score,
                best_val=max((f.best_val_score or 0) for f in summary.folds),
            )
            stops = [f.reason for f in summary.folds if f.reason]
            if stops:
                row["note"] = stops[0]
        except SaltsegError as exc:
            row.update(status="failed", error=str(exc))
        except Exception as exc:
            row.update(
                status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc(limit=5)
            )
        row["minutes"] = round((time.time() - started) / 60, 2)
        results.append(row)
        console.print(f"[bold]{row['name']}[/]: {row['status']} {row.get('error', '')}")
        write_json(out / names.QUEUE_FILE, results)
    return results


def format_queue(results: list[dict]) -> None:
    """Print the queue's summary table (rich)."""
    table = Table(title="experiments")
    for col in ("name", "status", "oof score", "best val", "minutes", "note"):
        table.add_column(col)
    for r in results:
        oof = f"{r['oof_score']:.4f}" if r.get("oof_score") is not None else "-"
        best = f"{r['best_val']:.4f}" if r.get("best_val") is not None else "-"
        table.add_row(
            r["name"], r["status"], oof, best, str(r["minutes"]), r.get("error") or r.get("note") or ""
        )
    Console().print(table)
