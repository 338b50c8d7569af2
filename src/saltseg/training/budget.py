"""Fit a config's schedule to a wall-clock budget: time a few training steps, scale the stage epochs.

A cosine or restart schedule cut short by a time limit ends at a high learning rate; scaling the epochs
instead keeps every stage's schedule whole. ``train.max_minutes`` stays on as a safety cap. A machine
whose speed drifts during a run (another job, heat) makes the one timing step wrong for the later folds:
with ``train.rescale_epochs`` each fold after the first is scaled again from the seconds per epoch the
finished folds measured (:func:`epochs_for_measured_speed`), and every stage re-fits its own epochs once
from the wall time of its second epoch (:func:`epochs_to_fill`, applied by
:class:`saltseg.training.callbacks.StageBudgetRefit`): the few timed steps of the fit miss the loop's
real speed by 10-20% on a 2-core CPU, which left minutes of a 30-minute budget unused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch

from saltseg.artifacts import FoldDir, FoldSummary
from saltseg.training.config import ExperimentConfig
from saltseg.training.data import LabelledTiles

#: Lightning's loop, logging and checkpoints add about this much to the bare step (measured on 2 CPU cores).
LOOP_OVERHEAD = 1.1
#: Share of the budget the epochs are planned to fill; the rest absorbs timing noise.
FILL = 0.93
#: The epoch (0-based) of a stage whose wall time a re-fit inside the stage measures: the first one
#: carries the start-up costs (worker processes, the first kernels), the second runs at the steady speed.
REFIT_EPOCH = 1


@dataclass
class BudgetFit:
    """What the calibration measured and the stage epochs it chose."""

    step_s: list[float]  # one training step of each stage (its loss)
    augment_s_per_tile: float
    epoch_s: list[float]  # one epoch of each stage: training + validation
    epochs: list[int]
    infer_s_per_tile: float  # one network pass (no TTA)

    def as_dict(self) -> dict:
        """JSON-ready."""
        return asdict(self)


def measure_epoch_seconds(
    cfg: ExperimentConfig, tiles: LabelledTiles, n_train: int, n_val: int, steps: int = 5
) -> BudgetFit:
    """Time ``cfg``'s model: seconds per training step with each stage's loss, per augmented tile and
    per epoch (training + validation with ``val_tta``, in the share of epochs ``train.val_every`` validates),
    on the device and precision training will use."""
    from saltseg.augment import build_transforms
    from saltseg.losses import create_loss
    from saltseg.models import create_model
    from saltseg.training.runtime import eval_device, resolve_num_workers, resolve_precision

    device = eval_device(cfg)
    amp = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(resolve_precision(cfg))
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model = create_model(cfg.model).to(device)
    bs = cfg.train.batch_size
    idx = np.arange(min(bs, len(tiles.ids)))
    images, masks = tiles.arrays(idx)  # data.cache false: read from disk
    x = torch.from_numpy(images).float().div(255)[:, None]
    y = torch.from_numpy(masks).float()[:, None]
    xd, yd = x.to(device), y.to(device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
        xd = xd.contiguous(memory_format=torch.channels_last)
    opt = torch.optim.Adam(model.parameters(), lr=1e-5)
    autocast = torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None)
    step_s: list[float] = []
    cache: dict[str, float] = {}
    model.train()
    for stage in cfg.stages:
        key = stage.loss.model_dump_json()
        if key not in cache:
            loss_fn = create_loss(stage.loss)
            times = []
            for _ in range(steps):
                t0 = time.perf_counter()
                with autocast:
                    out = model(xd)
                loss = loss_fn(out, yd)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sync()
                times.append(time.perf_counter() - t0)
            cache[key] = float(np.median(times[2:]))
        step_s.append(cache[key])
    model.eval()
    with torch.no_grad(), autocast:
        model(xd)
        sync()
        t0 = time.perf_counter()
        model(xd)
        sync()
    infer = (time.perf_counter() - t0) / len(idx)
    aug = build_transforms(cfg.augment)
    t0 = time.perf_counter()
    for i in range(64):
        aug(x[i % len(idx)], y[i % len(idx)])
    aug_s = (time.perf_counter() - t0) / 64
    val_s = n_val * infer * (2 if cfg.train.val_tta else 1)
    # with train.val_every > 1 only some epochs validate: their share at each stage's planned length
    val_share = [
        sum(cfg.train.validates(e, s.epochs) for e in range(s.epochs)) / max(s.epochs, 1) for s in cfg.stages
    ]
    # worker processes augment the next batches while the model trains on this one
    workers = resolve_num_workers(cfg)
    per_step = [max(s, bs * aug_s / workers) if workers else s + bs * aug_s for s in step_s]
    # at least one step: Lightning drops the last partial batch, but a tiny fold still costs a step
    epoch_s = [
        max(1, n_train // bs) * s * LOOP_OVERHEAD + val_s * share
        for s, share in zip(per_step, val_share, strict=True)
    ]
    return BudgetFit(
        [round(s, 4) for s in step_s],
        round(aug_s, 5),
        [round(e, 3) for e in epoch_s],
        [s.epochs for s in cfg.stages],
        round(infer, 5),
    )


def fit_epochs_to_budget(
    cfg: ExperimentConfig,
    tiles: LabelledTiles,
    minutes: float,
    n_train: int,
    n_val: int,
    measured: BudgetFit | None = None,
) -> tuple[ExperimentConfig, BudgetFit]:
    """A copy of ``cfg`` whose stage epochs, scaled in proportion, fill ``minutes`` of one fold's training.

    ``train.max_minutes`` is set to ``minutes`` as a hard cap and ``train.rescale_epochs`` on (the later
    folds of a run re-fitted to the speed the first ones measured); every stage keeps at least one epoch.
    ``measured`` reuses an earlier :func:`measure_epoch_seconds` of the same config.
    """
    fit = replace(measured) if measured else measure_epoch_seconds(cfg, tiles, n_train, n_val)
    # a floor: on a fast GPU a tiny config's planned seconds can round to zero
    planned = max(sum(e * s for e, s in zip(fit.epochs, fit.epoch_s, strict=True)), 1e-3)
    scale = minutes * 60 * FILL / planned
    fit.epochs = [max(1, round(e * scale)) for e in fit.epochs]
    out = with_stage_epochs(cfg, fit.epochs)
    out.train.max_minutes = minutes
    out.train.rescale_epochs = True
    return out, fit


def with_stage_epochs(cfg: ExperimentConfig, epochs: list[int]) -> ExperimentConfig:
    """A copy of ``cfg`` whose stages train ``epochs`` (one count per stage)."""
    out = cfg.model_copy(deep=True)
    for stage, n in zip(out.stages, epochs, strict=True):
        stage.epochs = n
    return out


def recorded_epochs(fold: FoldDir, cfg: ExperimentConfig) -> list[int] | None:
    """The stage epochs a budget re-fitted ``fold`` to (its ``state.json``), or None when it has none for
    ``cfg``'s stages."""
    epochs = fold.read_state().epochs if fold.state_file.exists() else None
    return epochs if epochs is not None and len(epochs) == len(cfg.stages) else None


def epochs_for_measured_speed(cfg: ExperimentConfig, finished: list[FoldSummary]) -> list[int] | None:
    """Stage epochs that fill ``FILL`` of ``train.max_minutes`` at the seconds per epoch (training and
    validation) the ``finished`` folds measured, in the proportions of ``cfg``'s stages; None without a
    budget or a fold that trained."""
    measured = [f for f in finished if f.status == "done" and f.epochs > 0 and f.minutes > 0]
    if cfg.train.max_minutes is None or not measured:
        return None
    seconds_per_epoch = sum(f.minutes for f in measured) * 60 / sum(f.epochs for f in measured)
    planned = sum(s.epochs for s in cfg.stages)
    scale = cfg.train.max_minutes * 60 * FILL / (seconds_per_epoch * planned)
    return [max(1, round(s.epochs * scale)) for s in cfg.stages]


def epochs_to_fill(
    seconds: float,
    elapsed: float,
    epoch_s: float,
    done: int,
    val_s: float = 0.0,
    validates: Callable[[int, int], bool] | None = None,
) -> int:
    """Epochs in all that fill ``FILL`` of a stage's ``seconds`` when its first ``done`` epochs took
    ``elapsed`` seconds and each further one takes ``epoch_s``, plus ``val_s`` where
    ``validates(epoch, epochs)`` says it validates (every epoch without it); at least ``done + 1``."""
    left = seconds * FILL - elapsed
    if validates is None or epoch_s <= 0:
        return done + max(1, int(left // max(epoch_s + val_s, 1e-9)))

    def cost(total: int) -> float:
        return sum(epoch_s + (val_s if validates(e, total) else 0.0) for e in range(done, total))

    # the largest length that fits (the cost grows with the length: each epoch added costs its training
    # and its validation, and the dense tail moving later un-validates at most one earlier epoch)
    low, high = done + 1, done + 1 + max(0, int(left // epoch_s))
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if cost(mid) <= left else (low, mid - 1)
    return low
