"""Lightning callbacks: keep-best and per-cycle snapshots as safetensors, SWA epoch weights, guards,
and an atomic checkpoint writer."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from saltseg.checkpoints import save_weights
from saltseg.training.config import StageConfig
from saltseg.training.schedules import cycle_of_epoch


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


class SnapshotKeeper(L.Callback):
    """After each validation: save the fold's best model (``best.safetensors``), the best epoch of each
    LR cycle of a snapshot stage (``snapshots/s{stage}_c{cycle}.safetensors``), and the last ``swa_k``
    epoch weights of the stage (``swa/epoch{e}.safetensors``) when SWA over last epochs is on."""

    def __init__(
        self, fold_dir: Path, stage_index: int, stage: StageConfig, best_score: float, swa_k: int = 0
    ) -> None:
        self.fold_dir, self.stage_index, self.stage = fold_dir, stage_index, stage
        self.best_score = best_score
        self.best_epoch: int | None = None
        self.cycle_best: dict[int, float] = {}
        self.swa_k = swa_k

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
        epoch = trainer.current_epoch
        info = {"stage": self.stage_index, "epoch": epoch, "val_score": score}
        model = pl_module.model  # type: ignore[attr-defined]
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            if trainer.is_global_zero:
                save_weights(model, self.fold_dir / "best.safetensors", **info)
        if self.stage.snapshots:
            cycle = cycle_of_epoch(self.stage.schedule, epoch, self.stage.epochs)
            if score > self.cycle_best.get(cycle, -math.inf):
                self.cycle_best[cycle] = score
                if trainer.is_global_zero:
                    save_weights(
                        model,
                        self.fold_dir / "snapshots" / f"s{self.stage_index}_c{cycle}.safetensors",
                        cycle=cycle,
                        **info,
                    )
        if self.swa_k and epoch >= self.stage.epochs - self.swa_k and trainer.is_global_zero:
            save_weights(model, self.fold_dir / "swa" / f"epoch{epoch:04d}.safetensors", **info)


class TrainingGuard(L.Callback):
    """Stops training, saying why, when the loss turns NaN/inf or the validation score has stalled."""

    def __init__(self, stall_epochs: int | None, best_score: float, stalled_for: int = 0) -> None:
        self.stall_epochs = stall_epochs
        self.best = best_score
        self.stalled_for = stalled_for
        self.reason: str | None = None
        self.failed = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None and not torch.isfinite(loss.detach()).all():
            self.reason = (
                f"loss became {float(loss)} at epoch {trainer.current_epoch}, step {trainer.global_step}"
            )
            self.failed = True
            trainer.should_stop = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or "val_score" not in trainer.callback_metrics or not self.stall_epochs:
            return
        score = float(trainer.callback_metrics["val_score"])
        if score > self.best:
            self.best, self.stalled_for = score, 0
        else:
            self.stalled_for += 1
        if self.stalled_for >= self.stall_epochs:
            self.reason = f"validation score stalled for {self.stalled_for} epochs (best {self.best:.4f})"
            trainer.should_stop = True
