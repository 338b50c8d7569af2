"""Learning-rate range test with Lightning's tuner."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import matplotlib

matplotlib.use("Agg")

from lightning.pytorch.tuner import Tuner

from saltseg.augment import build_transforms
from saltseg.training.config import ExperimentConfig
from saltseg.training.data import LabelledTiles, SaltDataModule
from saltseg.training.module import SaltModule
from saltseg.training.train import prepare_fold_split, resolve_precision
from saltseg.utils.io import atomic_path


def lr_find(
    cfg: ExperimentConfig, data_dir: str | Path, out: str | Path, fold: int = 0, steps: int = 100
) -> tuple[float, Path]:
    """Run the range test on the first stage of ``cfg``; save ``lr_find.png``; return (suggestion, plot)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    L.seed_everything(cfg.seed, verbose=False)
    tiles = LabelledTiles.load(data_dir, cache=cfg.data.cache)
    model, train_idx, val_idx = prepare_fold_split(cfg, tiles, fold)
    dm = SaltDataModule(
        tiles, train_idx, val_idx, cfg.train.batch_size, build_transforms(cfg.augment), cfg.train.num_workers
    )
    module = SaltModule(model, cfg)
    module.lr = cfg.stages[0].optimizer.lr
    trainer = L.Trainer(
        accelerator=cfg.train.accelerator,
        devices=1,
        precision=resolve_precision(cfg),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        default_root_dir=out,
        max_epochs=1,
    )
    finder = Tuner(trainer).lr_find(
        module, datamodule=dm, num_training=steps, update_attr=False, min_lr=1e-6, max_lr=1.0
    )
    fig = finder.plot(suggest=True)
    plot = out / "lr_find.png"
    with atomic_path(plot) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    suggestion = finder.suggestion() or float("nan")
    return float(suggestion), plot
