"""Training runs: open (or reopen, for ``--resume``) the run folder, train every chosen fold, summarise.

Read top to bottom, training is four short files: this one (the run), :mod:`saltseg.training.fold` (one
fold through its stages), :mod:`saltseg.training.trainer` (the Lightning Trainer and data module of a
stage) and :mod:`saltseg.training.finish` (SWA, out-of-fold predictions, the fold summary), with the
device and precision rules in :mod:`saltseg.training.runtime`. The run folder's layout is
:mod:`saltseg.artifacts.names`, written through :class:`~saltseg.artifacts.RunDir` and
:class:`~saltseg.artifacts.FoldDir`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import lightning as L

from saltseg.artifacts import (
    RunDir,
    RunSummary,
    init_checkpoint,
    read_data_dir,
)
from saltseg.checkpoints import init_from_checkpoint
from saltseg.data.folds import load_folds, save_folds
from saltseg.errors import SaltsegError
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.models import create_model
from saltseg.training.config import ExperimentConfig, dump_config
from saltseg.training.data import LabelledTiles, TileDataset
from saltseg.training.fold import (
    TrainingFailed,
    TrainingInterrupted,
    fold_assignment,
    prepare_fold_split,
    train_fold,
)
from saltseg.training.runtime import (
    eval_device,
    is_launcher_rank_zero,
    is_multi_process,
    quiet_lightning,
    resolve_num_workers,
    resolve_precision,
)
from saltseg.training.trainer import build_datamodule
from saltseg.utils.io import atomic_write, remove_stale_temporaries_in

log = logging.getLogger(__name__)


def _differences(a: object, b: object, prefix: str = "") -> list[str]:
    """Dotted keys where two nested dicts / lists / values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{prefix}{k}.")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [
            d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{prefix}{i}.")
        ]
    return [] if a == b else [prefix.rstrip(".")]


def _check_resume_matches(cfg: ExperimentConfig, data_dir: str | Path, out: Path) -> None:
    """``--resume`` must continue the same run: same resolved config, same data folder."""
    from saltseg.training.config import load_config

    old = load_config(RunDir(out).config_file)
    changed = _differences(old.model_dump(mode="json"), cfg.model_dump(mode="json"))
    if changed:
        raise SaltsegError(
            f"--resume with another config than the run's (differs in {', '.join(changed[:5])}); resume "
            "without those overrides, or train into a new --out",
            out,
        )
    recorded = read_data_dir(out)
    if recorded is None:
        return  # an older run without data.json: the tile ids are still compared
    if recorded != Path(data_dir).resolve():
        raise SaltsegError(f"--resume with other data ({data_dir}) than the run's ({recorded})", out)


def prepare_run(
    cfg: ExperimentConfig, data_dir: str | Path, out: Path, resume: bool, tiles: LabelledTiles | None = None
) -> tuple[LabelledTiles, dict[str, int]]:
    """Create (or reopen) a run folder: resolved config, folds and tiles.

    Only the launcher's rank zero writes; the other processes of a multi-process run read the folds
    (or compute the same deterministic split).
    """
    writer = is_launcher_rank_zero()
    run = RunDir(out)
    if writer and not resume and run.config_file.exists():
        raise SaltsegError(
            f"run folder {out} already holds a run; use --resume to continue it or choose another --out"
        )
    if writer and resume and run.config_file.exists():
        _check_resume_matches(cfg, data_dir, out)
        remove_stale_temporaries_in(out)  # of files a killed run was writing
    if writer and out.exists() and not out.is_dir():
        raise SaltsegError("the run folder exists and is a file; choose another --out", out)
    if writer and Path(data_dir).is_dir() and out.resolve().is_relative_to(Path(data_dir).resolve()):
        raise SaltsegError(
            f"the run folder lies inside the dataset folder {data_dir}; saltseg never writes into a dataset",
            out,
        )
    if tiles is None:
        tiles = LabelledTiles.load(data_dir, cache=cfg.data.cache, skip_missing=cfg.data.skip_missing)
    folds_csv = run.folds_file
    if not writer:
        return tiles, load_folds(folds_csv) if folds_csv.exists() else fold_assignment(cfg, tiles)
    out.mkdir(parents=True, exist_ok=True)
    if resume and folds_csv.exists():
        folds = load_folds(folds_csv)
        if set(folds) != set(tiles.ids):
            raise SaltsegError(
                f"--resume with other tiles: the run was split over {len(folds)} tiles, {data_dir} has "
                f"{len(tiles.ids)} ({len(set(folds) ^ set(tiles.ids))} differ); train into a new --out",
                out,
            )
    else:
        folds = fold_assignment(cfg, tiles)
        save_folds(folds_csv, folds)
    with atomic_write(run.config_file) as f:
        f.write(dump_config(cfg))
    run.write_data_dir(data_dir)
    return tiles, folds


def fold_config(cfg: ExperimentConfig, out: Path, fold: int, resume: bool) -> ExperimentConfig:
    """``cfg`` with the stage epochs fold ``fold`` of run ``out`` trains: those its state recorded when
    resumed, else (``train.rescale_epochs``, one process) re-fitted to the budget at the speed the run's
    finished folds measured, else the config's own."""
    from saltseg.training.budget import epochs_for_measured_speed, recorded_epochs, with_stage_epochs

    run = RunDir(out)
    epochs = recorded_epochs(run.fold(fold), cfg) if resume else None
    if epochs is None and cfg.train.rescale_epochs and not is_multi_process(cfg):
        finished = [f for f in run.fold_summaries() if f.fold != fold]
        epochs = epochs_for_measured_speed(cfg, finished)
        if epochs is not None:
            log.info(
                "fold %d: %s epochs (the config's %s re-fitted to %.1f min at the speed folds %s measured)",
                fold,
                "+".join(map(str, epochs)),
                "+".join(str(s.epochs) for s in cfg.stages),
                cfg.train.max_minutes,
                ", ".join(str(f.fold) for f in finished),
            )
    return cfg if epochs is None else with_stage_epochs(cfg, epochs)


def train_run(
    cfg: ExperimentConfig,
    data_dir: str | Path,
    out: str | Path,
    folds_to_run: list[int] | None = None,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
    tiles: LabelledTiles | None = None,
) -> RunSummary | None:
    """Train the chosen folds (default: all) of ``cfg`` on ``data_dir`` into run folder ``out``; returns
    the run's summary (None in the extra processes of a multi-process run).

    ``callbacks``: extra Lightning callbacks given to every stage of every fold. ``tiles``: the tiles of
    ``data_dir`` when the caller has loaded them already (the pipeline), else they are read here.
    """
    out = Path(out)
    todo = list(range(cfg.data.folds)) if folds_to_run is None else folds_to_run
    for k in todo:  # before anything is written: a corrected rerun must not find a half-made run
        if not 0 <= k < cfg.data.folds:
            raise SaltsegError(f"fold {k} does not exist (folds are 0..{cfg.data.folds - 1})")
        if cfg.train.init_from:  # the starting model of every fold exists and matches the config
            init_from_checkpoint(create_model(cfg.model), init_checkpoint(cfg.train.init_from, k))
    tiles, folds = prepare_run(cfg, data_dir, out, resume, tiles)
    for k in todo:
        try:
            fold_dir = RunDir(out).fold(k).path
            fold_cfg = fold_config(cfg, out, k, resume)
            train_fold(
                fold_cfg, tiles, folds, k, fold_dir, resume=resume, progress=progress, callbacks=callbacks
            )
        except TrainingFailed:
            if is_launcher_rank_zero():
                summarize_run(out)  # the run summary lists the failed fold too
            raise
    if not is_launcher_rank_zero():
        return None
    return summarize_run(out)


def summarize_run(out: Path) -> RunSummary:
    """Collect fold summaries and the OOF score over every finished fold into ``RUN/summary.json``."""
    run = RunDir(Path(out))
    summary = RunSummary(run=str(out), folds=run.fold_summaries())
    oof = run.load_oof() if run.oof_files() else None
    if oof is not None and oof.probs is not None:  # a classifier run has no masks to score
        summary.oof_score = float(kaggle_scores(oof.probs > 0.5, oof.truth).mean())
        summary.n_oof = len(oof.ids)
    summary.write(run.summary_file)
    return summary


__all__ = [
    "TileDataset",
    "TrainingFailed",
    "TrainingInterrupted",
    "build_datamodule",
    "eval_device",
    "fold_config",
    "is_launcher_rank_zero",
    "prepare_fold_split",
    "prepare_run",
    "quiet_lightning",
    "resolve_num_workers",
    "resolve_precision",
    "summarize_run",
    "train_fold",
    "train_run",
]
