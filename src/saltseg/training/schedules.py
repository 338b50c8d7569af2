"""A stage's optimiser and learning-rate schedule, built from ``torch.optim`` and its schedulers."""

from __future__ import annotations

import math
import warnings
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
    warm, span = _warmup_and_span(cfg, total_steps, steps_per_epoch)
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
        main = sched.CosineAnnealingWarmRestarts(optimizer, T_0=int(_cycle_steps(cfg, span)), eta_min=eta_min)
    elif cfg.name == "cyclic":
        half = _cycle_steps(cfg, span) / 2
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


def build_scheduler_at(
    cfg: ScheduleConfig, optimizer: torch.optim.Optimizer, total_steps: int, steps_per_epoch: float, done: int
) -> LRScheduler:
    """:func:`build_scheduler` over ``total_steps``, advanced ``done`` steps: the schedule a stage
    continues with when its length changes after ``done`` optimiser steps (the budget's re-fit). The
    optimiser's LR is left where that schedule puts it at step ``done``."""
    for group in optimizer.param_groups:  # the schedule is built on the stage's LR, not today's
        group["lr"] = group.get("initial_lr", group["lr"])
    scheduler = build_scheduler(cfg, optimizer, total_steps, steps_per_epoch)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # SequentialLR's milestone step(0) is "deprecated"
        for _ in range(done):
            scheduler.step()
    return scheduler


def noam_multiplier(warmup_steps: int) -> Callable[[int], float]:
    """Noam's schedule as a multiplier of the LR: a linear rise for ``warmup_steps``, then 1/sqrt decay."""

    def multiplier(step: int) -> float:
        s = max(step, 1)
        return min(s / warmup_steps, math.sqrt(warmup_steps / s))

    return multiplier


def _warmup_and_span(cfg: ScheduleConfig, total_steps: int, steps_per_epoch: float) -> tuple[int, int]:
    """Steps of the warm-up ramp and of the main schedule after it."""
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    return warm, max(max(total_steps, 1) - warm, 1)


def _cycle_steps(cfg: ScheduleConfig, span: int) -> float:
    """Steps in one cycle of a cyclic schedule whose main part lasts ``span`` steps: whole steps for
    ``cosine_restarts`` (the last cycle may be shorter, so no restart falls on the stage's end)."""
    if cfg.name == "cosine_restarts":
        return math.ceil(span / cfg.cycles)
    return span / cfg.cycles


def cycle_of_epoch(cfg: ScheduleConfig, epoch: int, epochs: int, steps_per_epoch: float = 1.0) -> int:
    """Index of the LR cycle of :func:`build_scheduler`'s schedule that epoch ``epoch`` (0-based) of a
    stage of ``epochs`` ends in: the cycle of its last optimiser step (the warm-up counts to cycle 0)."""
    if cfg.name not in ("cosine_restarts", "cyclic") or cfg.cycles == 1:
        return 0
    warm, span = _warmup_and_span(cfg, round(epochs * steps_per_epoch), steps_per_epoch)
    last_step = round((epoch + 1) * steps_per_epoch) - 1
    if last_step < warm:
        return 0
    return min(int((last_step - warm) // _cycle_steps(cfg, span)), cfg.cycles - 1)


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
