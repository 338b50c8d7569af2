"""Tests of saltseg.training.schedules: LR multipliers, cycles of epochs, optimisers."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
import torch

from saltseg.training.config import OptimizerConfig, ScheduleConfig
from saltseg.training.schedules import build_optimizer, cycle_of_epoch, lr_multiplier

LR, MIN_LR = 1e-2, 1e-4
FLOOR = MIN_LR / LR


def curve(cfg: ScheduleConfig, total: int = 100, per_epoch: float = 10.0) -> list[float]:
    fn = lr_multiplier(cfg, LR, total, per_epoch)
    return [fn(s) for s in range(total + 1)]


def test_constant_and_plateau_are_flat() -> None:
    for name in ("constant", "plateau"):
        assert set(curve(ScheduleConfig(name=name))) == {1.0}


def test_cosine_from_one_to_floor() -> None:
    c = curve(ScheduleConfig(name="cosine", min_lr=MIN_LR))
    assert c[0] == pytest.approx(1.0)
    assert c[50] == pytest.approx((1 + FLOOR) / 2)
    assert c[100] == pytest.approx(FLOOR)
    assert all(a >= b for a, b in pairwise(c)), "cosine must decrease monotonically"
    assert min(c) >= FLOOR - 1e-12


def test_cosine_beyond_total_stays_at_floor() -> None:
    fn = lr_multiplier(ScheduleConfig(name="cosine", min_lr=MIN_LR), LR, 100, 10)
    assert fn(150) == pytest.approx(FLOOR)


def test_min_lr_above_lr_is_clamped() -> None:
    fn = lr_multiplier(ScheduleConfig(name="cosine", min_lr=1.0), LR, 100, 10)
    assert fn(0) == fn(50) == fn(100) == 1.0


@pytest.mark.parametrize("cycles", [2, 3, 4, 7])
def test_cosine_restarts_restart_to_one_at_each_cycle_start(cycles: int) -> None:
    total = 7 * 3 * 4 * 10  # divisible by every cycle count above
    c = curve(ScheduleConfig(name="cosine_restarts", cycles=cycles, min_lr=MIN_LR), total)
    length = total // cycles
    for k in range(cycles):
        start = k * length
        assert c[start] == pytest.approx(1.0), f"cycle {k} does not restart at 1"
        assert c[start + length // 2] == pytest.approx((1 + FLOOR) / 2, rel=1e-2)
        assert c[start + length - 1] < FLOOR + 1e-3, f"cycle {k} does not end near the floor"
        seg = c[start : start + length]
        assert all(a >= b for a, b in pairwise(seg))
    assert c[total] == pytest.approx(FLOOR)


def test_cosine_restarts_exact_restart_with_awkward_lengths() -> None:
    """Float round-off must not turn a cycle start into the end of the previous cycle."""
    for total in (99, 33, 300, 999):
        fn = lr_multiplier(ScheduleConfig(name="cosine_restarts", cycles=3, min_lr=MIN_LR), LR, total, 1.0)
        for k in range(3):
            assert fn(k * total // 3) == pytest.approx(1.0)


def test_cyclic_is_triangular() -> None:
    c = curve(ScheduleConfig(name="cyclic", cycles=2, min_lr=MIN_LR), 100)
    assert c[0] == pytest.approx(FLOOR)
    assert c[25] == pytest.approx(1.0)  # peak in the middle of cycle 0
    assert c[50] == pytest.approx(FLOOR)  # back to the bottom at the cycle boundary
    assert c[75] == pytest.approx(1.0)
    # linear (constant slope) on each side of the peak
    up = [c[i + 1] - c[i] for i in range(0, 24)]
    down = [c[i + 1] - c[i] for i in range(25, 49)]
    assert max(up) - min(up) < 1e-9 and all(d > 0 for d in up)
    assert max(down) - min(down) < 1e-9 and all(d < 0 for d in down)
    assert up[0] == pytest.approx(-down[0])


def test_noam_peaks_at_end_of_warmup() -> None:
    cfg = ScheduleConfig(name="noam", warmup_epochs=2)
    c = curve(cfg, 200, per_epoch=10)  # warm-up = 20 steps
    peak = max(range(len(c)), key=c.__getitem__)
    assert peak == 20 and c[20] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(c[1:21])), "linear rise during warm-up"
    assert c[80] == pytest.approx(math.sqrt(20 / 80))  # 1/sqrt decay
    assert all(a > b for a, b in pairwise(c[20:]))


@pytest.mark.parametrize("name", ["constant", "cosine", "cosine_restarts", "cyclic"])
def test_linear_warmup(name: str) -> None:
    cfg = ScheduleConfig(name=name, warmup_epochs=1, min_lr=MIN_LR, cycles=2)
    fn = lr_multiplier(cfg, LR, 100, 10)  # warm-up = 10 steps
    target = fn(10)
    ramp = [fn(s) for s in range(10)]
    assert ramp[0] == pytest.approx(target / 10)
    assert ramp[-1] == pytest.approx(target)
    assert all(b - a == pytest.approx(target / 10) for a, b in pairwise(ramp))
    if name != "cyclic":
        assert target == pytest.approx(1.0)  # after warm-up the schedule starts at its top


def test_warmup_then_cosine_reaches_floor_at_end() -> None:
    fn = lr_multiplier(ScheduleConfig(name="cosine", warmup_epochs=2, min_lr=MIN_LR), LR, 100, 10)
    assert fn(20) == pytest.approx(1.0)
    assert fn(60) == pytest.approx((1 + FLOOR) / 2)
    assert fn(100) == pytest.approx(FLOOR)


def test_lambda_lr_applies_the_multiplier() -> None:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(OptimizerConfig(name="sgd", lr=LR), [p])
    fn = lr_multiplier(ScheduleConfig(name="cosine", min_lr=MIN_LR), LR, 10, 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, fn)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(LR)
    assert lrs == sorted(lrs, reverse=True)
    assert opt.param_groups[0]["lr"] == pytest.approx(MIN_LR)


@pytest.mark.parametrize(
    ("name", "cycles", "epochs", "expected"),
    [
        ("cosine_restarts", 2, 10, [0] * 5 + [1] * 5),
        ("cosine_restarts", 3, 9, [0, 0, 0, 1, 1, 1, 2, 2, 2]),
        ("cyclic", 2, 5, [0, 0, 0, 1, 1]),
        ("cosine_restarts", 4, 2, [0, 2]),
        ("cosine", 3, 6, [0] * 6),  # cycles only count for cyclic schedules
        ("constant", 5, 4, [0] * 4),
    ],
)
def test_cycle_of_epoch(name: str, cycles: int, epochs: int, expected: list[int]) -> None:
    cfg = ScheduleConfig(name=name, cycles=cycles)
    assert [cycle_of_epoch(cfg, e, epochs) for e in range(epochs)] == expected


@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("sgd", torch.optim.SGD),
        ("rmsprop", torch.optim.RMSprop),
        ("adam", torch.optim.Adam),
        ("adamw", torch.optim.AdamW),
    ],
)
def test_build_optimizer(name: str, cls: type) -> None:
    params = [torch.nn.Parameter(torch.ones(3))]
    cfg = OptimizerConfig(name=name, lr=0.05, weight_decay=1e-4, momentum=0.8, nesterov=True)
    opt = build_optimizer(cfg, params)
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-4
    if name in ("sgd", "rmsprop"):
        assert group["momentum"] == 0.8
    if name == "sgd":
        assert group["nesterov"] is True
    # one step moves the parameter
    params[0].grad = torch.ones(3)
    opt.step()
    assert not torch.equal(params[0].detach(), torch.ones(3))
