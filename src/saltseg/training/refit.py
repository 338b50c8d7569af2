"""Refit: one model trained on every labelled tile with the schedule cross-validation chose.

The folds of a run say how many epochs the recipe needs and which post-processing suits it; the refit
trains the run's own config (its budget-fitted epochs, its pseudo-labels) on all tiles, so that one model
sees a quarter more tiles than each fold model (5 folds) and predicts the test tiles in a fifth of the
fold ensemble's time. No tile is held out: a refit has no validation score, no best epoch (its model is
the end of its schedule) and takes the run's tuned post-processing with it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from saltseg.artifacts import (
    FoldDir,
    FoldSummary,
    RefitSummary,
    RunDir,
    names,
    read_data_dir,
    read_record,
    write_data_dir,
)
from saltseg.checkpoints import read_metadata
from saltseg.data.folds import load_folds
from saltseg.errors import SaltsegError
from saltseg.training.budget import recorded_epochs, with_stage_epochs
from saltseg.training.config import ExperimentConfig, load_config
from saltseg.training.data import LabelledTiles
from saltseg.training.runtime import is_launcher_rank_zero
from saltseg.utils.io import atomic_write, remove_stale_temporaries_in

log = logging.getLogger(__name__)


def fold_epochs(run: RunDir, cfg: ExperimentConfig) -> list[list[int]]:
    """The stage epochs each fold of ``run`` was planned to train: those a budget re-fitted it to
    (``state.json``), else the config's."""
    own = [s.epochs for s in cfg.stages]
    return [recorded_epochs(fold, cfg) or own for fold in run.folds()]


def refit_config(
    cfg: ExperimentConfig, n_fold_train: int, n_all: int, epochs: list[list[int]] | None = None
) -> ExperimentConfig:
    """``cfg`` for a refit on ``n_all`` tiles: the same stages, with the epochs of the median fold of
    ``epochs`` (the folds' own, see :func:`fold_epochs`; default the config's); the folds' time cap
    (``train.max_minutes``, fitted to ``n_fold_train`` tiles) grown with the training set, as a cap only
    (no re-fit of the epochs to it)."""
    out = (
        with_stage_epochs(cfg, sorted(epochs, key=sum)[(len(epochs) - 1) // 2])
        if epochs
        else cfg.model_copy(deep=True)
    )
    if out.train.max_minutes is not None:
        out.train.max_minutes = out.train.max_minutes * n_all / max(n_fold_train, 1)
    out.train.rescale_epochs = False  # the folds' epochs, not a re-fit to the cap: the cap is a safety net
    return out


def cv_best_epochs(run: RunDir, cfg: ExperimentConfig) -> list[int]:
    """The epoch (counted from 1 over all stages) at which each trained fold of ``run`` scored best."""
    best = []
    for fold, epochs in zip(run.folds(), fold_epochs(run, cfg), strict=True):
        if fold.best_file.exists():
            starts = [sum(epochs[:i]) for i in range(len(epochs))]
            info = read_metadata(fold.best_file)[1]
            stage = min(int(info.get("stage", 0)), len(starts) - 1)
            best.append(starts[stage] + int(info.get("epoch", 0)) + 1)
    return best


def _claim(out: Path, resume: bool) -> None:
    """A new or empty refit folder, or (``resume``) one this command began."""
    if out.exists() and not out.is_dir():
        raise SaltsegError("the refit folder exists and is a file; choose another --out", out)
    fold = FoldDir(out)  # a refit killed in its first stage has a checkpoint but no state.json yet
    began = any(f.exists() for f in (fold.state_file, out / names.REFIT_FILE, fold.stage_dir(0)))
    if out.is_dir() and any(out.iterdir()) and not (resume and began):
        hint = "it is not a refit folder" if resume else "use --resume to continue it or choose another --out"
        raise SaltsegError(f"the refit folder is not empty; {hint}", out)
    if resume and began:
        remove_stale_temporaries_in(out)  # of files the killed refit was writing


def refit_run(
    run: str | Path,
    out: str | Path,
    data_dir: str | Path | None = None,
    tiles: LabelledTiles | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RefitSummary:
    """Train ``run``'s config on every labelled tile into the fold folder ``out``; returns (and writes to
    ``out/refit.json``) what it did. ``data_dir`` defaults to the run's; its tiles must be the ones the
    run was split over. ``saltseg predict OUT`` then predicts with the refit model and the run's tuned
    post-processing."""
    from saltseg.training.fold import train_fold

    src, out = RunDir(Path(run)), Path(out)
    if not src.config_file.is_file() or not src.folds_file.is_file():
        raise SaltsegError("not a run folder (no config.yaml and folds.csv): train its folds first", src.path)
    summary_file = out / names.REFIT_FILE
    writer = is_launcher_rank_zero()  # the extra processes of a multi-process refit only train
    if resume and summary_file.exists():
        return read_record(RefitSummary, summary_file)
    if writer:
        _claim(out, resume)
    cfg = load_config(src.config_file)
    data_dir = Path(data_dir) if data_dir is not None else read_data_dir(src.path)
    if data_dir is None:
        raise SaltsegError("the run records no data folder (data.json): give --data", src.path)
    if data_dir.is_dir() and out.resolve().is_relative_to(data_dir.resolve()):
        raise SaltsegError(
            f"the refit folder lies inside the dataset folder {data_dir}; saltseg never writes into a "
            "dataset",
            out,
        )
    if tiles is None:
        tiles = LabelledTiles.load(data_dir, cache=cfg.data.cache, skip_missing=cfg.data.skip_missing)
    folds = load_folds(src.folds_file)
    if set(folds) != set(tiles.ids):
        raise SaltsegError(
            f"{data_dir} has other tiles than the run was cross-validated on ({len(tiles.ids)} against "
            f"{len(folds)}; {len(set(folds) ^ set(tiles.ids))} differ): refit on the run's data",
            src.path,
        )
    n_val = sum(1 for k in folds.values() if k == 0)
    refit_cfg = refit_config(cfg, len(folds) - n_val, len(folds), fold_epochs(src, cfg))
    best = cv_best_epochs(src, cfg)
    planned = sum(s.epochs for s in refit_cfg.stages)
    if best and sorted(best)[len(best) // 2] < 0.75 * planned:
        log.warning(
            "the folds scored best at epochs %s of %d: the refit, which keeps its last epoch, may be past "
            "its best; a shorter schedule suits this recipe",
            best,
            planned,
        )
    training = train_fold(refit_cfg, tiles, {}, None, out, resume=resume, progress=progress)
    if training is None or not writer:
        return RefitSummary(source=str(src.path), n_tiles=len(tiles.ids), training=FoldSummary(fold=-1))
    if src.postprocess_file.exists():  # the run's tuned settings go with its refit model
        with atomic_write(out / names.POSTPROCESS_FILE) as f:
            f.write(src.postprocess_file.read_text())
    write_data_dir(out, data_dir)
    run_summary = src.read_summary()
    summary = RefitSummary(
        source=str(src.path),
        n_tiles=len(tiles.ids),
        cv_best_epochs=best,
        cv_oof_score=run_summary.oof_score if run_summary else None,
        training=training,
    )
    summary.write(summary_file)
    return summary
