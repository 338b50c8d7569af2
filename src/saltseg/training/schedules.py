"""A stage's optimiser and learning-rate schedule, built from ``torch.optim`` and its schedulers."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch.optim.lr_scheduler import LRScheduler

from saltseg.training.config import OptimizerConfig, ScheduleConfig


def build_scheduler(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: float
) -> LRScheduler:
    """The stage's step-wise LR schedule over ``total_steps`` optimiser steps, from torch's schedulers.

    ``cosine``, ``cosine_restarts`` and ``cyclic`` are torch's ``CosineAnnealingLR``,
    ``CosineAnnealingWarmRestarts`` and ``CyclicLR`` (triangular); a warm-up is a ``LinearLR`` ramp to
    the schedule's first LR in front of them (``SequentialLR``). Noam, which torch lacks, is a
    ``LambdaLR``. ``plateau`` is stepped by epoch on the validation score instead (see the module).
    """
    sched = torch.optim.lr_scheduler
    lr = optimizer.param_groups[0]["lr"]
    total = max(total_steps, 1)
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    span = max(total - warm, 1)
    eta_min = min(cfg.min_lr, lr)
    if cfg.name == "noam":
        return sched.LambdaLR(optimizer, noam_multiplier(max(warm, 1)))
    start = eta_min / lr if cfg.name == "cyclic" else 1.0  # the main schedule's first LR, as a fraction
    # the ramp is built first: it sees the stage's LR, before CyclicLR moves it to its base
    ramp = (
        sched.LinearLR(optimizer, start_factor=start / warm, end_factor=start, total_iters=max(warm - 1, 1))
        if warm
        else None
    )
    main: LRScheduler
    if cfg.name in ("constant", "plateau"):
        main = sched.ConstantLR(optimizer, factor=1.0, total_iters=0)
    elif cfg.name == "cosine":
        main = sched.CosineAnnealingLR(optimizer, T_max=span, eta_min=eta_min)
    elif cfg.name == "cosine_restarts":
        # cycles of whole steps; the last one may be shorter, so no restart falls on the stage's end
        main = sched.CosineAnnealingWarmRestarts(optimizer, T_0=math.ceil(span / cfg.cycles), eta_min=eta_min)
    elif cfg.name == "cyclic":
        half = span / (2 * cfg.cycles)
        main = sched.CyclicLR(
            optimizer,
            base_lr=eta_min,
            max_lr=lr,
            step_size_up=half,
            step_size_down=half,
            cycle_momentum=False,
        )
    else:
        raise ValueError(f"unknown schedule {cfg.name!r}")
    if ramp is None:
        return main
    # (step + 1) / warm of the first LR at steps 0 .. warm - 1, then the main schedule
    return sched.SequentialLR(optimizer, [ramp, main], milestones=[warm])


def noam_multiplier(warmup_steps: int) -> Callable[[int], float]:
    """Noam's schedule as a multiplier of the LR: a linear rise for ``warmup_steps``, then 1/sqrt decay."""

    def multiplier(step: int) -> float:
        s = max(step, 1)
        return min(s / warmup_steps, math.sqrt(warmup_steps / s))

    return multiplier


def cycle_of_epoch(cfg: ScheduleConfig, epoch: int, epochs: int) -> int:
    """Index of the LR cycle that epoch ``epoch`` (0-based) of a stage of ``epochs`` belongs to."""
    cycles = cfg.cycles if cfg.name in ("cosine_restarts", "cyclic") else 1
    return min(epoch * cycles // max(epochs, 1), cycles - 1)


def build_optimizer(cfg: OptimizerConfig, params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The stage's optimiser over ``params``."""
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")
