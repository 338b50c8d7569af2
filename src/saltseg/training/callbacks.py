"""Lightning callbacks: keep-best and per-cycle snapshots as safetensors, SWA epoch weights, guards,
and an atomic checkpoint writer."""

from __future__ import annotations

import csv
import math
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import Logger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from saltseg.artifacts import names
from saltseg.checkpoints import save_weights
from saltseg.training.budget import REFIT_EPOCH, epochs_to_fill
from saltseg.training.config import StageConfig
from saltseg.training.schedules import build_scheduler_at, cycle_of_epoch


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file, then renamed: a kill never leaves half a file.

    Loading uses ``torch.load(weights_only=True)`` (via ``trainer.fit(weights_only=True)``).
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | os.PathLike, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        torch.save(checkpoint, tmp)
        os.replace(tmp, path)


class AppendingCSVLogger(Logger):
    """A stage's metrics in ``SAVE_DIR/NAME/metrics.csv``, one row per logging call with the columns of
    Lightning's CSV logger (sorted metric names, ``step``). A resumed stage continues the rows of the
    killed attempt, where Lightning's ``CSVLogger`` starts the file over; the file is rewritten
    atomically at each save."""

    def __init__(self, save_dir: str | Path, name: str) -> None:
        super().__init__()
        self._name = name
        self._dir = Path(save_dir) / name
        self._file = self._dir / names.METRICS_FILE
        self._rows: list[dict[str, str | float]] = []
        self._keys: set[str] = set()
        if self._file.is_file():
            with self._file.open(newline="") as f:
                for row in csv.DictReader(f):
                    self._rows.append({k: v for k, v in row.items() if k and v not in (None, "")})
            self._keys = {k for row in self._rows for k in row}

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def root_dir(self) -> str:
        return str(self._dir.parent)

    @property
    def log_dir(self) -> str:
        return str(self._dir)

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """The config is the run's ``config.yaml``; nothing to log here."""

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        row: dict[str, str | float] = {
            k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()
        }
        if step is not None:
            row["step"] = step
        self._rows.append(row)
        self._keys.update(row)

    @rank_zero_only
    def save(self) -> None:
        if not self._rows:
            return
        self._dir.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(f".{self._file.name}.tmp")
        with tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=sorted(self._keys))
            writer.writeheader()
            writer.writerows(self._rows)
        os.replace(tmp, self._file)

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()


class EpochSeed(L.Callback):
    """Reseeds the global RNGs (torch and CUDA, NumPy, Python) at the start of every training epoch
    from (seed, stage, epoch, rank).

    Each epoch's shuffle and augmentations then depend only on where it is in the run, not on what ran
    before in the process: a killed and resumed run draws the same batches as an uninterrupted one, and
    DDP ranks draw different augmentations.
    """

    def __init__(self, seed: int, stage_index: int) -> None:
        self.seed, self.stage_index = seed, stage_index

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        s = np.random.SeedSequence([self.seed, self.stage_index, trainer.current_epoch, trainer.global_rank])
        value = int(s.generate_state(1, dtype=np.uint64)[0]) >> 1
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)
        fetcher = getattr(trainer.fit_loop, "_data_fetcher", None)
        if trainer.fit_loop.is_resuming and fetcher is not None:
            # resuming from a checkpoint of a training epoch's end (no validation: a refit), Lightning
            # 2.6 keeps the batch it prefetched before this hook: draw the epoch from the reseeded RNGs
            iter(fetcher)


class SnapshotKeeper(L.Callback):
    """After each validation: save the fold's best model (``best.safetensors``), the best epoch of each
    LR cycle of a snapshot stage (``snapshots/s{stage}_c{cycle}.safetensors``), and the last ``swa_k``
    epoch weights of the stage (``swa/epoch{e}.safetensors``) when SWA over last epochs is on.

    Without validation (``validated=False``, a refit on every tile) there is no best: after each
    training epoch the last epoch of each cycle is the snapshot, and the SWA epochs are kept the same.
    An epoch that ``validates(epoch, epochs)`` (``train.val_every``) leaves unvalidated keeps its SWA
    weights after training."""

    def __init__(
        self,
        fold_dir: Path,
        stage_index: int,
        stage: StageConfig,
        best_score: float,
        swa_k: int = 0,
        validated: bool = True,
        validates: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.fold_dir, self.stage_index, self.stage = fold_dir, stage_index, stage
        self.validates = validates
        self.best_score = best_score
        self.best_epoch: int | None = None
        self.cycle_best: dict[int, float] = {}
        self.swa_k = swa_k
        self.validated = validated

    @property
    def state_key(self) -> str:
        return f"SnapshotKeeper[stage={self.stage_index}]"

    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "cycle_best": {str(k): v for k, v in self.cycle_best.items()},
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = float(state_dict["best_score"])
        self.best_epoch = state_dict.get("best_epoch")
        self.cycle_best = {int(k): float(v) for k, v in state_dict.get("cycle_best", {}).items()}

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_score" not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics["val_score"])
        val_loss = trainer.callback_metrics.get("val_loss")
        if not math.isfinite(score) or (val_loss is not None and not math.isfinite(float(val_loss))):
            return  # a diverged model (NaN/inf) is never kept, whatever its score on empty tiles
        epoch = trainer.current_epoch
        info = {"stage": self.stage_index, "epoch": epoch, "val_score": score}
        model = pl_module.model  # type: ignore[attr-defined]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            if trainer.is_global_zero:
                save_weights(model, self.fold_dir / names.BEST_FILE, **info)
        self._keep(trainer, pl_module, score, info)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        info = {"stage": self.stage_index, "epoch": epoch}
        if self.validated:
            if self.validates is not None and not self.validates(epoch, self.stage.epochs):
                self._keep_swa(trainer, pl_module, info)
            return
        # no validation: the latest epoch of a cycle is its snapshot (its "score" is the epoch index)
        self._keep(trainer, pl_module, float(epoch), info)

    def _keep(self, trainer: L.Trainer, pl_module: L.LightningModule, score: float, info: dict) -> None:
        """The cycle's snapshot when ``score`` is its best so far, and the SWA epoch weights."""
        epoch, model = trainer.current_epoch, pl_module.model  # type: ignore[attr-defined]
        if self.stage.snapshots:
            _, per_epoch = pl_module.stage_steps()  # type: ignore[attr-defined]
            cycle = cycle_of_epoch(self.stage.schedule, epoch, self.stage.epochs, per_epoch)
            if score > self.cycle_best.get(cycle, -math.inf):
                self.cycle_best[cycle] = score
                if trainer.is_global_zero:
                    save_weights(
                        model,
                        self.fold_dir / names.SNAPSHOT_DIR / names.snapshot_name(self.stage_index, cycle),
                        cycle=cycle,
                        **info,
                    )
        self._keep_swa(trainer, pl_module, info)

    def _keep_swa(self, trainer: L.Trainer, pl_module: L.LightningModule, info: dict) -> None:
        """The epoch's weights when it is one of the stage's last ``swa_k``."""
        epoch = trainer.current_epoch
        if self.swa_k and epoch >= self.stage.epochs - self.swa_k and trainer.is_global_zero:
            model = pl_module.model  # type: ignore[attr-defined]
            save_weights(model, self.fold_dir / names.SWA_DIR / f"epoch{epoch:04d}.safetensors", **info)


class TrainingGuard(L.Callback):
    """Stops training, saying why, when the loss turns NaN/inf or the validation score has stalled.

    Under DDP the NaN decision is shared by all ranks (any rank seeing a non-finite loss stops them all),
    and the stall decision uses the rank-averaged ``val_score``, so every rank stops at the same step.
    """

    def __init__(self, stall_epochs: int | None, best_score: float, stalled_for: int = 0) -> None:
        self.stall_epochs = stall_epochs
        self.best = best_score
        self.stalled_for = stalled_for
        self.reason: str | None = None
        self.failed = False

    @property
    def state_key(self) -> str:
        return "TrainingGuard"

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "stalled_for": self.stalled_for}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best = float(state_dict.get("best", self.best))
        self.stalled_for = int(state_dict.get("stalled_for", 0))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        bad = loss is not None and not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if bad:
            value = float(loss) if loss is not None else float("nan")
            self.reason = (
                f"loss became {value} (NaN/inf) at epoch {trainer.current_epoch}, step {trainer.global_step}"
                " - lower the learning rate or check the data"
            )
            self.failed = True
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if (
            self.failed
            or trainer.sanity_checking
            or "val_score" not in trainer.callback_metrics
            or not self.stall_epochs
        ):
            return
        score = float(trainer.callback_metrics["val_score"])
        if score > self.best:
            self.best, self.stalled_for = score, 0
        else:
            self.stalled_for += 1
        if self.stalled_for >= self.stall_epochs:
            self.reason = f"validation score stalled for {self.stalled_for} epochs (best {self.best:.4f})"
            trainer.should_stop = True


class StageBudgetRefit(L.Callback):
    """A stage with a time budget re-fits its epochs once, at the start of its third epoch: to the
    ``seconds`` it was given, at the wall time its second epoch took (training, validation, checkpoint),
    and rebuilds its LR schedule over the new length, advanced to the step reached. The schedule then
    ends with the budget instead of minutes early (or cut short by the time cap), whatever the budget
    fit's few timed steps got wrong. ``on_refit(epochs)`` is told the new count (the fold's state keeps
    it, so a resume trains the same). Only a stage that starts at its first epoch in one process: a
    resumed stage keeps the epochs it has, and DDP ranks could measure different speeds.

    With ``validates`` (``train.val_every`` > 1) the second epoch's validation is timed apart from its
    training, and the re-fit counts a validation only for the epochs that will run one."""

    #: the wall clock (a test gives a fake one)
    clock: Callable[[], float] = staticmethod(time.monotonic)

    def __init__(
        self,
        stage: StageConfig,
        seconds: float,
        on_refit: Callable[[int], None],
        validates: Callable[[int, int], bool] | None = None,
    ) -> None:
        self.stage, self.seconds, self.on_refit = stage, seconds, on_refit
        self.validates = validates
        self._started: float | None = None
        self._epoch_started: dict[int, float] = {}
        self._val_started: float | None = None
        self._val_s: dict[int, float] = {}  # validation seconds of the epochs before the re-fit
        self.planned: int | None = None  # the epochs before a re-fit changed them

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch == 0 and trainer.world_size == 1:
            self._started = self.clock()

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._started is None:
            return
        epoch, now = trainer.current_epoch, self.clock()
        self._epoch_started[epoch] = now
        if epoch != REFIT_EPOCH + 1:
            return
        epoch_s = now - self._epoch_started[REFIT_EPOCH]
        val_s = self._val_s.get(REFIT_EPOCH, 0.0)
        epochs = epochs_to_fill(
            self.seconds, now - self._started, epoch_s - val_s, epoch, val_s, self.validates
        )
        self._started = None  # once per stage
        if epochs == self.stage.epochs:
            return
        self.planned, self.stage.epochs = self.stage.epochs, epochs
        trainer.fit_loop.max_epochs = epochs
        if self.stage.schedule.name != "plateau":  # an epoch-wise plateau schedule has no length
            config = trainer.lr_scheduler_configs[0]
            total, per_epoch = pl_module.stage_steps()  # type: ignore[attr-defined]
            config.scheduler = build_scheduler_at(
                self.stage.schedule, config.scheduler.optimizer, total, per_epoch, trainer.global_step
            )
        self.on_refit(epochs)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.validates is not None and self._started is not None and not trainer.sanity_checking:
            self._val_started = self.clock()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._val_started is not None:
            self._val_s[trainer.current_epoch] = self.clock() - self._val_started
            self._val_started = None


class ValidationSchedule(L.Callback):
    """Runs the validation loop only after the epochs that ``validates(epoch, stage.epochs)`` names
    (``train.val_every``), decided at each epoch's start, so that a budget re-fit of the stage's length
    (a :class:`StageBudgetRefit` placed before this callback) moves the dense tail with it."""

    #: ``check_val_every_n_epoch`` of an epoch that does not validate: no epoch count divides it
    NEVER = 2**31 - 1

    def __init__(self, stage: StageConfig, validates: Callable[[int, int], bool]) -> None:
        self.stage, self.validates = stage, validates

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        validate = self.validates(trainer.current_epoch, self.stage.epochs)
        trainer.check_val_every_n_epoch = 1 if validate else self.NEVER
