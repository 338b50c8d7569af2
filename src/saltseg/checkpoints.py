"""Model weights as safetensors, with the model config in the file's metadata.

A checkpoint never unpickles code: weights are tensors (safetensors) and the config is JSON. The
metadata also holds a SHA-256 of the tensors (safetensors has no checksum of its own), verified on load,
and weights holding NaN or Inf are refused (they would predict empty masks without a word).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from saltseg import __version__
from saltseg.errors import CheckpointError
from saltseg.models import ModelConfig, create_model
from saltseg.utils.io import atomic_path

FORMAT = "saltseg-weights-v1"


def _plain_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    return {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}


def tensors_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors' names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save_weights(model: torch.nn.Module, path: str | Path, **info: Any) -> Path:
    """Save ``model``'s weights and config (``model.config``) to a safetensors file, atomically."""
    path = Path(path)
    config = getattr(getattr(model, "_orig_mod", model), "config", None)
    if not isinstance(config, ModelConfig):
        raise ValueError("save_weights expects a saltseg model with a ModelConfig in .config")
    meta = {
        "format": FORMAT,
        "saltseg_version": __version__,
        "model_config": config.model_dump_json(),
        "info": json.dumps(info, default=str),
    }
    state = _plain_state_dict(model)
    meta["tensors_sha256"] = tensors_digest(state)
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> tuple[ModelConfig, dict[str, Any]]:
    """The model config and info stored in a weights file, with clear errors for foreign files."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError("checkpoint not found", path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"not a readable safetensors file ({exc})", path) from None
    if meta.get("format") != FORMAT:
        raise CheckpointError("not a saltseg checkpoint (no saltseg metadata)", path)
    try:
        config = ModelConfig.model_validate_json(meta["model_config"])
    except KeyError:
        raise CheckpointError("the checkpoint's metadata has no model config", path) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "config"
        raise CheckpointError(
            f"the model config stored in the checkpoint is invalid ({where}: {err['msg']})", path
        ) from None
    try:
        info = json.loads(meta.get("info", "{}"))
    except json.JSONDecodeError:
        raise CheckpointError("the checkpoint's metadata 'info' is not valid JSON", path) from None
    return config, info if isinstance(info, dict) else {}


def load_model(path: str | Path, map_location: str = "cpu") -> torch.nn.Module:
    """Build the model described in ``path`` and load its weights (strict), in eval mode."""
    config, info = read_metadata(path)
    config = config.model_copy(update={"encoder_weights": None})
    model = create_model(config)
    try:
        state = load_file(str(path), device=map_location)
    except (SafetensorError, OSError) as exc:
        raise CheckpointError(f"corrupt weights ({exc})", path) from None
    with safe_open(str(path), framework="pt") as f:
        digest = (f.metadata() or {}).get("tensors_sha256")
    if digest is not None and tensors_digest(state) != digest:  # older files carry none
        raise CheckpointError("the weights are damaged: their checksum does not match the metadata", path)
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(
            f"{len(bad)} weight tensor(s) hold NaN or Inf (first: {bad[0]}); the training that wrote them "
            "diverged: retrain, for example with a lower learning rate",
            path,
        )
    # saltseg < 0.2 saved the never-used first attention of the skip-less last U-Net block: drop it
    expected = model.state_dict().keys()
    state = {k: v for k, v in state.items() if k in expected or ".attention1." not in k}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
        first = lines[1] if len(lines) > 1 else lines[0]
        if len(first) > 200:
            first = first[:197] + "..."
        raise CheckpointError(f"weights do not match the stored model config ({first})", path) from None
    model.info = info  # type: ignore[attr-defined]
    return model.eval()


def average_weights(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors of several weights files (integer buffers from
    the first)."""
    total: dict[str, torch.Tensor] = {}
    for p in paths:
        try:
            sd = load_file(str(p))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"corrupt weights ({exc})", p) from None
        for k, v in sd.items():
            if k not in total:
                total[k] = v.double() if v.is_floating_point() else v.clone()
            elif v.is_floating_point():
                total[k] += v.double()
    return {k: (v / len(paths)).float() if v.is_floating_point() else v for k, v in total.items()}


def init_from_checkpoint(model: torch.nn.Module, path: str | Path) -> int:
    """Copy every tensor of the saltseg checkpoint ``path`` into ``model`` (fine-tuning a whole model);
    returns the number of tensors. The two must match tensor for tensor: a missing, extra or differently
    shaped tensor is one :class:`CheckpointError` listing the first ones."""
    source = load_model(path).state_dict()
    target = model.state_dict()
    missing = [k for k in target if k not in source]
    extra = [k for k in source if k not in target]
    shapes = [
        f"{k} {tuple(source[k].shape)} vs {tuple(v.shape)}"
        for k, v in target.items()
        if k in source and source[k].shape != v.shape
    ]
    if missing or extra or shapes:
        parts = [
            f"{len(missing)} tensor(s) missing (first: {', '.join(missing[:3])})" if missing else "",
            f"{len(extra)} unknown (first: {', '.join(extra[:3])})" if extra else "",
            f"{len(shapes)} of another shape (first: {'; '.join(shapes[:2])})" if shapes else "",
        ]
        raise CheckpointError(
            "train.init_from: the checkpoint's model differs from this config's: "
            + "; ".join(p for p in parts if p)
            + " (start from a run of the same model config)",
            path,
        )
    model.load_state_dict(source, strict=True)
    return len(source)
