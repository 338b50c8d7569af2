"""Where inference runs: ``auto`` (the first CUDA GPU when there is one, else the CPU) or a torch device;
and whether this CPU computes bf16 in hardware, which decides ``auto`` precision on the CPU."""

from __future__ import annotations

import functools

import torch

from saltseg.errors import SaltsegError


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``auto``/None -> ``cuda`` when available, else ``cpu``; any other name is checked to be usable.

    Raises :class:`SaltsegError` with one line (``--device cuda:3: ...``) for an unknown or absent device.
    """
    if name is None or str(name) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
        torch.empty(1, device=device)  # fails here, not mid-prediction, when the device is absent
    except (RuntimeError, AssertionError) as exc:  # unknown name, or torch without CUDA
        raise SaltsegError(f"--device {name}: {str(exc).strip().splitlines()[0]}") from None
    return device


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AMX tiles or AVX-512 BF16), so that bf16 autocast is the
    fast path. Without them oneDNN emulates bf16: on a 2-core AVX2 AMD EPYC a bf16 convolution took 15x
    as long as fp32 and a bf16 matmul 400x (BENCHMARKS.md, "CPUs without bf16 instructions")."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(bool(getattr(torch.cpu, name, lambda: False)()) for name in probes)
