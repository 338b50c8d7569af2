"""The LightningModule: one model trained through a list of stages (loss, optimiser, schedule)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch

from saltseg.losses import create_loss
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.training.config import ExperimentConfig, StageConfig
from saltseg.training.schedules import build_optimizer, build_scheduler


class SaltModule(L.LightningModule):
    """Trains ``model`` with the loss, optimiser and schedule of the current stage.

    Logs ``train_loss``, ``val_loss``, ``val_score`` (Kaggle metric at threshold 0.5, with flip TTA
    when ``train.val_tta``), ``lr`` and ``stage`` each epoch.
    """

    def __init__(self, model: torch.nn.Module, cfg: ExperimentConfig, stage_index: int = 0) -> None:
        super().__init__()
        if cfg.train.compile:
            model.compile()  # in place: its state_dict keys and saved weights stay those of the model
        self.model = model
        self.cfg = cfg
        self.set_stage(stage_index)
        self._val_pred: list[np.ndarray] = []
        self._val_true: list[np.ndarray] = []

    @property
    def stage(self) -> StageConfig:
        """The stage being trained."""
        return self.cfg.stages[self.stage_index]

    def set_stage(self, index: int) -> None:
        """Switch to stage ``index`` (its loss; the optimiser is built when the stage's fit starts)."""
        self.stage_index = index
        self.loss_fn = create_loss(self.cfg.stages[index].loss)

    def stage_steps(self) -> tuple[int, float]:
        """Optimiser steps of the current stage, in all and per epoch: what its LR schedule is built on."""
        total = int(self.trainer.estimated_stepping_batches)
        return total, total / max(self.stage.epochs, 1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.model(x)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.cfg.train.channels_last else x

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        out = self.model(self._prep(x))
        loss = self.loss_fn(out, y)
        n = x.shape[0]
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n, sync_dist=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(self._prep(x))
        self.log("val_loss", self.loss_fn(out, y), on_epoch=True, batch_size=x.shape[0], sync_dist=True)
        mask = torch.sigmoid(out["mask"].float()) if "mask" in out else None
        if mask is not None and self.cfg.train.val_tta:
            # horizontal-flip TTA, reusing the forward pass above for the unflipped view
            flipped = self.model(self._prep(torch.flip(x, dims=[-1])))["mask"]
            mask = (mask + torch.flip(torch.sigmoid(flipped.float()), dims=[-1])) / 2
        if mask is not None:
            self._val_pred.append((mask[:, 0] > 0.5).cpu().numpy())
        self._val_true.append((y[:, 0] > 0.5).cpu().numpy())

    def on_validation_epoch_end(self) -> None:
        if self._val_pred:
            pred, true = np.concatenate(self._val_pred), np.concatenate(self._val_true)
            score = float(kaggle_scores(pred, true).mean())
            self.log("val_score", score, prog_bar=True, sync_dist=True)
        self.log("stage", float(self.stage_index), sync_dist=True)
        self._val_pred.clear()
        self._val_true.clear()

    def configure_optimizers(self):
        stage = self.stage
        opt = build_optimizer(stage.optimizer, [p for p in self.model.parameters() if p.requires_grad])
        if stage.schedule.name == "plateau":
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="max", factor=stage.schedule.factor, patience=stage.schedule.patience
            )
            return {
                "optimizer": opt,
                "lr_scheduler": {"scheduler": sched, "monitor": "val_score", "interval": "epoch"},
            }
        sched = build_scheduler(stage.schedule, opt, *self.stage_steps())
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
