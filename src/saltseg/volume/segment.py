"""Segment the salt in a SEG-Y volume section by section and write the result as SEG-Y.

Every inline (or crossline) of a 3-D volume, or the single 2-D section of a file read in trace mode,
is scaled to uint8 (:func:`saltseg.volume.segy.to_uint8`), transposed so that time/depth runs down the
rows as in the TGS tiles, segmented with :func:`saltseg.inference.sliding.predict_large` and written
into a new SEG-Y file with the input's headers. Only one section is in memory at a time (trace mode
works on blocks of traces with an overlap), so volumes larger than memory can be processed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from saltseg.backends import BackendName
from saltseg.errors import DataError, SaltsegError
from saltseg.inference.sliding import ensemble_of, predict_large
from saltseg.predictor import EnsemblePredictor
from saltseg.utils.io import check_output_file
from saltseg.volume.segy import amplitude_clip, create_like, open_segy, to_uint8

__all__ = ["VolumeReport", "segment_segy"]

Axis = Literal["inline", "crossline", "traces"]
TRACE_BLOCK = 4096


@dataclass
class VolumeReport:
    """What :func:`segment_segy` did."""

    out: Path
    mode: Literal["3d", "traces"]
    axis: Axis
    shape: tuple[int, ...]
    clip: float
    salt_fraction: float
    sections: int
    seconds: float
    note: str | None
    non_finite: int = 0  # NaN/Inf amplitudes replaced by zero (``nan_as="zero"``)
    backend: str = "torch"  # the inference backend that ran the models


def check_section_options(
    threshold: float | None, tile: int, stride: int, batch_size: int, clip: float | None, nan_as: str
) -> None:
    """The options every survey path shares (this one and :func:`saltseg.volume.predict_survey`), checked
    before anything is read or written: one :class:`SaltsegError` per bad value."""
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise SaltsegError(f"the threshold must be in [0, 1], got {threshold}")
    if tile < 1 or not 1 <= stride <= tile:
        raise SaltsegError(f"need 1 <= stride <= tile, got stride {stride} and tile {tile}")
    if batch_size < 1:
        raise SaltsegError(f"the batch size must be >= 1, got {batch_size}")
    if clip is not None and not clip > 0:
        raise SaltsegError(f"the clip amplitude must be positive, got {clip}")
    if nan_as not in ("error", "zero"):
        raise SaltsegError(f"nan_as must be 'error' or 'zero', got {nan_as!r}")


def segment_segy(
    models: Sequence[torch.nn.Module],
    src: str | Path,
    dst: str | Path,
    *,
    weights: Sequence[float] | None = None,
    axis: Axis = "inline",
    iline: int = 189,
    xline: int = 193,
    endian: Literal["big", "little"] = "big",
    tile: int = 101,
    stride: int = 50,
    batch_size: int = 64,
    hflip: bool = True,
    threshold: float | None = None,
    clip_percentile: float = 99.0,
    clip: float | None = None,
    reverse_polarity: bool = False,
    nan_as: Literal["error", "zero"] = "error",
    channels_last: bool = False,
    notify: Callable[[str], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
    backend: BackendName = "torch",
    precision: str = "auto",
) -> VolumeReport:
    """Write the salt probability (or, with ``threshold``, the 0/1 mask) of every sample of ``src``.

    Args:
        models: Loaded models (see :func:`saltseg.inference.sliding.load_ensemble`).
        src: Input SEG-Y file.
        dst: Output SEG-Y file (written atomically; same geometry and headers, float samples).
        weights: Ensemble weights (default equal).
        axis: Segment ``inline`` or ``crossline`` sections of a 3-D volume, or force ``traces`` mode
            (all traces in file order form one section). Files without a usable 3-D geometry are
            read in trace mode whatever ``axis`` says (and ``notify`` is told why).
        iline: Trace header byte of the inline number.
        xline: Trace header byte of the crossline number.
        endian: Byte order of the file.
        tile: Window side (the training tile size).
        stride: Step between windows.
        batch_size: Windows per forward pass.
        hflip: Flip TTA.
        threshold: Write ``probability > threshold`` as 0/1 instead of probabilities.
        clip_percentile: Percentile of |amplitude| mapped to the ends of the uint8 range.
        clip: Absolute clip amplitude (overrides ``clip_percentile``).
        nan_as: NaN/Inf amplitudes are an ``error`` (the default: a silent zero would be a wrong answer),
            or ``zero`` amplitude, counted in the report.
        reverse_polarity: Negate the amplitudes before scaling.
        channels_last: Channels-last models and windows (see ``predict_large``).
        notify: Called with one-line notes (trace-mode fallback).
        progress: Called with ``(sections done, sections total)``.
        backend: Inference backend (:mod:`saltseg.backends`; ``auto`` picks the fastest that passes its
            accuracy check); the report names the one used.
        precision: Of a graph backend: ``auto``, ``fp32`` or ``int8`` (calibrated on the first windows).
    """
    if axis not in ("inline", "crossline", "traces"):
        raise SaltsegError(f"axis must be inline, crossline or traces, got {axis!r}")
    check_section_options(threshold, tile, stride, batch_size, clip, nan_as)
    check_output_file(dst, inputs=[src])  # never the survey itself, never a folder
    start = time.perf_counter()
    non_finite = 0
    predictors: list[EnsemblePredictor] = []  # built on the first section, used for all

    def predictor() -> EnsemblePredictor:
        if not predictors:
            options = {
                "hflip": hflip,
                "channels_last": channels_last,
                "backend": backend,
                "precision": precision,
            }
            predictors.append(ensemble_of(models, weights, **options))
        return predictors[0]

    def segment(section: np.ndarray, where: str) -> np.ndarray:
        """(traces, samples) amplitudes -> (traces, samples) float32 output."""
        nonlocal non_finite
        bad = int((~np.isfinite(section)).sum())
        if bad and nan_as == "error":
            raise DataError(
                f"{bad} amplitude(s) of {where} are NaN or Inf; give --nan-as zero to read them as zero "
                "amplitude (they are counted in the report)",
                src,
            )
        non_finite += bad
        image = to_uint8(
            np.nan_to_num(section, nan=0.0, posinf=0.0, neginf=0.0), amp_clip, reverse_polarity
        ).T
        probs = predict_large(predictor(), image, tile=tile, stride=stride, batch_size=batch_size).T
        return (probs > threshold).astype(np.float32) if threshold is not None else probs

    with open_segy(src, iline, xline, geometry=axis != "traces", endian=endian) as (f, note):
        if note and notify is not None:
            notify(note)
        amp_clip = float(clip) if clip is not None else amplitude_clip(f, clip_percentile)
        salt = 0.0
        with create_like(f, dst) as out:
            if f.unstructured:
                mode, used_axis = "traces", "traces"
                n, margin = f.tracecount, max(tile, 2 * stride)
                blocks = list(range(0, n, TRACE_BLOCK))
                shape: tuple[int, ...] = (n, len(f.samples))
                for k, a in enumerate(blocks):
                    b = min(n, a + TRACE_BLOCK)
                    lo, hi = max(0, a - margin), min(n, b + margin)
                    section = np.asarray(f.trace.raw[lo:hi], dtype=np.float32)
                    result = segment(section, f"traces {lo}-{hi - 1}")[a - lo : b - lo]
                    out.trace[a:b] = np.ascontiguousarray(result)
                    salt += float((result > 0.5).sum())
                    if progress is not None:
                        progress(k + 1, len(blocks))
            else:
                mode, used_axis = "3d", axis
                lines, reader, writer = (
                    (f.ilines, f.iline, out.iline) if axis == "inline" else (f.xlines, f.xline, out.xline)
                )
                shape = (len(f.ilines), len(f.xlines), len(f.samples))
                for k, line in enumerate(lines):
                    result = segment(np.asarray(reader[line], dtype=np.float32), f"{used_axis} {line}")
                    writer[line] = np.ascontiguousarray(result)
                    salt += float((result > 0.5).sum())
                    if progress is not None:
                        progress(k + 1, len(lines))
    return VolumeReport(
        out=Path(dst),
        mode=mode,
        axis=used_axis,
        shape=shape,
        clip=amp_clip,
        salt_fraction=salt / float(np.prod(shape)),
        sections=len(blocks) if mode == "traces" else len(lines),
        seconds=time.perf_counter() - start,
        note=note,
        non_finite=non_finite,
        backend=(predictors[0].backend if predictors else None) or "torch",
    )
