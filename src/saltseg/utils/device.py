"""Where inference runs: ``auto`` (the first CUDA GPU when there is one, else the CPU) or a torch device."""

from __future__ import annotations

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
