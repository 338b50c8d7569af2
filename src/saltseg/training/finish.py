"""What a trained fold leaves: the SWA average, the out-of-fold probabilities of its members (each
member runs once) and its :class:`~saltseg.artifacts.FoldSummary`."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from saltseg.artifacts import (
    FoldDir,
    FoldState,
    FoldSummary,
    save_probs,
)
from saltseg.checkpoints import average_weights, load_model, read_metadata, save_weights
from saltseg.metrics.kaggle import kaggle_scores
from saltseg.predictor import EnsemblePredictor
from saltseg.training.config import ExperimentConfig
from saltseg.training.data import LabelledTiles, SaltDataModule
from saltseg.training.runtime import eval_device

log = logging.getLogger(__name__)


def average_swa(cfg: ExperimentConfig, fold: FoldDir, members: list[Path], dm: SaltDataModule) -> Path | None:
    src = members if cfg.swa.members == "snapshots" else sorted(fold.swa_dir.glob("epoch*.safetensors"))
    if len(src) < 2:
        log.warning("SWA skipped: fewer than two checkpoints to average")
        return None
    device = eval_device(cfg)
    model = load_model(src[0])
    model.load_state_dict(average_weights(src))
    model.to(device)
    loader = torch.utils.data.DataLoader(dm.train_dataset(), batch_size=cfg.train.batch_size, shuffle=True)
    # batches are (image, mask): update_bn feeds the images
    torch.optim.swa_utils.update_bn(loader, model, device=device)
    return save_weights(model, fold.swa_file, swa_of=[p.name for p in src])


def predict_oof(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    val_idx: np.ndarray,
    ids: list[str],
    fold: FoldDir,
    members: list[Path],
) -> tuple[float | None, dict[str, float]]:
    """Predict the fold's validation tiles with its members into ``oof.npz`` (each member runs once);
    the members' average's and each member's score at threshold 0.5 (None without a mask head)."""
    images, truth = tiles.arrays(val_idx)
    predictor = EnsemblePredictor(
        [load_model(p) for p in members],
        device=eval_device(cfg),
        channels_last=cfg.train.channels_last,
        backend=cfg.train.predict_backend,
    )
    pred = predictor.predict_tiles(images, batch_size=cfg.train.batch_size * 2, with_members=len(members) > 1)
    save_probs(fold.oof_file, ids, pred.probs, pred.salt, truth)
    if pred.probs is None:
        return None, {}
    score = float(kaggle_scores(pred.probs > 0.5, truth).mean())
    per_member = pred.member_probs or [pred.probs]
    member_scores = {
        p.name: float(kaggle_scores(mp > 0.5, truth).mean())
        for p, mp in zip(members, per_member, strict=True)
        if mp is not None
    }
    return score, member_scores


def finish_fold(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    val_idx: np.ndarray,
    fold: int,
    fd: FoldDir,
    members: list[Path],
    state: FoldState,
    total_epochs: int,
    reason: str | None,
    failed: bool,
) -> FoldSummary:
    ids = [tiles.ids[i] for i in val_idx]
    # epochs trained: fewer than planned when train.max_minutes, early stopping or a guard ended a stage
    trained = sum(int(read_metadata(fd.stage_end(si))[1].get("epochs", 0)) for si in state.completed)
    oof_score: float | None = None
    member_scores: dict[str, float] = {}
    # a diverged fold's weights hold NaN: nothing to predict with (and load_model refuses); a refit has
    # no held-out tiles to predict
    if not failed and len(ids):
        oof_score, member_scores = predict_oof(cfg, tiles, val_idx, ids, fd, members)
    summary = FoldSummary(
        name=cfg.name,
        fold=fold,
        status="failed" if failed else ("stopped" if reason else "done"),
        reason=reason,
        epochs=trained,
        planned_epochs=total_epochs,
        minutes=round(state.seconds / 60, 2),
        best_val_score=state.best_score,
        oof_score=oof_score,
        n_val=len(ids),
        members=[str(p.relative_to(fd.path)) for p in members],
        member_scores=member_scores,
    )
    fd.write_summary(summary)
    return summary
