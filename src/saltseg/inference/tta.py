"""Flip TTA and ensemble averaging of probabilities, in plain torch: what every backend's output is
compared with, and what the exported ensemble graph (:class:`saltseg.inference.export.EnsembleProbabilities`)
computes inside ONNX."""

from __future__ import annotations

from collections.abc import Sequence

import torch


@torch.no_grad()
def predict_batch(
    model: torch.nn.Module,
    x: torch.Tensor,
    hflip: bool = True,
    channels_last: bool = False,
    batch_views: bool = False,
) -> dict[str, torch.Tensor]:
    """Sigmoid probabilities of one batch ``x`` (B,1,H,W in [0,1]), averaged with the mirrored image.

    ``batch_views`` sends the mirrored copy through the model in the same call as the original (one
    batch of 2B): what the exported graphs do (ONNX Runtime gains, OpenVINO is level); torch's own CPU
    path is faster with two calls of B (BENCHMARKS.md, "Inference backends").

    Returns ``{"mask": (B,1,H,W) float32}`` and ``"salt": (B,)`` when the model has an image-level head.
    """
    n = x.shape[0]
    views = [torch.cat([x, torch.flip(x, dims=[-1])])] if hflip and batch_views else [x]
    if hflip and not batch_views:
        views.append(torch.flip(x, dims=[-1]))
    outs = []
    for v in views:
        if channels_last:
            v = v.contiguous(memory_format=torch.channels_last)
        outs.append(model(v))
    result: dict[str, torch.Tensor] = {}
    for name in ("mask", "salt"):
        if name not in outs[0]:
            continue
        p = torch.cat([torch.sigmoid(o[name].float()) for o in outs])
        if not hflip:
            result[name] = p.contiguous()
            continue
        mirrored = torch.flip(p[n:], dims=[-1]) if name == "mask" else p[n:]
        result[name] = ((p[:n] + mirrored) / 2).contiguous()
    return result


def average_outputs(
    outputs: Sequence[dict[str, torch.Tensor]], weights: Sequence[float]
) -> dict[str, torch.Tensor]:
    """The ensemble's weighted average of its members' probabilities, output by output: a member
    without an output (a classifier has no ``mask``) is left out of that output's average."""
    result: dict[str, torch.Tensor] = {}
    for name in ("mask", "salt"):
        parts = [(w, out[name]) for w, out in zip(weights, outputs, strict=True) if name in out]
        if not parts:
            continue
        acc = parts[0][0] * parts[0][1]
        for w, value in parts[1:]:
            acc = acc + w * value
        result[name] = acc / sum(w for w, _ in parts)
    return result
