"""Learning-rate schedules as step-wise multipliers of the stage's base LR, plus optimiser factory."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from saltseg.training.config import OptimizerConfig, ScheduleConfig


def lr_multiplier(
    cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: float
) -> Callable[[int], float]:
    """A function step -> LR multiplier implementing ``cfg`` over ``total_steps`` optimiser steps."""
    total = max(total_steps, 1)
    warm = round(cfg.warmup_epochs * steps_per_epoch)
    floor = min(cfg.min_lr / base_lr, 1.0)

    def shape(step: int) -> float:
        if cfg.name == "constant" or cfg.name == "plateau":
            return 1.0
        if cfg.name == "noam":
            w = max(warm, 1)
            s = max(step, 1)
            return min(s / w, math.sqrt(w / s))
        span = max(total - warm, 1)
        pos = min(max(step - warm, 0), span)
        t = pos / span
        if cfg.name == "cosine":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        # position inside the current cycle, in integers so that a cycle starts exactly at 0
        cycle_t = (pos * cfg.cycles % span) / span if pos < span else 1.0
        if cfg.name == "cosine_restarts":
            return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * cycle_t))
        if cfg.name == "cyclic":
            return floor + (1 - floor) * (1 - abs(2 * cycle_t - 1))
        raise ValueError(f"unknown schedule {cfg.name!r}")

    def multiplier(step: int) -> float:
        if cfg.name != "noam" and warm > 0 and step < warm:
            return (step + 1) / warm * shape(warm)
        return shape(step)

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
