"""Segment images of any size (a whole seismic section) with models trained on small tiles.

The image is cut into overlapping ``tile`` x ``tile`` windows every ``stride`` pixels, the windows are
predicted in batches (flip TTA, bf16 autocast on CPU), and the window predictions are blended with a
smooth 2-D weight (a raised Hann window with a floor, so window edges still count) normalised by the
summed weights. Before windowing the image is padded by reflection: ``(tile - stride) // 2`` pixels on
each side so that border pixels lie inside windows rather than on their edges, plus what the window grid
needs, split between both ends. With ``stride == tile`` on an image made of whole tiles nothing is padded and
the result equals the per-tile predictions.

Memory is bounded: only one batch of windows exists at a time and predictions are accumulated into two
float32 arrays of the padded image's size.

Example:
    >>> from saltseg.inference.sliding import load_ensemble, predict_large
    >>> models, weights = load_ensemble(["runs/r1"])
    >>> probs = predict_large(models, section, weights=weights)  # section: (H, W) uint8
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from saltseg.errors import CheckpointError, DataError
from saltseg.predictor import EnsemblePredictor

__all__ = [
    "blend_window",
    "ensemble_of",
    "load_ensemble",
    "predict_large",
    "predict_large_with_spread",
    "window_starts",
]


# --------------------------------------------------------------------------- model arguments


def load_ensemble(
    paths: Sequence[str | Path], map_location: str = "cpu"
) -> tuple[list[torch.nn.Module], list[float]]:
    """Load every model named by ``paths`` (checkpoints, fold, run or ensemble folders) in eval mode,
    with ensemble weights summing to 1."""
    from saltseg.artifacts import resolve_models
    from saltseg.checkpoints import load_model

    members = resolve_models(list(paths))
    return [load_model(m.path, map_location=map_location) for m in members], [m.weight for m in members]


# --------------------------------------------------------------------------- windows


def window_starts(length: int, tile: int, stride: int) -> tuple[list[int], int, int]:
    """Window starts along one axis of a padded image, and the pads ``(before, after)``.

    The axis of ``length`` pixels is padded by at least ``(tile - stride) // 2`` on each side (so its
    first and last pixels are not on a window edge), plus what windows every ``stride`` pixels need to
    cover it, split evenly between both ends.
    Returns ``(starts, pad_before, pad_after)`` with starts in padded coordinates.
    """
    if tile < 1 or not 1 <= stride <= tile:
        raise ValueError(f"need 1 <= stride <= tile, got tile={tile}, stride={stride}")
    margin = (tile - stride) // 2
    n = max(1, -(-(length + 2 * margin - tile) // stride) + 1)
    extra = (n - 1) * stride + tile - length - 2 * margin  # spread evenly on both sides
    before = margin + extra // 2
    return [i * stride for i in range(n)], before, (n - 1) * stride + tile - length - before


def blend_window(tile: int, floor: float = 0.1) -> np.ndarray:
    """Separable 2-D blending weight of a ``tile`` x ``tile`` window: ``floor + (1 - floor) * hann``
    per axis (peak 1 in the middle, ``floor`` at the very edge), float32."""
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    hann = np.sin(np.pi * (np.arange(tile) + 0.5) / tile) ** 2
    w = floor + (1.0 - floor) * hann
    return np.outer(w, w).astype(np.float32)


def _as_unit(image: np.ndarray) -> np.ndarray:
    """(H, W) uint8 -> float32 / 255; a float image is taken as already in [0, 1] (clipped)."""
    image = np.asarray(image)
    if image.ndim != 2:
        raise DataError(f"expected a 2-D image (H, W), got shape {image.shape}")
    if image.size == 0:
        raise DataError(f"empty image of shape {image.shape}")
    if image.dtype == np.uint8:
        return image.astype(np.float32) / 255.0
    if np.issubdtype(image.dtype, np.floating) or np.issubdtype(image.dtype, np.integer):
        unit = image.astype(np.float32)
        if not np.isfinite(unit).all():
            raise DataError("the image holds NaN or infinite values")
        return np.clip(unit, 0.0, 1.0)
    raise DataError(f"unsupported image dtype {image.dtype}")


def _batches(starts_y: list[int], starts_x: list[int], size: int) -> Iterator[list[tuple[int, int]]]:
    batch: list[tuple[int, int]] = []
    for y in starts_y:
        for x in starts_x:
            batch.append((y, x))
            if len(batch) == size:
                yield batch
                batch = []
    if batch:
        yield batch


def ensemble_of(
    models: torch.nn.Module | Sequence[torch.nn.Module],
    weights: Sequence[float] | None = None,
    **options: Any,
) -> EnsemblePredictor:
    """An :class:`EnsemblePredictor` of loaded ``models`` on the device their weights are on
    (``options``: hflip, channels_last, autocast, backend, precision)."""
    members = [models] if isinstance(models, torch.nn.Module) else list(models)
    if not members:
        raise ValueError("an ensemble needs at least one model")
    if weights is not None and len(weights) != len(members):
        raise ValueError(f"{len(weights)} weights for {len(members)} models")
    param = next(iter(members[0].parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    return EnsemblePredictor(members, weights, device=device, **options)


@torch.inference_mode()
def predict_large(
    models: torch.nn.Module | Sequence[torch.nn.Module] | EnsemblePredictor,
    image: np.ndarray,
    tile: int = 101,
    stride: int = 50,
    batch_size: int = 64,
    hflip: bool = True,
    *,
    weights: Sequence[float] | None = None,
    floor: float = 0.1,
    autocast: bool = True,
    channels_last: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Salt probability of every pixel of an image of any size, by blended overlapping windows.

    Args:
        models: A model or an ensemble (probabilities averaged with ``weights``); each takes
            (B, 1, tile, tile) in [0, 1] and returns ``{"mask": logits, ...}`` (``SaltModel``). Or an
            :class:`~saltseg.predictor.EnsemblePredictor` built once for many images (then its own
            weights, TTA, autocast, memory format and backend apply, and those arguments are ignored).
        image: (H, W) uint8 (divided by 255) or float already in [0, 1]; depth/time down the rows,
            as in the TGS tiles.
        tile: Window side, the tile size the models were trained on.
        stride: Step between windows (``stride == tile``: no overlap).
        batch_size: Windows per forward pass (bounds the memory).
        hflip: Average each window with its mirror image (flip TTA).
        weights: Ensemble weights (default: equal).
        floor: Blend weight at the window edge relative to its centre (see :func:`blend_window`).
        autocast: bf16 autocast where the device has bf16 (fp16 on CUDA GPUs without it, fp32 on CPUs
            without it; ``saltseg.predictor.autocast_for``).
        channels_last: Convert the models (in place) and the windows to channels-last memory format
            (faster bf16 convolutions on CPU for most encoders).
        progress: Called with ``(windows done, windows total)`` after each batch.

    Returns:
        (H, W) float32 probabilities in [0, 1].
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    predictor = (
        models
        if isinstance(models, EnsemblePredictor)
        else ensemble_of(models, weights, hflip=hflip, channels_last=channels_last, autocast=autocast)
    )

    out, _ = _slide(predictor, image, tile, stride, batch_size, floor, progress, members=False)
    return out


@torch.inference_mode()
def predict_large_with_spread(
    predictor: EnsemblePredictor,
    image: np.ndarray,
    tile: int = 101,
    stride: int = 50,
    batch_size: int = 64,
    floor: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_large` of an ensemble, and the spread of its members: the weighted standard
    deviation, per pixel, of each member's blended probabilities around the ensemble's (zero for one
    model). Members without a mask head are left out of both."""
    out, spread = _slide(predictor, image, tile, stride, batch_size, floor, None, members=True)
    assert spread is not None
    return out, spread


def _slide(
    predictor: EnsemblePredictor,
    image: np.ndarray,
    tile: int,
    stride: int,
    batch_size: int,
    floor: float,
    progress: Callable[[int, int], None] | None,
    members: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The blended windows of :func:`predict_large` (and, with ``members``, the members' spread)."""
    unit = _as_unit(image)
    height, width = unit.shape
    starts_y, top, bottom = window_starts(height, tile, stride)
    starts_x, left, right = window_starts(width, tile, stride)
    # np.pad's reflect mode reflects repeatedly when a pad is wider than the image.
    padded = (
        np.pad(unit, ((top, bottom), (left, right)), mode="reflect") if top + bottom + left + right else unit
    )
    blend = blend_window(tile, floor)
    acc = np.zeros(padded.shape, dtype=np.float32)
    norm = np.zeros(padded.shape, dtype=np.float32)
    per_member: dict[int, np.ndarray] = {}
    total, done = len(starts_y) * len(starts_x), 0
    for batch in _batches(starts_y, starts_x, batch_size):
        windows = np.stack([padded[y : y + tile, x : x + tile] for y, x in batch])
        probs, _, member_probs = predictor.predict_unit(
            torch.from_numpy(windows)[:, None], with_members=members
        )
        if probs is None:
            raise CheckpointError("a model without a pixel mask output (a classifier) cannot segment")
        pred = probs.float().cpu().numpy()
        for (y, x), p in zip(batch, pred, strict=True):
            acc[y : y + tile, x : x + tile] += p * blend
            norm[y : y + tile, x : x + tile] += blend
        for m, mp in enumerate(member_probs):
            if mp is None:
                continue
            target = per_member.setdefault(m, np.zeros(padded.shape, dtype=np.float32))
            for (y, x), p in zip(batch, mp.float().cpu().numpy(), strict=True):
                target[y : y + tile, x : x + tile] += p * blend
        done += len(batch)
        if progress is not None:
            progress(done, total)
    crop = (slice(top, top + height), slice(left, left + width))
    out = np.clip(acc[crop] / norm[crop], 0.0, 1.0).astype(np.float32, copy=False)
    if not members:
        return out, None
    weights = np.array([predictor.weights[m] for m in per_member], dtype=np.float64)
    weights /= weights.sum()
    var = np.zeros(out.shape, dtype=np.float64)
    for w, m in zip(weights, per_member, strict=True):
        var += w * (per_member[m][crop] / norm[crop] - out) ** 2
    return out, np.sqrt(var).astype(np.float32)
