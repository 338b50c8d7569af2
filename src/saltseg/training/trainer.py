"""Lightning pieces of one stage of one fold: its Trainer (checkpoint, logs, callbacks, time cap) and
its data module."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, RichProgressBar
from lightning.pytorch.loggers import TensorBoardLogger

from saltseg.artifacts import (
    FoldDir,
)
from saltseg.augment import build_transforms
from saltseg.training.callbacks import (
    AppendingCSVLogger,
    AtomicCheckpointIO,
    EpochSeed,
)
from saltseg.training.config import ExperimentConfig
from saltseg.training.data import LabelledTiles, SaltDataModule
from saltseg.training.runtime import resolve_num_workers, resolve_precision


def build_datamodule(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    pseudo: tuple[np.ndarray, np.ndarray] | None = None,
) -> SaltDataModule:
    """The fold's data module: ``cfg``'s batch size and augmentations, workers for the device."""
    return SaltDataModule(
        tiles,
        train_idx,
        val_idx,
        cfg.train.batch_size,
        build_transforms(cfg.augment),
        resolve_num_workers(cfg),
        pseudo,
        cfg.data.small_salt_weight,
    )


def build_trainer(
    cfg: ExperimentConfig,
    stage_dir: Path,
    fold_dir: Path,
    stage_index: int,
    epochs: int,
    callbacks: list[L.Callback],
    max_seconds: float | None,
    progress: bool,
    validate: bool = True,
) -> L.Trainer:
    """The stage's Trainer; ``validate=False`` (a refit) runs no validation loop and checkpoints after
    each training epoch instead of after each validation."""
    ckpt = ModelCheckpoint(
        dirpath=stage_dir,
        filename="last",
        save_last=False,
        save_top_k=1,
        every_n_epochs=1,
        save_on_train_epoch_end=not validate,
        enable_version_counter=False,
    )
    # the LR monitor last: it logs each epoch's LR after a budget re-fit may have rebuilt the schedule
    cbs = [ckpt, EpochSeed(cfg.seed, stage_index), *callbacks, LearningRateMonitor(logging_interval="epoch")]
    if progress:
        cbs.append(RichProgressBar(leave=True))
    loggers = [
        AppendingCSVLogger(FoldDir(fold_dir).logs_dir, name=f"stage{stage_index}"),
        TensorBoardLogger(FoldDir(fold_dir).logs_dir, name="tensorboard", version=f"stage{stage_index}"),
    ]
    kwargs: dict[str, object] = {} if validate else {"limit_val_batches": 0}
    if max_seconds is not None:
        kwargs["max_time"] = {"seconds": max(int(max_seconds), 1)}
    log_every = cfg.train.log_every_n_steps
    if cfg.train.limit_train_batches is not None:
        kwargs["limit_train_batches"] = cfg.train.limit_train_batches
        if isinstance(cfg.train.limit_train_batches, int):
            log_every = max(min(log_every, cfg.train.limit_train_batches), 1)
    return L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.train.accelerator,
        devices=cfg.train.devices,
        strategy=cfg.train.strategy,
        num_nodes=cfg.train.num_nodes,
        precision=resolve_precision(cfg),
        callbacks=cbs,
        logger=loggers,
        num_sanity_val_steps=0,
        enable_progress_bar=progress,
        log_every_n_steps=log_every,
        plugins=[AtomicCheckpointIO()],
        enable_model_summary=False,
        default_root_dir=fold_dir,
        **kwargs,
    )
