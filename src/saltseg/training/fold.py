"""One fold, top to bottom: its split and model, then each stage through a Lightning Trainer (resumable,
time-capped, guarded), then what it leaves (:mod:`saltseg.training.finish`)."""

from __future__ import annotations

import signal
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import lightning as L
import numpy as np
import torch

from saltseg.artifacts import (
    FoldDir,
    FoldState,
    FoldSummary,
    init_checkpoint,
)
from saltseg.checkpoints import init_from_checkpoint, load_model, save_weights
from saltseg.data.folds import make_folds
from saltseg.errors import SaltsegError
from saltseg.models import create_model
from saltseg.training.callbacks import (
    SnapshotKeeper,
    StageBudgetRefit,
    TrainingGuard,
    ValidationSchedule,
)
from saltseg.training.config import ExperimentConfig, StageConfig
from saltseg.training.data import LabelledTiles, load_pseudo_labels
from saltseg.training.finish import average_swa, finish_fold
from saltseg.training.module import SaltModule
from saltseg.training.runtime import is_launcher_rank_zero, quiet_lightning
from saltseg.training.trainer import build_datamodule, build_trainer


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during training: the last checkpoint is kept, ``--resume`` continues from it."""


class TrainingFailed(SaltsegError):
    """A run stopped by a guard (NaN loss) or an error; the message says why."""


def _fold_split(ids: list[str], folds: dict[str, int], fold: int | None) -> tuple[np.ndarray, np.ndarray]:
    if fold is None:  # a refit: every tile trains, none is held out
        return np.arange(len(ids)), np.arange(0)
    f = np.array([folds[i] for i in ids])
    val = np.flatnonzero(f == fold)
    if val.size == 0:
        raise SaltsegError(f"fold {fold} has no tiles (folds are 0..{f.max()})")
    return np.flatnonzero(f != fold), val


def fold_assignment(cfg: ExperimentConfig, tiles: LabelledTiles) -> dict[str, int]:
    """The config's K-fold split of ``tiles``."""
    depths = tiles.source.depth_array(tiles.ids) if tiles.source.depths else None
    need_cov = cfg.data.stratify in ("coverage", "depth_coverage")
    return make_folds(
        tiles.ids,
        k=cfg.data.folds,
        by=cfg.data.stratify,
        depths=depths,
        coverages=tiles.coverages() if need_cov else None,
        seed=cfg.data.fold_seed,
    )


def prepare_fold_split(
    cfg: ExperimentConfig, tiles: LabelledTiles, fold: int | None, folds: dict[str, int] | None = None
) -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """The fold's model (standardised with its training tiles' statistics) and train/validation indices;
    ``fold=None`` trains on every tile and validates on none (a refit)."""
    if fold is None:
        folds = {}
    train_idx, val_idx = _fold_split(
        tiles.ids, folds if folds is not None else fold_assignment(cfg, tiles), fold
    )
    model_cfg = cfg.model
    if model_cfg.normalize == "standardize":
        mean, std = tiles.pixel_stats(train_idx)
        model_cfg = model_cfg.model_copy(update={"mean": mean, "std": std})
    model = create_model(model_cfg)
    if cfg.train.init_from:
        init_from_checkpoint(model, init_checkpoint(cfg.train.init_from, -1 if fold is None else fold))
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, train_idx, val_idx


def _check_checkpoint(ckpt: Path, stage: StageConfig) -> None:
    """A stage checkpoint ``--resume`` continues from must load (safely) and hold the LR-schedule state
    this version builds for the stage; a damaged or foreign one is one error."""
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, bad pickle opcode, foreign file: all mean "damaged"
        raise SaltsegError(
            f"damaged checkpoint ({type(exc).__name__}); delete it and resume again to restart this "
            "stage from its first epoch (the completed stages are kept)",
            ckpt,
        ) from None
    if stage.schedule.name == "plateau":
        return
    from saltseg.training.schedules import build_scheduler

    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=stage.optimizer.lr)
    want = set(build_scheduler(stage.schedule, probe, 100, 10).state_dict())
    got = [set(s) for s in saved.get("lr_schedulers") or [] if isinstance(s, dict)]
    if got and got[0] != want:
        raise SaltsegError(
            "its LR-schedule state is of another kind than this version of saltseg builds for the stage "
            "(a checkpoint of an earlier version); finish the run with that version, or delete the file "
            "and resume again to restart this stage from its first epoch",
            ckpt,
        )


def _recorder(fd: FoldDir, state: FoldState, stage_index: int) -> Callable[[int], None]:
    """Records a stage's re-fitted epochs in the fold's state, where a resume reads them."""

    def record(epochs: int) -> None:
        assert state.epochs is not None
        state.epochs[stage_index] = epochs
        fd.write_state(state)

    return record


def train_fold(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    folds: dict[str, int],
    fold: int | None,
    fold_dir: Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: list[L.Callback] | None = None,
) -> FoldSummary | None:
    """Train one fold through all stages; returns its summary (also written to ``summary.json``), or
    None in the extra processes of a multi-process run.

    ``fold=None`` trains on every tile with no validation (a refit, see :mod:`saltseg.training.refit`):
    no best epoch is chosen, the model is the end of the last stage (or its snapshots / SWA average).
    ``callbacks`` are added to every stage's Trainer (for example the search's pruning reporter).
    """
    fd = FoldDir(fold_dir)
    state = fd.read_state() if resume else FoldState()
    if resume and state.status in ("done", "stopped"):
        done = fd.read_summary()
        if done is not None:
            return done
    if resume and state.status == "failed":
        raise TrainingFailed(
            f"fold {fold} failed earlier ({state.reason}); it cannot be resumed: train it again into a new "
            "--out (for example with a lower learning rate)"
        )
    quiet_lightning()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model, train_idx, val_idx = prepare_fold_split(cfg, tiles, fold, folds)
    pseudo = load_pseudo_labels(cfg.data.pseudo_labels) if cfg.data.pseudo_labels else None
    dm = build_datamodule(cfg, tiles, train_idx, val_idx, pseudo)
    n_train = len(train_idx)  # labelled tiles: every stage trains on them
    if n_train // cfg.train.batch_size == 0:  # the last partial batch is dropped: no step would run
        raise SaltsegError(
            f"train.batch_size {cfg.train.batch_size} is larger than the {n_train} training tiles of "
            f"{'the refit' if fold is None else f'fold {fold}'}: no training step would run; give a smaller "
            "train.batch_size"
        )
    validate = val_idx.size > 0
    # train.val_every > 1: only some epochs validate (a refit has no validation to thin out)
    sparse = cfg.train.validates if validate and cfg.train.val_every > 1 else None
    if not validate and (cfg.train.early_stopping or any(s.schedule.name == "plateau" for s in cfg.stages)):
        raise SaltsegError(
            "training with no validation tiles (a refit) cannot use train.early_stopping or a 'plateau' "
            "schedule: both follow the validation score; give a fixed schedule"
        )
    fold_dir.mkdir(parents=True, exist_ok=True)  # after the checks: `saltseg runs` shows no half-made fold
    if cfg.train.rescale_epochs:
        cfg = cfg.model_copy(deep=True)  # the stages' re-fits below change this fold's epochs only
        if state.epochs is None and is_launcher_rank_zero():
            # a resume trains the epochs this start chose
            state.epochs = [s.epochs for s in cfg.stages]
            fd.write_state(state)
    module = SaltModule(model, cfg)
    started = time.time()
    budget = cfg.train.max_minutes * 60 if cfg.train.max_minutes else None
    guard_reason, failed = None, False
    is_zero = True
    for si, stage in enumerate(cfg.stages):
        stage_dir = fd.stage_dir(si)
        if si in state.completed:
            model.load_state_dict(load_model(fd.stage_end(si)).state_dict())
            continue
        module.set_stage(si)
        dm.use_pseudo = pseudo is not None and (
            cfg.data.pseudo_mode == "mix" or si < cfg.data.pretrain_stages
        )
        keeper = SnapshotKeeper(
            fold_dir,
            si,
            stage,
            state.best,
            swa_k=cfg.swa.k
            if cfg.swa.enabled and cfg.swa.members == "last" and si == len(cfg.stages) - 1
            else 0,
            validated=validate,
            validates=sparse,
        )
        guard = TrainingGuard(cfg.train.stall_epochs, state.best)
        extra: list[L.Callback] = [keeper, guard, *(callbacks or [])]
        if cfg.train.early_stopping:
            extra.append(
                L.pytorch.callbacks.EarlyStopping(
                    "val_score",
                    mode="max",
                    patience=cfg.train.early_stopping,
                    check_on_train_epoch_end=False if sparse else None,
                )
            )
        max_seconds = None
        if budget is not None:
            spent = state.seconds + time.time() - started
            max_seconds = (
                max(budget - spent, 1) * stage.epochs / max(sum(s.epochs for s in cfg.stages[si:]), 1)
            )
        if max_seconds is not None and cfg.train.rescale_epochs and state.epochs is not None:
            extra.append(StageBudgetRefit(stage, max_seconds, _recorder(fd, state, si), sparse))
        if sparse is not None:  # after the re-fit, which may move the stage's end
            extra.append(ValidationSchedule(stage, sparse))
        trainer = build_trainer(
            cfg, stage_dir, fold_dir, si, stage.epochs, extra, max_seconds, progress, validate=validate
        )
        ckpt = fd.stage_checkpoint(si)
        if resume and ckpt.exists():
            _check_checkpoint(ckpt, stage)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*exists and is not empty.*")
            try:
                trainer.fit(
                    module,
                    datamodule=dm,
                    ckpt_path=ckpt if resume and ckpt.exists() else None,
                    weights_only=True,
                )
            except SystemExit:
                if not trainer.interrupted:
                    raise
                # Lightning met Ctrl-C, shut down and calls sys.exit(1): say so, exit 130, resumable
                signal.signal(signal.SIGINT, signal.default_int_handler)
                raise TrainingInterrupted(f"continue with --resume (run folder {fold_dir.parent})") from None
        if keeper.best_score > state.best:
            state.best_score = keeper.best_score
        is_zero = trainer.is_global_zero
        if not is_zero:
            if guard.reason:  # every rank took the same decision (see TrainingGuard)
                break
            continue
        save_weights(model, fd.stage_end(si), stage=si, epochs=trainer.current_epoch)
        state.completed.append(si)
        state.seconds += time.time() - started
        started = time.time()
        fd.write_state(state)
        if guard.reason:
            guard_reason, failed = guard.reason, guard.failed
            break
    if not is_zero:
        return None
    members = fd.snapshots()
    if not members and fd.best_file.exists():
        members = [fd.best_file]
    if not members:
        members = [fd.stage_end(state.completed[-1])]
    if cfg.swa.enabled and not failed:
        swa_path = average_swa(cfg, fd, members, dm)
        if swa_path is not None:
            members = [swa_path] if cfg.swa.replace else [*members, swa_path]
    index = -1 if fold is None else fold  # a refit's summary says fold -1
    total_epochs = sum(s.epochs for s in cfg.stages)  # after the stages' budget re-fits
    summary = finish_fold(cfg, tiles, val_idx, index, fd, members, state, total_epochs, guard_reason, failed)
    state.status, state.reason = summary.status, guard_reason
    fd.write_state(state)
    if failed:
        raise TrainingFailed(f"fold {fold} stopped: {guard_reason}")
    return summary
