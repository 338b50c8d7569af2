"""Kaggle run-length encoding of masks: column-major pixel order, 1-indexed ``start length`` pairs."""

from __future__ import annotations

import re

import numpy as np

from saltseg.errors import RLEError

TILE_SHAPE = (101, 101)
_INTEGER = re.compile(r"[+-]?[0-9]+")  # ASCII digits only: no '1_000', no '1.0', no '١'
_MAX_VALUE = 2**40  # any larger start or length is past any image, and would overflow int64 sums


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2-D binary mask as Kaggle RLE (pixels numbered top to bottom, then left to right).

    An empty mask encodes to the empty string.

    Example:
        >>> rle_encode(np.array([[0, 1], [1, 1]], dtype=bool))
        '2 3'
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2-D mask, got shape {mask.shape}")
    flat = mask.astype(bool, copy=False).ravel(order="F")
    padded = np.concatenate([[False], flat, [False]])
    changes = np.flatnonzero(padded[1:] != padded[:-1]) + 1
    if changes.size == 0:
        return ""
    starts, ends = changes[0::2], changes[1::2]
    runs = np.empty(starts.size * 2, dtype=np.int64)
    runs[0::2] = starts
    runs[1::2] = ends - starts
    return " ".join(map(str, runs.tolist()))


def rle_decode(rle: str | float | None, shape: tuple[int, int] = TILE_SHAPE) -> np.ndarray:
    """Decode a Kaggle RLE string into a boolean mask of ``shape``.

    Raises:
        RLEError: for an odd count of numbers, a non-integer, a start below 1, a zero or negative
            length, runs that are unsorted or overlap, or a run past the end of the image.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"rle_decode expects a 2-D shape, got {shape}")
    mask = np.zeros(shape[0] * shape[1], dtype=bool)
    if rle is None or (isinstance(rle, float) and np.isnan(rle)):
        return mask.reshape(shape, order="F")
    text = str(rle).strip()
    if not text:
        return mask.reshape(shape, order="F")
    tokens = text.split()
    if len(tokens) % 2:
        raise RLEError(f"odd number of values ({len(tokens)}) in RLE: expected 'start length' pairs")
    bad = next((t for t in tokens if not _INTEGER.fullmatch(t)), None)
    if bad is not None:
        raise RLEError(f"non-integer value {bad!r} in RLE")
    too_big = next((t for t in tokens if abs(int(t)) > _MAX_VALUE), None)
    if too_big is not None:
        raise RLEError(f"value {too_big} in RLE is out of range for a {shape} image ({mask.size} pixels)")
    values = np.array([int(t) for t in tokens], dtype=np.int64)
    starts, lengths = values[0::2], values[1::2]
    if (starts < 1).any():
        raise RLEError(f"run start {int(starts[starts < 1][0])} < 1 in RLE (pixels are numbered from 1)")
    if (lengths < 1).any():
        raise RLEError(f"run length {int(lengths[lengths < 1][0])} < 1 in RLE")
    ends = starts + lengths - 1
    if ends.max() > mask.size:
        raise RLEError(f"run ends at pixel {int(ends.max())}, past the last pixel {mask.size} of {shape}")
    if starts.size > 1:
        unsorted = np.flatnonzero(starts[1:] < starts[:-1])
        if unsorted.size:
            j = int(unsorted[0]) + 1
            raise RLEError(
                f"runs are not sorted by start in RLE: run {j + 1} starts at {int(starts[j])}, "
                f"before run {j} at {int(starts[j - 1])}"
            )
        overlap = np.flatnonzero(starts[1:] <= ends[:-1])
        if overlap.size:
            j = int(overlap[0]) + 1
            raise RLEError(
                f"runs overlap in RLE: run {j + 1} starts at pixel {int(starts[j])}, "
                f"inside run {j} ({int(starts[j - 1])}..{int(ends[j - 1])})"
            )
    for s, n in zip(starts.tolist(), lengths.tolist(), strict=True):
        mask[s - 1 : s - 1 + n] = True
    return mask.reshape(shape, order="F")
