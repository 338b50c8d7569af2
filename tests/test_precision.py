"""``auto`` precision on the CPU: bf16 only where the CPU has bf16 instructions, fp32 elsewhere, in
training (Lightning's precision, the budget's timing) and in prediction (the torch backend's autocast)."""

from __future__ import annotations

import pytest
import torch

import saltseg.backends as backends
import saltseg.training.runtime as runtime
from saltseg.backends import autocast_for
from saltseg.training.config import parse_config
from saltseg.utils.device import cpu_has_native_bf16


def cpu_config(precision: str = "auto"):
    return parse_config({"train": {"accelerator": "cpu", "precision": precision}})


@pytest.mark.parametrize(("native", "expected"), [(True, "bf16-mixed"), (False, "32-true")])
def test_auto_training_precision_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, native: bool, expected: str
) -> None:
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    assert runtime.resolve_precision(cpu_config()) == expected
    assert runtime.resolve_precision(cpu_config("bf16-mixed")) == "bf16-mixed"  # a chosen one is kept


@pytest.mark.parametrize(("native", "dtype"), [(True, torch.bfloat16), (False, torch.float32)])
def test_cpu_autocast_follows_the_cpu(
    monkeypatch: pytest.MonkeyPatch, native: bool, dtype: torch.dtype
) -> None:
    monkeypatch.setattr(backends, "cpu_has_native_bf16", lambda: native)
    conv = torch.nn.Conv2d(1, 2, 3)
    with torch.no_grad(), autocast_for(torch.device("cpu")):
        assert conv(torch.zeros(1, 1, 8, 8)).dtype == dtype
    with torch.no_grad(), autocast_for(torch.device("cpu"), enabled=False):
        assert conv(torch.zeros(1, 1, 8, 8)).dtype == torch.float32


def test_native_bf16_is_what_torch_reports() -> None:
    reported = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert cpu_has_native_bf16() is bool(reported)
