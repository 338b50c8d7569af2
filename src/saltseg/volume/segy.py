"""SEG-Y input and output with segyio: opening with a clear fallback, amplitude scaling, header copies.

A SEG-Y file is opened as a 3-D post-stack volume when segyio can infer its geometry from the inline
and crossline numbers in the trace headers (bytes 189 and 193 by default; many files use other bytes,
e.g. 9 and 21 or 5 and 17: pass them as ``iline`` / ``xline``). When the geometry cannot be inferred
the file is opened in *trace mode* (``ignore_geometry=True``): its traces, in file order, form one 2-D
section of traces x samples, and a note says so.

Amplitudes are mapped to uint8 like the TGS training tiles: clipped at a percentile of the absolute
amplitude (99 by default, estimated on traces spread over the file) and mapped linearly to 0..255
with zero amplitude at 128.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import segyio

from saltseg.errors import DataError, SaltsegError
from saltseg.utils.io import atomic_path

__all__ = [
    "SegyVolume",
    "amplitude_clip",
    "create_like",
    "open_segy",
    "read_volume",
    "sample_format",
    "to_uint8",
]

IEEE_FLOAT = 5
FLOAT_FORMATS = (1, 5)  # 4-byte IBM float, 4-byte IEEE float
_HEADER_BYTES = {int(f) for f in segyio.TraceField.enums()}


@dataclass
class SegyVolume:
    """A SEG-Y file read into memory.

    Attributes:
        data: (ilines, xlines, samples) float32 for a 3-D volume; (1, traces, samples) in trace mode.
        ilines: Inline numbers (3-D) or ``None``.
        xlines: Crossline numbers (3-D) or ``None``.
        samples: Sample times / depths from the binary header.
        mode: ``"3d"`` or ``"traces"``.
        note: Why the file was read in trace mode, or ``None``.
    """

    data: np.ndarray
    ilines: np.ndarray | None
    xlines: np.ndarray | None
    samples: np.ndarray
    mode: Literal["3d", "traces"]
    note: str | None = field(default=None)


def _check_byte(name: str, value: int) -> None:
    if int(value) not in _HEADER_BYTES:
        raise SaltsegError(
            f"--{name} {value} is not the first byte of a SEG-Y trace header field "
            "(common choices: 189/193 standard, 9/21, 5/17)"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@contextlib.contextmanager
def open_segy(
    path: str | Path,
    iline: int = 189,
    xline: int = 193,
    *,
    geometry: bool = True,
    endian: Literal["big", "little"] = "big",
) -> Iterator[tuple[segyio.SegyFile, str | None]]:
    """Open a SEG-Y file read-only as ``(file, note)``.

    Tries the 3-D geometry (``iline`` / ``xline`` header bytes) first when ``geometry``; if segyio
    cannot infer it, reopens in trace mode and ``note`` explains why. Pre-stack files (several offsets)
    are opened in trace mode too.

    Raises:
        DataError: If the file is missing or not a readable SEG-Y file (one line naming the file).
    """
    path = Path(path)
    _check_byte("iline", iline)
    _check_byte("xline", xline)
    if not path.exists():
        raise DataError("SEG-Y file not found", path)
    if not path.is_file():
        raise DataError("not a file (expected a SEG-Y file)", path)
    note: str | None = None
    f: segyio.SegyFile | None = None
    if geometry:
        try:
            f = segyio.open(str(path), "r", iline=int(iline), xline=int(xline), strict=True, endian=endian)
        except Exception as exc:  # segyio raises RuntimeError/OSError/ValueError/IndexError
            note = (
                f"could not infer the 3-D geometry from the inline (byte {iline}) and crossline "
                f"(byte {xline}) trace headers ({_first_line(exc)})"
            )
        else:
            if f.unstructured or len(f.offsets) > 1:
                note = (
                    f"the file is not a post-stack 3-D volume ({len(f.offsets)} offsets)"
                    if not f.unstructured
                    else "the file has no 3-D geometry"
                )
                f.close()
                f = None
    if f is None:
        try:
            f = segyio.open(str(path), "r", ignore_geometry=True, endian=endian)
        except Exception as exc:
            raise DataError(f"not a readable SEG-Y file ({_first_line(exc)})", path) from None
        if note is not None:
            note += (
                f"; reading it in trace mode as one 2-D section of {f.tracecount} traces x "
                f"{len(f.samples)} samples (for a 3-D volume give --iline/--xline with the header byte "
                "locations of the inline and crossline numbers)"
            )
    try:
        if f.tracecount < 1 or len(f.samples) < 1:
            raise DataError(
                f"no traces or no samples ({f.tracecount} traces, {len(f.samples)} samples)", path
            )
        yield f, note
    finally:
        f.close()


def sample_format(f: segyio.SegyFile) -> int:
    """The data sample format code of the binary header (1 IBM float, 5 IEEE float, 2/3/8 integers...)."""
    return int(f.bin[segyio.BinField.Format])


def read_volume(
    path: str | Path,
    iline: int = 189,
    xline: int = 193,
    *,
    geometry: bool = True,
    endian: Literal["big", "little"] = "big",
) -> SegyVolume:
    """Read a whole SEG-Y file into a float32 cube (ilines, xlines, samples), or (1, traces, samples)
    in trace mode (see :func:`open_segy`)."""
    with open_segy(path, iline, xline, geometry=geometry, endian=endian) as (f, note):
        samples = np.asarray(f.samples, dtype=np.float64)
        try:
            if f.unstructured:
                data = np.asarray(f.trace.raw[:], dtype=np.float32)[None]
                return SegyVolume(data, None, None, samples, "traces", note)
            data = np.stack([np.asarray(f.iline[il], dtype=np.float32) for il in f.ilines])
            return SegyVolume(data, np.asarray(f.ilines), np.asarray(f.xlines), samples, "3d", note)
        except (RuntimeError, OSError, ValueError) as exc:
            raise DataError(f"unreadable SEG-Y traces ({_first_line(exc)})", path) from None


def amplitude_clip(f: segyio.SegyFile, percentile: float = 99.0, max_traces: int = 2000) -> float:
    """The ``percentile`` of |amplitude| over up to ``max_traces`` traces spread evenly over the file
    (1.0 if that is zero or not finite)."""
    if not 0.0 < percentile <= 100.0:
        raise SaltsegError(f"the clip percentile must be in (0, 100], got {percentile}")
    idx = np.unique(np.linspace(0, f.tracecount - 1, min(f.tracecount, max_traces)).round().astype(int))
    values = np.abs(np.stack([np.asarray(f.trace[int(i)], dtype=np.float32) for i in idx]))
    values = values[np.isfinite(values)]
    clip = float(np.percentile(values, percentile)) if values.size else 0.0
    return clip if np.isfinite(clip) and clip > 0 else 1.0


def to_uint8(amplitudes: np.ndarray, clip: float, reverse_polarity: bool = False) -> np.ndarray:
    """Map amplitudes to uint8 like the training tiles: ``128 + 127 * a / clip``, clipped to 0..255
    (NaN -> 128)."""
    if not clip > 0:
        raise ValueError(f"clip must be positive, got {clip}")
    scaled = np.asarray(amplitudes, dtype=np.float32) * np.float32(
        (-127.0 if reverse_polarity else 127.0) / clip
    )
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=127.0, neginf=-127.0)
    return np.clip(np.rint(scaled + 128.0), 0, 255).astype(np.uint8)


@contextlib.contextmanager
def create_like(src: segyio.SegyFile, path: str | Path) -> Iterator[segyio.SegyFile]:
    """Create ``path`` atomically with ``src``'s geometry, textual, binary and trace headers.

    The sample format is kept when it is a float format (IBM or IEEE), else IEEE float: the caller
    writes float data (probabilities). The file appears at ``path`` only if the block succeeds.
    """
    spec = segyio.spec()
    spec.iline, spec.xline = src._il, src._xl
    spec.samples = np.asarray(src.samples)
    spec.ext_headers = src.ext_headers
    spec.endian = src.endian
    fmt = sample_format(src)
    spec.format = fmt if fmt in FLOAT_FORMATS else IEEE_FLOAT
    if src.unstructured:
        spec.tracecount = src.tracecount
    else:
        spec.ilines, spec.xlines, spec.offsets = src.ilines, src.xlines, src.offsets
        spec.sorting = src.sorting
    with atomic_path(path) as tmp, segyio.create(str(tmp), spec) as dst:
        for i in range(1 + src.ext_headers):
            dst.text[i] = src.text[i]
        dst.bin = src.bin
        dst.bin.update(format=spec.format)
        dst.header = src.header
        yield dst
