"""Loading local weight files into encoders and classifiers (never downloads anything)."""

from __future__ import annotations

import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from torch import nn

from saltseg.errors import CheckpointError

_PREFIXES = ("module.", "encoder.", "model.", "backbone.")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or a ``torch.save`` file (``weights_only=True``).

    A ``torch.save`` file may hold the state dict directly or under ``"state_dict"`` / ``"model"``.

    Raises:
        CheckpointError: If the file is missing, unreadable or holds no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("weights file not found", path=path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj: object = load_file(str(path), device="cpu")
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # not a pickle of tensors at all: damaged or foreign
            raise CheckpointError(
                "cannot read weights file (not a torch.save file, or damaged)", path=path
            ) from None
        # torch's message advises weights_only=False: wrong advice for a file of unknown origin
        raise CheckpointError(
            "refused: besides tensors the file holds pickled Python objects, which could run code when "
            "loaded; saltseg loads tensors only (save a state_dict, or convert the file to .safetensors)",
            path=path,
        ) from None
    except Exception as exc:
        text = str(exc).strip()
        first = text.splitlines()[0][:200] if text else type(exc).__name__
        raise CheckpointError(f"cannot read weights file ({first})", path=path) from None
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise CheckpointError("weights file does not hold a state dict", path=path)
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise CheckpointError("weights file holds no tensors", path=path)
    return state


def _key_variants(state: dict[str, torch.Tensor]) -> Iterable[dict[str, torch.Tensor]]:
    yield state
    for prefix in _PREFIXES:
        if any(k.startswith(prefix) for k in state):
            yield {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        yield {prefix + k: v for k, v in state.items()}


def load_weights(
    module: nn.Module, path: str | Path, ignore_missing: Iterable[str] = (), in_channels: int | None = None
) -> None:
    """Load a local weights file into ``module``, adapting the first convolution's input channels.

    Keys are matched as they are or with a common prefix (``module.``, ``encoder.``, ``model.``,
    ``backbone.``) added or stripped, whichever matches most. Extra keys in the file (e.g. an
    ImageNet classifier) are ignored; a 4-D weight whose input-channel count differs (e.g. an RGB
    stem loaded into a 1-channel model) is adapted with ``timm.models.adapt_input_conv``.

    Args:
        module: The module to initialise.
        path: The weights file.
        ignore_missing: Key prefixes of ``module`` allowed to be absent from the file (or to have
            another shape there, e.g. a classifier layer); those keep their initial values.
        in_channels: Input channels of ``module`` (only used in error messages).

    Raises:
        CheckpointError: If the file is missing/unreadable or does not fit ``module``.
    """
    from timm.models import adapt_input_conv

    state = read_state_dict(path)
    target = module.state_dict()
    best = max(_key_variants(state), key=lambda s: len(target.keys() & s.keys()))
    ignore = tuple(ignore_missing)
    missing = [
        k
        for k in target
        if k not in best and not k.endswith("num_batches_tracked") and not k.startswith(ignore)
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise CheckpointError(
            f"weights file does not fit the model: {len(missing)} of {len(target)} tensors missing ({shown})",
            path=path,
        )
    loaded: dict[str, torch.Tensor] = {}
    for key, value in best.items():
        if key not in target:
            continue
        want = target[key]
        if value.shape != want.shape:
            if key.startswith(ignore):
                continue
            if value.dim() == 4 and value.shape[0] == want.shape[0] and value.shape[2:] == want.shape[2:]:
                value = adapt_input_conv(int(want.shape[1]), value.float())
            else:
                raise CheckpointError(
                    f"weights file does not fit the model: {key} has shape {tuple(value.shape)}, "
                    f"expected {tuple(want.shape)}"
                    + (f" (model has {in_channels} input channels)" if in_channels is not None else ""),
                    path=path,
                )
        loaded[key] = value.to(dtype=want.dtype)
    module.load_state_dict(loaded, strict=False)
