"""Learning-rate range test with Lightning's tuner."""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from lightning.pytorch.tuner import Tuner

from saltseg.training.config import ExperimentConfig
from saltseg.training.data import LabelledTiles
from saltseg.training.fold import prepare_fold_split
from saltseg.training.module import SaltModule
from saltseg.training.runtime import quiet_lightning, resolve_precision
from saltseg.training.trainer import build_datamodule
from saltseg.utils.io import atomic_path


def lr_find(
    cfg: ExperimentConfig, data_dir: str | Path, out: str | Path, fold: int = 0, steps: int = 100
) -> tuple[float, Path]:
    """Run the range test on the first stage of ``cfg``; save ``lr_find.png``; return (suggestion, plot)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    quiet_lightning()
    L.seed_everything(cfg.seed, verbose=False)
    tiles = LabelledTiles.load(data_dir, cache=cfg.data.cache, skip_missing=cfg.data.skip_missing)
    model, train_idx, val_idx = prepare_fold_split(cfg, tiles, fold)
    dm = build_datamodule(cfg, tiles, train_idx, val_idx)
    module = SaltModule(model, cfg)
    module.lr = cfg.stages[0].optimizer.lr
    # The range test runs ``steps`` batches: allow as many epochs as that takes on a small dataset.
    per_epoch = max(len(dm.train_dataset()) // cfg.train.batch_size, 1)
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=1,
        precision=resolve_precision(cfg),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=out,
        max_epochs=math.ceil(steps / per_epoch) + 1,
    )
    finder = Tuner(trainer).lr_find(
        module, datamodule=dm, num_training=steps, update_attr=False, min_lr=1e-6, max_lr=1.0
    )
    suggestion = finder.suggestion()  # None when the curve is too short (it says why)
    fig = finder.plot(suggest=suggestion is not None)
    plot = out / "lr_find.png"
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    return float("nan") if suggestion is None else float(suggestion), plot
