"""Reading what ``saltseg train`` and ``saltseg ensemble`` leave behind: run folders, their folds,
learning-curve logs, snapshots and out-of-fold probabilities; and the table of past runs.

A run folder holds ``config.yaml`` and ``fold{k}/`` folders (see :mod:`saltseg.training.train`); an
ensemble folder holds ``summary.json`` with a ``members`` list and ``oof.npz``. Everything here only
reads files (JSON, YAML, CSV); torch is imported only to read snapshot metadata and OOF files.
"""

from __future__ import annotations

import csv
import json
import math
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from saltseg.artifacts import (
    EnsembleDir,
    EnsembleMember,
    EnsembleSummary,
    FoldDir,
    FoldState,
    FoldSummary,
    OutOfFold,
    RefitSummary,
    RunDir,
    RunSummary,
    names,
    read_data_dir,
    read_oof,
    read_record,
)
from saltseg.artifacts.records import Record
from saltseg.errors import DataError, SaltsegError
from saltseg.training.study import StudyReport

CURVE_KEYS = ("train_loss", "val_loss", "val_score", "lr")
_CSV_KEYS = {"train_loss_epoch": "train_loss", "val_loss": "val_loss", "val_score": "val_score"}
DEFAULT_THRESHOLD = 0.5


# --------------------------------------------------------------------------------------------- helpers


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"not readable JSON ({exc})", path) from None


def _try_json(path: Path) -> Any:
    """Like :func:`_read_json` but a corrupt file (a run being written) reads as missing."""
    try:
        return _read_json(path)
    except DataError:
        return None


def _try_record(cls: type[Record], path: Path) -> Any:
    """The record at ``path``, None when it is missing or unreadable (a run being written)."""
    try:
        return read_record(cls, path) if path.exists() else None
    except DataError:
        return None


def _num(text: str | None) -> float | None:
    if text is None or text == "":
        return None
    try:
        v = float(text)
    except ValueError:
        return None
    return None if math.isnan(v) else v


is_run_dir = RunDir.looks_like
is_ensemble_dir = EnsembleDir.looks_like


# ------------------------------------------------------------------------------------------ learning logs


@dataclass
class StageCurve:
    """Per-epoch values of one stage (NaN where a metric was not logged); epochs count from 0."""

    index: int
    name: str
    loss: str = ""
    epochs: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))
    values: dict[str, np.ndarray] = field(default_factory=dict)
    lr_name: str | None = None


def read_stage_log(path: Path) -> tuple[np.ndarray, dict[str, np.ndarray], str | None]:
    """Epochs and per-epoch values of a Lightning ``metrics.csv`` (sparse rows grouped by epoch).

    The learning-rate monitor writes rows without an epoch at the first step of each epoch; they are
    given to the first epoch whose rows have a step at or after theirs.
    """
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"unreadable metrics log ({exc})", path) from None
    lr_col = next((c for c in header if c.startswith("lr-")), None)
    per_epoch: dict[int, dict[str, float]] = {}
    last_step: dict[int, float] = {}
    lr_rows: list[tuple[float, float]] = []
    for r in rows:
        step, ep = _num(r.get("step")), _num(r.get("epoch"))
        lr = _num(r.get(lr_col)) if lr_col else None
        if ep is None:
            if lr is not None:
                lr_rows.append((step if step is not None else -1.0, lr))
            continue
        d = per_epoch.setdefault(int(ep), {})
        for col, key in _CSV_KEYS.items():
            v = _num(r.get(col))
            if v is not None:
                d[key] = v
        if lr is not None:
            d["lr"] = lr
        if step is not None:
            last_step[int(ep)] = max(last_step.get(int(ep), -1.0), step)
    epochs = sorted(per_epoch)
    for step, lr in lr_rows:
        later = [e for e in epochs if last_step.get(e, -1.0) >= step]
        if later:
            per_epoch[later[0]]["lr"] = lr
    values = {k: np.array([per_epoch[e].get(k, np.nan) for e in epochs], dtype=float) for k in CURVE_KEYS}
    return np.array(epochs, dtype=int), values, (lr_col[3:] if lr_col else None)


# -------------------------------------------------------------------------------------------- run folders


@dataclass
class Snapshot:
    """A kept checkpoint marked on the learning curves."""

    name: str
    stage: int
    epoch: int
    val_score: float | None
    kind: str  # "snapshot" or "best"


@dataclass
class FoldInfo:
    """One ``fold{k}`` folder."""

    index: int
    path: Path
    summary: FoldSummary | None
    state: FoldState | None

    @property
    def status(self) -> str:
        if self.state is not None:
            return self.state.status
        if self.summary is not None:
            return self.summary.status
        return "running" if FoldDir(self.path).logs_dir.exists() else "pending"

    @property
    def minutes(self) -> float | None:
        if self.summary is not None:
            return self.summary.minutes
        if self.state is not None:
            return round(self.state.seconds / 60, 2)
        return None

    @property
    def best_val(self) -> float | None:
        if self.summary is not None and self.summary.best_val_score is not None:
            return self.summary.best_val_score
        return None if self.state is None else self.state.best_score

    @property
    def oof_score(self) -> float | None:
        return None if self.summary is None else self.summary.oof_score

    def curves(self, stage_names: list[tuple[str, str]]) -> list[StageCurve]:
        """Learning curves of each stage that has a ``metrics.csv``."""
        out = []
        logs = FoldDir(self.path).logs_dir
        for log in sorted(logs.glob(f"stage*/**/{names.METRICS_FILE}")):
            m = re.match(r"stage(\d+)", log.relative_to(logs).parts[0])
            if not m:
                continue
            si = int(m.group(1))
            epochs, values, lr_name = read_stage_log(log)
            name, loss = stage_names[si] if si < len(stage_names) else (f"stage {si}", "")
            out.append(StageCurve(si, name, loss, epochs, values, lr_name))
        out.sort(key=lambda c: c.index)
        return out

    def snapshots(self) -> list[Snapshot]:
        """Snapshots and the best checkpoint, with the stage/epoch/score stored in their metadata."""
        fold = FoldDir(self.path)
        files = [(p, "snapshot") for p in fold.snapshots()]
        if fold.best_file.exists():
            files.append((fold.best_file, "best"))
        if not files:
            return []
        from saltseg.checkpoints import read_metadata

        out = []
        for p, kind in files:
            try:
                _, info = read_metadata(p)
            except SaltsegError:
                continue
            if info.get("stage") is None or info.get("epoch") is None:
                continue
            score = info.get("val_score")
            out.append(
                Snapshot(
                    p.stem,
                    int(info["stage"]),
                    int(info["epoch"]),
                    None if score is None else float(score),
                    kind,
                )
            )
        return out


@dataclass
class RunInfo:
    """A training run or an ensemble folder, read lazily."""

    path: Path
    kind: str  # "run" or "ensemble"
    name: str
    config: dict
    summary: RunSummary | EnsembleSummary | None
    folds: list[FoldInfo]
    data_dir: Path | None
    threshold: float
    threshold_source: str
    postprocess: dict | None

    @property
    def members(self) -> list[EnsembleMember]:
        """An ensemble's member runs (none for a run)."""
        return self.summary.members if isinstance(self.summary, EnsembleSummary) else []

    @property
    def stage_names(self) -> list[tuple[str, str]]:
        """(name, loss name) of each configured stage."""
        out = []
        for i, s in enumerate(self.config.get("stages") or []):
            s = s if isinstance(s, dict) else {}
            loss = s.get("loss")
            loss_name = loss.get("name", "") if isinstance(loss, dict) else str(loss or "")
            out.append((str(s.get("name", f"stage {i}")), loss_name))
        return out

    @property
    def n_folds(self) -> int | None:
        data = self.config.get("data")
        return int(data["folds"]) if isinstance(data, dict) and data.get("folds") else None

    @property
    def oof_score(self) -> float | None:
        v = None if self.summary is None else self.summary.oof_score
        if v is None and self.folds and all(f.oof_score is not None for f in self.folds):
            n = [f.summary.n_val if f.summary else 0 for f in self.folds]
            if sum(n):
                v = sum(f.oof_score * k for f, k in zip(self.folds, n, strict=True)) / sum(n)  # type: ignore[operator]
        return None if v is None else float(v)

    @property
    def best_val(self) -> float | None:
        vals = [f.best_val for f in self.folds if f.best_val is not None]
        return max(vals) if vals else None

    @property
    def minutes(self) -> float | None:
        vals = [f.minutes for f in self.folds if f.minutes is not None]
        return round(sum(vals), 2) if vals else None

    @property
    def status(self) -> str:
        if self.kind == "ensemble":
            return "done" if EnsembleDir(self.path).oof_file.exists() else "running"
        return combine_status([f.status for f in self.folds])

    def oof_files(self) -> list[Path]:
        if self.kind == "ensemble":
            oof = EnsembleDir(self.path).oof_file
            return [oof] if oof.exists() else []
        return [FoldDir(f.path).oof_file for f in self.folds if FoldDir(f.path).oof_file.exists()]

    def load_oof(self) -> OutOfFold | None:
        """Out-of-fold predictions (with the fold of each tile) of every finished fold, concatenated;
        None if there are none or they hold no masks (a classifier run)."""
        files = self.oof_files()
        if not files:
            return None
        oof = read_oof(files, [FoldDir(p.parent).index for p in files])  # -1 for an ensemble's
        return oof if oof.probs is not None else None


def combine_status(statuses: list[str]) -> str:
    """A run's status from its folds': running > failed > stopped > done."""
    if not statuses:
        return "not started"
    if "running" in statuses or "pending" in statuses:
        return "running"
    for s in ("failed", "stopped"):
        if s in statuses:
            return s
    return "done" if all(s == "done" for s in statuses) else statuses[0]


def _resolve_member(run: str, base: Path) -> Path | None:
    for cand in (
        Path(run),
        base / run,
        base.parent / run,
        base / Path(run).name,
        base.parent / Path(run).name,
    ):
        if cand.is_dir():
            return cand
    return None


def _data_dir(path: Path, members: list[EnsembleMember]) -> Path | None:
    found = read_data_dir(path)
    for m in members:
        if found is not None:
            break
        run = _resolve_member(m.run, path)
        found = read_data_dir(run) if run is not None else None
    return found


def open_run(path: str | Path) -> RunInfo:
    """Read a run or ensemble folder; a clear :class:`DataError` for anything else."""
    path = Path(path)
    if not path.exists():
        raise DataError("folder not found", path)
    if not path.is_dir():
        raise DataError("not a folder (expected a run folder made by saltseg train)", path)
    summary: RunSummary | EnsembleSummary | None
    if is_run_dir(path):
        run = RunDir(path)
        kind = "run"
        try:
            config = yaml.safe_load(run.config_file.read_text()) or {}
        except (yaml.YAMLError, OSError, UnicodeDecodeError) as exc:
            raise DataError(f"unreadable config ({type(exc).__name__})", run.config_file) from None
        if not isinstance(config, dict):
            raise DataError("config is not a mapping", run.config_file)
        summary = _try_record(RunSummary, run.summary_file)
        folds = [
            FoldInfo(
                f.index,
                f.path,
                _try_record(FoldSummary, f.summary_file),
                _try_record(FoldState, f.state_file),
            )
            for f in run.folds()
        ]
        name = str(config.get("name") or path.name)
    elif is_ensemble_dir(path):
        kind, config, folds = "ensemble", {}, []
        try:
            summary = EnsembleDir(path).read_spec()
        except SaltsegError as exc:
            raise DataError(exc.message, exc.path) from None
        name = path.name
    else:
        raise DataError(
            "not a run folder: expected config.yaml and fold*/ (saltseg train) "
            "or ensemble.json (saltseg ensemble)",
            path,
        )
    post = _try_json(path / names.POSTPROCESS_FILE)
    threshold, source = DEFAULT_THRESHOLD, "default"
    if isinstance(post, dict) and isinstance(post.get("threshold"), int | float):
        threshold, source = float(post["threshold"]), names.POSTPROCESS_FILE
    members = summary.members if isinstance(summary, EnsembleSummary) else []
    return RunInfo(
        path=path,
        kind=kind,
        name=name,
        config=config,
        summary=summary,
        folds=folds,
        data_dir=_data_dir(path, members),
        threshold=threshold,
        threshold_source=source,
        postprocess=post if isinstance(post, dict) else None,
    )


def member_runs(ens: RunInfo) -> list[tuple[EnsembleMember, RunInfo | None]]:
    """Each member of an ensemble with its run folder, when it can be found and read."""
    out = []
    for m in ens.members:
        run_dir = _resolve_member(m.run, ens.path)
        info = None
        if run_dir is not None:
            try:
                info = open_run(run_dir)
            except SaltsegError:
                info = None
        out.append((m, info))
    return out


# --------------------------------------------------------------------------------------- table of runs


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{int(seconds)} s ago"
    if seconds < 7200:
        return f"{int(seconds // 60)} min ago"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.0f} days ago"


def _last_update(path: Path) -> float:
    times = []
    state, summary = names.STATE_FILE, names.SUMMARY_FILE
    for pat in (
        summary,
        f"fold*/{state}",
        f"fold*/{summary}",
        f"fold*/{names.LOGS_DIR}/stage*/{names.METRICS_FILE}",
    ):
        times += [p.stat().st_mtime for p in path.glob(pat)]
    return max(times) if times else path.stat().st_mtime


def _run_row(info: RunInfo, root: Path) -> dict:
    rel = str(info.path.relative_to(root)) if info.path.is_relative_to(root) else str(info.path)
    updated = _last_update(info.path)
    row: dict[str, Any] = {
        "run": rel or ".",
        "path": str(info.path.resolve()),
        "name": info.name,
        "kind": info.kind,
        "status": info.status,
        "oof_score": info.oof_score,
        "best_val": info.best_val,
        "minutes": info.minutes,
        "updated": updated,
        "note": "",
    }
    if info.kind == "ensemble":
        row.update(folds=f"{len(info.members)} members", epochs=None)
    else:
        done = [f.index for f in info.folds]
        k = info.n_folds
        row["folds"] = ",".join(map(str, done)) + (f" of {k}" if k else "") if done else "-"
        ep = [f.summary.epochs for f in info.folds if f.summary is not None]
        total = sum(
            int((s or {}).get("epochs", 0)) for s in info.config.get("stages") or [] if isinstance(s, dict)
        )
        row["epochs"] = max(ep) if ep else (total or None)
        reasons = [f.summary.reason for f in info.folds if f.summary is not None and f.summary.reason]
        if reasons:
            row["note"] = reasons[0]
        if row["status"] == "running":
            row["note"] = f"last update {_ago(time.time() - updated)}"
    return row


def _refit_row(path: Path, root: Path) -> dict:
    """The row of a refit folder: trained on every tile, so no validation score."""
    info = FoldInfo(
        -1,
        path,
        _try_record(FoldSummary, path / names.SUMMARY_FILE),
        _try_record(FoldState, path / names.STATE_FILE),
    )
    refit = _try_record(RefitSummary, path / names.REFIT_FILE)
    updated = _last_update(path)
    status = info.status
    note = f"refit of {refit.source}" if refit is not None else ""
    if status == "running":
        note = f"last update {_ago(time.time() - updated)}"
    return {
        "run": str(path.relative_to(root)) if path.is_relative_to(root) else str(path),
        "path": str(path.resolve()),
        "name": (info.summary.name if info.summary else "") or path.name,
        "kind": "refit",
        "status": status,
        "folds": "all tiles",
        "epochs": info.summary.epochs if info.summary else None,
        "minutes": info.minutes,
        "oof_score": None,
        "best_val": None,
        "updated": updated,
        "note": note,
    }


def _queue_rows(queue_file: Path) -> list[dict]:
    rows = _try_json(queue_file)
    if not isinstance(rows, list):
        return []
    out = []
    for r in rows:
        if not isinstance(r, dict):
            continue
        run = str(r.get("run") or "")
        cands = [queue_file.parent / Path(run).name] if run else []
        if run and Path(run).is_absolute():
            cands.insert(0, Path(run))
        out.append({**r, "_queue": str(queue_file), "_candidates": [str(c.resolve()) for c in cands]})
    return out


def list_runs(root: str | Path = "runs") -> list[dict]:
    """One row per run or ensemble folder under ``root`` (searched recursively) and per experiment of
    a ``queue.json`` whose run folder is not among them (a failed experiment); a queue's failure is
    also written onto its run's row."""
    root = Path(root)
    if not root.exists():
        raise DataError("folder not found", root)
    if not root.is_dir():
        raise DataError("not a folder", root)
    rows: list[dict] = []
    seen: dict[str, dict] = {}
    candidates = {p.parent for p in root.rglob(names.SUMMARY_FILE)} | {
        p.parent for p in root.rglob(names.CONFIG_FILE)
    }
    candidates |= {p.parent for p in root.rglob(names.STATE_FILE)}
    for d in sorted(candidates):
        if not (is_run_dir(d) or is_ensemble_dir(d)):
            if FoldDir.is_refit(d):
                rows.append(_refit_row(d, root))
            continue
        try:
            info = open_run(d)
        except SaltsegError as exc:
            rows.append({"run": str(d), "name": d.name, "status": "unreadable", "note": str(exc)})
            continue
        row = _run_row(info, root)
        trial = _try_json(d / names.TRIAL_FILE)
        if isinstance(trial, dict) and trial.get("state") in ("pruned", "failed"):
            row["status"] = str(trial["state"])
            row["note"] = f"search trial {trial.get('number')}: {trial['state']}"
        rows.append(row)
        seen[row["path"]] = row
    for q in sorted(root.rglob(names.QUEUE_FILE)):
        for r in _queue_rows(q):
            match = next((seen[c] for c in r["_candidates"] if c in seen), None)
            if match is not None:
                if r.get("status") == "failed":
                    match["status"] = "failed"
                    match["note"] = str(r.get("error") or match.get("note") or "")
                continue
            qdir = q.parent.relative_to(root) if q.parent.is_relative_to(root) else q.parent
            rows.append(
                {
                    "run": str(qdir / (r.get("name") or Path(str(r.get("run", "?"))).name)),
                    "name": r.get("name") or Path(str(r.get("config", "?"))).stem,
                    "kind": "queue",
                    "status": r.get("status") or "?",
                    "folds": "-",
                    "epochs": None,
                    "minutes": r.get("minutes"),
                    "oof_score": r.get("oof_score"),
                    "best_val": r.get("best_val"),
                    "updated": q.stat().st_mtime,
                    "note": str(r.get("error") or r.get("note") or ""),
                }
            )
    return rows


def sort_rows(rows: list[dict], key: str) -> list[dict]:
    """Rows by ``time`` (newest first), ``score`` (best OOF, then best validation, first) or ``name``."""
    if key == "name":
        return sorted(rows, key=lambda r: (str(r.get("name")), str(r.get("run"))))
    if key == "score":

        def score(r: dict) -> float:
            v = r.get("oof_score") if r.get("oof_score") is not None else r.get("best_val")
            return -float(v) if v is not None else math.inf

        return sorted(rows, key=score)
    return sorted(rows, key=lambda r: -float(r.get("updated") or 0))


_STATUS_STYLE = {"done": "green", "failed": "bold red", "stopped": "yellow", "running": "cyan"}


def format_runs(rows: list[dict], title: str = "runs"):
    """The rows of :func:`list_runs` as a rich table."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("run", overflow="fold")
    table.add_column("config")
    table.add_column("folds")
    table.add_column("epochs", justify="right")
    table.add_column("minutes", justify="right")
    table.add_column("best val", justify="right")
    table.add_column("oof", justify="right")
    table.add_column("status")
    table.add_column("note", overflow="fold", max_width=48)

    def num(v: object, nd: int) -> str:
        return "-" if v is None else f"{float(v):.{nd}f}"  # type: ignore[arg-type]

    for r in rows:
        status = str(r.get("status", "?"))
        style = _STATUS_STYLE.get(status, "")
        table.add_row(
            str(r.get("run", "")),
            str(r.get("name", "")),
            str(r.get("folds", "-")),
            "-" if r.get("epochs") is None else str(r["epochs"]),
            num(r.get("minutes"), 1),
            num(r.get("best_val"), 4),
            num(r.get("oof_score"), 4),
            f"[{style}]{status}[/]" if style else status,
            str(r.get("note") or ""),
        )
    return table


def format_study(report: StudyReport, top: int = 10):
    """A ``saltseg search`` study as rich tables: the best trials, then the parameters' importances."""
    from rich.console import Group
    from rich.table import Table

    keys = sorted({k for t in report.trials for k in t.params})
    states: dict[str, int] = {}
    for t in report.trials:
        states[t.state] = states.get(t.state, 0) + 1
    counts = ", ".join(f"{n} {s.lower()}" for s, n in sorted(states.items()))
    table = Table(title=f"study {report.out} ({counts or 'no trials'})", title_justify="left")
    for col in ("trial", "state", "score", "last val", "epochs", "minutes", *keys, "run"):
        table.add_column(col, justify="right" if col not in ("state", "run") else "left", overflow="fold")

    def num(v: object, nd: int) -> str:
        return "-" if v is None else f"{float(v):.{nd}f}"  # type: ignore[arg-type]

    for t in report.ranked()[:top]:
        table.add_row(
            f"{t.number} (baseline)" if t.baseline else str(t.number),
            t.state.lower(),
            num(t.value, 4),
            num(t.last_score, 4),
            "-" if t.epochs is None else str(t.epochs),
            num(t.minutes, 1),
            *(t.param_text(k) for k in keys),
            t.run or "-",
        )
    parts: list[Any] = [table]
    if report.importances:
        imp = Table(title="parameter importances (Optuna's evaluator, complete trials)", title_justify="left")
        imp.add_column("parameter")
        imp.add_column("importance", justify="right")
        for k, v in sorted(report.importances.items(), key=lambda kv: -kv[1]):
            imp.add_row(k, f"{v:.3f}")
        parts.append(imp)
    return Group(*parts)
