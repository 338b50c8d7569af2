"""Batch prediction with optional horizontal-flip test-time augmentation."""

from __future__ import annotations

import contextlib

import torch


def autocast_for(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CPU and on CUDA GPUs that support it (as in training), else fp16 on CUDA;
    nothing elsewhere or when disabled."""
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cpu":
        return torch.autocast("cpu", dtype=torch.bfloat16)
    if device.type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        return torch.autocast("cuda", dtype=torch.bfloat16 if bf16 else torch.float16)
    return contextlib.nullcontext()


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module, x: torch.Tensor, hflip: bool = True, channels_last: bool = False
) -> dict[str, torch.Tensor]:
    """Sigmoid probabilities of one batch ``x`` (B,1,H,W in [0,1]), averaged with the mirrored image.

    Returns ``{"mask": (B,1,H,W) float32}`` and ``"salt": (B,)`` when the model has an image-level head.
    """
    views = [x, torch.flip(x, dims=[-1])] if hflip else [x]
    masks, salts = [], []
    for k, v in enumerate(views):
        if channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        out = model(v)
        if "mask" in out:
            m = torch.sigmoid(out["mask"].float())
            masks.append(torch.flip(m, dims=[-1]) if k == 1 else m)
        if "salt" in out:
            salts.append(torch.sigmoid(out["salt"].float()))
    result: dict[str, torch.Tensor] = {}
    if masks:
        result["mask"] = torch.stack(masks).mean(0).contiguous()
    if salts:
        result["salt"] = torch.stack(salts).mean(0)
    return result
