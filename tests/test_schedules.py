"""saltseg.training.schedules: torch's schedules against the hand-written ones, cycles, optimisers."""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise

import pytest
import torch

from saltseg.training.config import OptimizerConfig, ScheduleConfig
from saltseg.training.schedules import build_optimizer, build_scheduler, build_scheduler_at, cycle_of_epoch

LR, MIN_LR = 1e-2, 1e-4
FLOOR = MIN_LR / LR


def curve(cfg: ScheduleConfig, total: int = 100, per_epoch: float = 10.0) -> list[float]:
    """The LR (as a fraction of the stage's) at steps 0..total of ``build_scheduler``'s schedule."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = build_scheduler(cfg, opt, total, per_epoch)
    out = []
    for _ in range(total):
        out.append(opt.param_groups[0]["lr"] / LR)
        opt.step()
        sched.step()
    return [*out, opt.param_groups[0]["lr"] / LR]


def hand_written_multiplier(
    cfg: ScheduleConfig, base_lr: float, total_steps: int, steps_per_epoch: float
) -> Callable[[int], float]:
    """The schedules as saltseg wrote them by hand before torch's (the reference the curves must equal)."""
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


@pytest.mark.parametrize(
    "cfg",
    [
        ScheduleConfig(name="cosine", min_lr=MIN_LR),
        ScheduleConfig(name="cosine", min_lr=MIN_LR, warmup_epochs=1),
        ScheduleConfig(name="cosine", min_lr=MIN_LR, warmup_epochs=0.1),
        ScheduleConfig(name="cosine_restarts", cycles=4, min_lr=MIN_LR),
        ScheduleConfig(name="cosine_restarts", cycles=2, min_lr=MIN_LR, warmup_epochs=2),
        ScheduleConfig(name="cyclic", cycles=2, min_lr=MIN_LR),
        ScheduleConfig(name="cyclic", cycles=3, min_lr=MIN_LR, warmup_epochs=1),
        ScheduleConfig(name="constant"),
        ScheduleConfig(name="constant", warmup_epochs=1.5),
        ScheduleConfig(name="plateau"),
        ScheduleConfig(name="noam", warmup_epochs=2),
    ],
    ids=lambda c: f"{c.name}-{c.cycles}-warm{c.warmup_epochs}",
)
def test_torch_schedules_equal_the_hand_written_ones(cfg: ScheduleConfig) -> None:
    total = 120  # cycles of whole steps for every cycle count above
    ref = hand_written_multiplier(cfg, LR, total, 10)
    # the LRs of the stage's steps (the one after its last step is never used)
    assert curve(cfg, total)[:total] == pytest.approx([ref(s) for s in range(total)], abs=1e-12)


def test_constant_and_plateau_are_flat() -> None:
    for name in ("constant", "plateau"):
        assert set(curve(ScheduleConfig(name=name))) == {1.0}


def test_cosine_from_one_to_floor() -> None:
    c = curve(ScheduleConfig(name="cosine", min_lr=MIN_LR))
    assert c[0] == pytest.approx(1.0)
    assert c[50] == pytest.approx((1 + FLOOR) / 2)
    assert c[100] == pytest.approx(FLOOR)
    assert all(a >= b - 1e-15 for a, b in pairwise(c)), "cosine must decrease monotonically"
    assert min(c) >= FLOOR - 1e-12


def test_min_lr_above_lr_is_clamped() -> None:
    c = curve(ScheduleConfig(name="cosine", min_lr=1.0))
    assert c[0] == c[50] == c[100] == 1.0


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
        assert all(a >= b - 1e-15 for a, b in pairwise(seg))


def test_cosine_restarts_with_awkward_lengths_restart_on_whole_steps_and_never_at_the_end() -> None:
    """Cycles of ceil(total / cycles) steps: each restart exactly at 1, the last cycle a little shorter."""
    for total in (100, 98, 301, 1000):
        c = curve(ScheduleConfig(name="cosine_restarts", cycles=3, min_lr=MIN_LR), total, 1.0)
        length = math.ceil(total / 3)
        restarts = [s for s in range(1, total) if c[s] > c[s - 1]]
        assert restarts == [length, 2 * length], total
        assert all(c[s] == pytest.approx(1.0) for s in restarts)
        assert c[total - 1] < 0.03  # the last step is low (near the end of its cycle), not a restart


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
    c = curve(ScheduleConfig(name="noam", warmup_epochs=2), 200, per_epoch=10)  # warm-up = 20 steps
    peak = max(range(len(c)), key=c.__getitem__)
    assert peak == 20 and c[20] == pytest.approx(1.0)
    assert all(a < b for a, b in pairwise(c[1:21])), "linear rise during warm-up"
    assert c[80] == pytest.approx(math.sqrt(20 / 80))  # 1/sqrt decay
    assert all(a > b for a, b in pairwise(c[20:]))


@pytest.mark.parametrize("name", ["constant", "cosine", "cosine_restarts", "cyclic"])
def test_linear_warmup(name: str) -> None:
    c = curve(ScheduleConfig(name=name, warmup_epochs=1, min_lr=MIN_LR, cycles=2))  # warm-up = 10 steps
    target, ramp = c[10], c[:10]
    assert ramp[0] == pytest.approx(target / 10)
    assert ramp[-1] == pytest.approx(target)
    assert all(b - a == pytest.approx(target / 10) for a, b in pairwise(ramp))
    if name != "cyclic":
        assert target == pytest.approx(1.0)  # after warm-up the schedule starts at its top
    else:
        assert target == pytest.approx(FLOOR)  # a triangle starts at its bottom


def test_warmup_then_cosine_reaches_floor_at_end() -> None:
    c = curve(ScheduleConfig(name="cosine", warmup_epochs=2, min_lr=MIN_LR))
    assert c[20] == pytest.approx(1.0)
    assert c[60] == pytest.approx((1 + FLOOR) / 2)
    assert c[100] == pytest.approx(FLOOR)


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts", "cyclic", "noam"])
def test_a_schedule_restored_from_its_state_continues_the_same_curve(name: str) -> None:
    """What a resumed run sees: the scheduler's state_dict (saved in the checkpoint) loaded into a new one."""
    cfg = ScheduleConfig(name=name, warmup_epochs=1, min_lr=MIN_LR, cycles=3)
    whole = curve(cfg, 90)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = build_scheduler(cfg, opt, 90, 10)
    for _ in range(37):
        opt.step()
        sched.step()
    saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=LR)
    sched2 = build_scheduler(cfg, opt2, 90, 10)
    opt2.load_state_dict(saved_opt)
    sched2.load_state_dict(saved_sched)
    rest = []
    for _ in range(37, 90):
        rest.append(opt2.param_groups[0]["lr"] / LR)
        opt2.step()
        sched2.step()
    assert rest == pytest.approx(whole[37:90], abs=1e-12)


@pytest.mark.parametrize("name", ["cosine", "cosine_restarts", "cyclic", "noam", "constant"])
def test_a_schedule_rebuilt_longer_mid_stage_continues_the_longer_curve(name: str) -> None:
    """The budget's re-fit: a stage planned for 40 steps is found to have time for 90 after 20; the
    rebuilt schedule's LR from step 20 on is that of a 90-step schedule from the start."""
    cfg = ScheduleConfig(name=name, warmup_epochs=1, min_lr=MIN_LR, cycles=3)
    longer = curve(cfg, 90)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=LR)
    sched = build_scheduler(cfg, opt, 40, 10)
    for _ in range(20):
        opt.step()
        sched.step()
    sched = build_scheduler_at(cfg, opt, 90, 10, done=20)
    rest = []
    for _ in range(20, 90):
        rest.append(opt.param_groups[0]["lr"] / LR)
        opt.step()
        sched.step()
    assert rest == pytest.approx(longer[20:90], abs=1e-12)
    assert opt.param_groups[0]["lr"] / LR == pytest.approx(longer[90], abs=1e-12)


@pytest.mark.parametrize(
    ("name", "cycles", "epochs", "expected"),
    [
        ("cosine_restarts", 2, 10, [0] * 5 + [1] * 5),
        ("cosine_restarts", 3, 9, [0, 0, 0, 1, 1, 1, 2, 2, 2]),
        ("cosine_restarts", 3, 10, [0] * 4 + [1] * 4 + [2] * 2),  # cycles of ceil(10 / 3) epochs
        ("cyclic", 2, 5, [0, 0, 0, 1, 1]),
        ("cosine_restarts", 4, 2, [0, 1]),
        ("cosine", 3, 6, [0] * 6),  # cycles only count for cyclic schedules
        ("constant", 5, 4, [0] * 4),
    ],
)
def test_cycle_of_epoch(name: str, cycles: int, epochs: int, expected: list[int]) -> None:
    cfg = ScheduleConfig(name=name, cycles=cycles)
    assert [cycle_of_epoch(cfg, e, epochs) for e in range(epochs)] == expected


@pytest.mark.parametrize(
    ("cycles", "epochs", "total", "warmup"),
    [
        (2, 10, 100, 0.0),
        (3, 10, 70, 0.0),
        (3, 10, 70, 1.0),
        (4, 2, 6, 0.0),
        (3, 7, 42, 0.5),
        (5, 12, 36, 0.0),
    ],
)
def test_cycle_of_epoch_follows_the_scheduler_restarts(
    cycles: int, epochs: int, total: int, warmup: float
) -> None:
    """An epoch's snapshot cycle is the cycle torch's scheduler is in at the epoch's last step."""
    cfg = ScheduleConfig(name="cosine_restarts", cycles=cycles, min_lr=MIN_LR, warmup_epochs=warmup)
    per_epoch = total / epochs
    lrs = curve(cfg, total, per_epoch)
    warm = round(warmup * per_epoch)
    restarts = [j for j in range(warm + 1, total) if lrs[j] > lrs[j - 1] + 1e-12]
    assert 1 <= len(restarts) <= cycles - 1  # whole-step cycles: a short stage may hold fewer
    for e in range(epochs):
        last = (e + 1) * total // epochs - 1
        assert cycle_of_epoch(cfg, e, epochs, per_epoch) == sum(j <= last for j in restarts)


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
