"""A 3-D post-stack survey read block by block, from SEG-Y (segyio) or MDIO (``multidimio``).

:class:`Survey` is what the chunked predictor needs: the inline, crossline and sample axes, the live
traces (``live``: False where a trace is missing from an irregular grid, as MDIO's ``trace_mask``
records it) and :meth:`Survey.read` of a block of inlines or crosslines as float32. It is small and
picklable: every Dask worker reopens the file itself (once per process).

SEG-Y files must have a regular 3-D geometry here (segyio's inline / crossline sorting); a file with
missing traces or no usable geometry is converted first (``saltseg volume convert IN OUT.mdio``: MDIO
builds the grid from the trace headers, pads the missing traces and masks them).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from saltseg.errors import DataError

__all__ = ["Axis3D", "Survey", "open_survey", "survey_format"]

Axis3D = Literal["inline", "crossline"]
MDIO_SUFFIXES = (".mdio", ".zarr")
SEGY_SUFFIXES = (".sgy", ".segy")
CLIP_SECTIONS = 16  # sections sampled for the amplitude clip percentile


def survey_format(path: str | Path) -> Literal["segy", "mdio"]:
    """``mdio`` for a ``.mdio`` / ``.zarr`` path or a zarr folder, else ``segy``."""
    path = Path(path)
    if path.suffix.lower() in MDIO_SUFFIXES or (path / "zarr.json").exists() or (path / ".zgroup").exists():
        return "mdio"
    return "segy"


@dataclass(frozen=True)
class Survey:
    """A 3-D survey on disk: its axes, live traces and how to read it (see :func:`open_survey`)."""

    path: Path
    format: Literal["segy", "mdio"]
    ilines: np.ndarray
    xlines: np.ndarray
    samples: np.ndarray
    live: np.ndarray  # (ilines, xlines) bool: False for a trace missing from the grid
    sample_dim: str = "time"  # MDIO's vertical dimension (time or depth)
    iline_byte: int = 189
    xline_byte: int = 193
    endian: Literal["big", "little"] = "big"
    variable: str = "amplitude"  # MDIO's data variable
    coords: dict[str, np.ndarray] = field(default_factory=dict)  # cdp_x / cdp_y of an MDIO survey

    @property
    def shape(self) -> tuple[int, int, int]:
        """(ilines, xlines, samples)."""
        return len(self.ilines), len(self.xlines), len(self.samples)

    @property
    def nbytes(self) -> int:
        """Size of the float32 amplitudes."""
        return int(np.prod(self.shape)) * 4

    def length(self, axis: Axis3D) -> int:
        """Sections along ``axis``."""
        return len(self.ilines) if axis == "inline" else len(self.xlines)

    def read(self, axis: Axis3D, start: int, stop: int) -> np.ndarray:
        """Amplitudes of sections ``[start, stop)`` along ``axis`` (indices, not line numbers) as float32:
        (k, xlines, samples) for inlines, (ilines, k, samples) for crosslines; missing traces are 0."""
        if self.format == "mdio":
            var = _mdio_dataset(self.path)[self.variable]
            where = {"inline": slice(start, stop)} if axis == "inline" else {"crossline": slice(start, stop)}
            data = np.asarray(var.isel(where).values, dtype=np.float32)
            live = self.live[start:stop] if axis == "inline" else self.live[:, start:stop]
            data[~live] = 0.0  # MDIO fills missing traces with NaN
            return data
        f = _segy_file(self.path, self.iline_byte, self.xline_byte, self.endian)
        if axis == "inline":
            return np.stack(
                [np.asarray(f.iline[int(il)], dtype=np.float32) for il in self.ilines[start:stop]]
            )
        return np.stack(
            [np.asarray(f.xline[int(xl)], dtype=np.float32) for xl in self.xlines[start:stop]], axis=1
        )

    def _sampled_live_amplitudes(self) -> np.ndarray:
        """Finite amplitudes of the live traces of up to :data:`CLIP_SECTIONS` inlines spread over the
        survey (the same sample in every worker)."""
        n = len(self.ilines)
        picks = np.unique(np.linspace(0, n - 1, min(n, CLIP_SECTIONS)).round().astype(int))
        values = np.concatenate(
            [self.read("inline", int(i), int(i) + 1)[0][self.live[int(i)]].ravel() for i in picks]
        )
        return values[np.isfinite(values)]

    def amplitude_mapping(self, mean: float, std: float) -> tuple[float, float]:
        """``(gain, offset)`` of the linear map to uint8 that gives the survey's amplitudes the training
        tiles' pixel mean and standard deviation (``mean``, ``std`` of image/255, as a standardising model
        stores them), measured robustly: the median lands on the mean, half the 16-84 percentile range on
        the standard deviation."""
        values = self._sampled_live_amplitudes()
        if values.size == 0:
            raise DataError("no finite amplitude in the sampled live traces", self.path)
        p16, p50, p84 = np.percentile(values, [16, 50, 84])
        spread = (p84 - p16) / 2
        if not spread > 0:
            raise DataError(
                "the amplitudes have no spread (a constant survey?): use --amplitude clip", self.path
            )
        gain = 255.0 * std / spread
        return float(gain), float(255.0 * mean - gain * p50)

    def amplitude_clip(self, percentile: float = 99.0) -> float:
        """The ``percentile`` of |amplitude| of the live traces of up to :data:`CLIP_SECTIONS` inlines spread
        over the survey (1.0 if that is zero or not finite): the same number in every worker."""
        if not 0.0 < percentile <= 100.0:
            raise DataError(f"the clip percentile must be in (0, 100], got {percentile}")
        values = np.abs(self._sampled_live_amplitudes())
        clip = float(np.percentile(values, percentile)) if values.size else 0.0
        return clip if np.isfinite(clip) and clip > 0 else 1.0


def _stamp(path: Path) -> int:
    """The modification time of a file, or of a zarr folder's metadata: a rewritten survey is reopened."""
    meta = path / "zarr.json"
    return (meta if meta.exists() else path).stat().st_mtime_ns


def _segy_file(path: Path, iline: int, xline: int, endian: str):
    """The SEG-Y file opened once per process (a Dask worker reads many blocks of it)."""
    return _open_segy_cached(path, _stamp(path), iline, xline, endian)


@functools.lru_cache(maxsize=4)
def _open_segy_cached(path: Path, stamp: int, iline: int, xline: int, endian: str):
    import segyio

    return segyio.open(str(path), "r", iline=iline, xline=xline, strict=True, endian=endian)


def _mdio_dataset(path: Path):
    """The MDIO dataset opened once per process (lazily: blocks are read on demand)."""
    return _open_mdio_cached(path, _stamp(path))


@functools.lru_cache(maxsize=4)
def _open_mdio_cached(path: Path, stamp: int):
    from mdio import open_mdio

    return open_mdio(path)


def open_survey(
    path: str | Path,
    iline: int = 189,
    xline: int = 193,
    endian: Literal["big", "little"] = "big",
) -> Survey:
    """Open a 3-D post-stack survey (SEG-Y with a regular geometry, or MDIO) without reading its traces.

    Raises:
        DataError: One line naming the file: missing, not SEG-Y / MDIO, no 3-D geometry (with the
            header bytes to try or the conversion to MDIO that pads missing traces), pre-stack data.
    """
    path = Path(path)
    if not path.exists():
        raise DataError("survey not found", path)
    if survey_format(path) == "mdio":
        return _open_mdio(path)
    from saltseg.volume.segy import open_segy

    with open_segy(path, iline, xline, endian=endian) as (f, note):
        if f.unstructured:
            raise DataError(
                f"{note}. Convert it with `saltseg volume convert {path} OUT.mdio --iline {iline} --xline "
                f"{xline}`: MDIO builds the grid from the trace headers and masks the missing traces "
                "(or run `saltseg volume predict` with a SEG-Y output to segment it as one 2-D section)",
                path,
            )
        ilines, xlines = np.asarray(f.ilines), np.asarray(f.xlines)
        samples = np.asarray(f.samples, dtype=np.float64)
    return Survey(
        path=path.resolve(),
        format="segy",
        ilines=ilines,
        xlines=xlines,
        samples=samples,
        live=np.ones((len(ilines), len(xlines)), bool),
        iline_byte=int(iline),
        xline_byte=int(xline),
        endian=endian,
    )


def _open_mdio(path: Path) -> Survey:
    try:
        ds = _mdio_dataset(path.resolve())
    except Exception as exc:  # zarr's and xarray's own errors
        raise DataError(f"not a readable MDIO / zarr dataset ({type(exc).__name__}: {exc})", path) from None
    attrs = ds.attrs.get("attributes", {}) or {}
    variable = attrs.get("defaultVariableName", "amplitude")
    if variable not in ds:
        raise DataError(f"no variable {variable!r} in the MDIO dataset (has {sorted(ds.data_vars)})", path)
    dims = tuple(ds[variable].dims)
    if len(dims) != 3 or dims[:2] != ("inline", "crossline"):
        raise DataError(
            f"expected a 3-D post-stack MDIO dataset with dimensions (inline, crossline, time|depth), "
            f"got {dims}",
            path,
        )
    live = (
        np.asarray(ds["trace_mask"].values, bool)
        if "trace_mask" in ds
        else np.ones(ds[variable].shape[:2], bool)
    )
    coords = {name: np.asarray(ds[name].values) for name in ("cdp_x", "cdp_y") if name in ds.coords}
    return Survey(
        path=path.resolve(),
        format="mdio",
        ilines=np.asarray(ds["inline"].values),
        xlines=np.asarray(ds["crossline"].values),
        samples=np.asarray(ds[dims[2]].values, dtype=np.float64),
        live=live,
        sample_dim=dims[2],
        variable=variable,
        coords=coords,
    )
