"""A synthetic 3-D survey with an exact salt label cube, written as SEG-Y (and, converted, as MDIO).

The physics of :mod:`saltseg.data.synth` in three dimensions: a layered reflectivity series (random layer
thicknesses and contrasts, convolved with a Ricker wavelet) mapped through a deformed "geological time"
field (dips, smooth folds, one planar fault with a throw, drag that lifts the layers beside the salt),
and one to three salt diapirs (a rounded cap on a narrower stem reaching the bottom of the volume) with a
weak chaotic interior and a strong reflection along their boundary (top salt positive, base negative).

Every inline is a function of the seed and its own index only, so a volume is generated block by block in
bounded memory (any size on disk) and the same seed gives the same survey whatever the block size.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.errors import DataError
from saltseg.utils.io import atomic_path

__all__ = ["SyntheticSurvey", "write_synthetic_segy"]

DT_US = 4000  # sample interval (microseconds)
BLOCK = 8  # inlines generated at a time


@dataclass(frozen=True)
class _Dome:
    cx: float
    cy: float
    top: float  # sample of the crest
    cap: float  # radius of the cap (traces)
    stem: float  # radius of the stem
    curvature: float  # how fast the top deepens away from the crest (samples per trace^2)


class SyntheticSurvey:
    """A synthetic survey of ``shape`` (inlines, crosslines, samples) drawn from ``seed``."""

    def __init__(self, shape: tuple[int, int, int], seed: int = 0) -> None:
        ni, nx, ns = (int(s) for s in shape)
        if min(ni, nx) < 1 or ns < 16:
            raise DataError(f"a synthetic survey needs at least 1 x 1 x 16 samples, got {shape}")
        self.shape = (ni, nx, ns)
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        span = float(max(ni, nx))
        # stratigraphy: reflectivity over 3 volume heights of geological time, convolved with a Ricker
        n = 3 * ns + 64
        thick = rng.uniform(2.0, 7.0)
        spikes = rng.random(n) < 1.0 / thick
        refl = spikes * rng.standard_normal(n) * np.exp(0.5 * rng.standard_normal(n // 32 + 1)).repeat(32)[:n]
        d = np.arange(-24, 25, dtype=np.float64)
        f = rng.uniform(0.04, 0.08)
        wavelet = (1 - 2 * (np.pi * f * d) ** 2) * np.exp(-((np.pi * f * d) ** 2))
        trace = np.convolve(refl, wavelet, mode="same")
        self._strata = (trace / (trace.std() + 1e-9)).astype(np.float32)
        self._wavelet = wavelet.astype(np.float32)
        # plain Python floats: a NumPy float64 scalar would turn every float32 array below into float64
        self._dip = [float(d) for d in rng.uniform(-0.15, 0.15, 2) * ns / span]
        self._fold = [
            (
                float(rng.uniform(0.03, 0.08) * ns),
                float(rng.uniform(0.5, 1.5) * span),
                float(rng.uniform(0, 2 * np.pi)),
                axis,
            )
            for axis in (0, 1)
        ]
        angle = float(rng.uniform(0, np.pi))
        self._fault = (
            float(np.cos(angle)),
            float(np.sin(angle)),
            float(rng.uniform(0.2, 0.8) * span),
            float(rng.uniform(0.03, 0.08) * ns),
        )
        self._domes = [
            _Dome(
                cx=float(rng.uniform(0.2, 0.8) * ni),
                cy=float(rng.uniform(0.2, 0.8) * nx),
                top=float(rng.uniform(0.2, 0.5) * ns),
                cap=float(rng.uniform(0.2, 0.35) * span),
                stem=float(rng.uniform(0.1, 0.2) * span),
                curvature=float(rng.uniform(0.5, 1.5) * ns / span**2),
            )
            for _ in range(int(rng.integers(1, 4)))
        ]

    def block(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Amplitudes (float32) and salt labels (bool) of inlines ``[start, stop)``: (k, xlines, samples)."""
        ni, nx, ns = self.shape
        x = np.arange(start, stop, dtype=np.float32)[:, None, None]
        y = np.arange(nx, dtype=np.float32)[None, :, None]
        t = np.arange(ns, dtype=np.float32)[None, None, :]
        salt = np.zeros((stop - start, nx, ns), bool)
        near = np.zeros((stop - start, nx, 1), np.float32)  # drag: how close a trace is to a salt flank
        for dome in self._domes:
            r = np.sqrt((x - dome.cx) ** 2 + (y - dome.cy) ** 2)
            top = dome.top + dome.curvature * r**2
            depth = np.maximum(t - dome.top, 0.0)
            radius = dome.stem + (dome.cap - dome.stem) * np.exp(-depth / (0.3 * ns))
            salt |= (t >= top) & (r <= radius)
            near = np.maximum(near, np.exp(-np.maximum(r - dome.cap, 0.0) / (0.1 * max(nx, ni))))
        tau = t + self._dip[0] * x + self._dip[1] * y
        for amp, wavelength, phase, axis in self._fold:
            tau = tau + amp * np.sin(2 * np.pi * (x if axis == 0 else y) / wavelength + phase)
        cos, sin, offset, throw = self._fault
        tau = tau + throw * ((cos * x + sin * y) > offset)
        tau = tau - 0.08 * ns * near  # layers dragged up beside the salt
        idx = np.clip(tau + ns, 0, len(self._strata) - 1)
        amps = np.interp(idx.ravel(), np.arange(len(self._strata)), self._strata).reshape(idx.shape)
        amps = amps.astype(np.float32)
        noise = np.stack(  # per inline: the same survey whatever the block size
            [
                np.random.default_rng([self.seed, i]).standard_normal((nx, ns), dtype=np.float32)
                for i in range(start, stop)
            ]
        )
        amps[salt] = 0.15 * noise[salt]  # salt: weak, chaotic
        # top salt (+1) and base (-1): a few samples per trace, each given a wavelet
        edge = np.diff(salt.astype(np.int8), axis=2, prepend=np.int8(0))
        i, j, k = np.nonzero(edge)
        sign = edge[i, j, k].astype(np.float32)
        half = len(self._wavelet) // 2
        for d, w in enumerate(self._wavelet):
            at = k + d - half
            ok = (at >= 0) & (at < ns)
            np.add.at(amps, (i[ok], j[ok], at[ok]), np.float32(2.5 * w) * sign[ok])
        amps += np.float32(0.05) * noise
        return amps, salt

    def write_segy(self, path: str | Path, labels: str | Path | None = None) -> Path:
        """Write the amplitudes (and, to ``labels``, the 0/1 salt cube with the same headers) as SEG-Y
        (IEEE float, inline sorted, inline / crossline numbers at bytes 189 / 193), atomically."""
        import segyio

        ni, nx, ns = self.shape
        spec = segyio.spec()
        spec.ilines = list(range(1, ni + 1))
        spec.xlines = list(range(1, nx + 1))
        spec.samples = list(range(0, ns * DT_US // 1000, DT_US // 1000))
        spec.format = 5
        spec.sorting = segyio.TraceSortingFormat.INLINE_SORTING
        outputs = [Path(path)] + ([Path(labels)] if labels is not None else [])
        with contextlib.ExitStack() as stack:
            tmps = [stack.enter_context(atomic_path(p)) for p in outputs]
            files = [stack.enter_context(segyio.create(str(tmp), spec)) for tmp in tmps]
            for k, f in enumerate(files):
                what = "SALT LABELS (1 = SALT)" if k else "AMPLITUDES"
                f.text[0] = segyio.tools.wrap(f"C 1 SALTSEG SYNTHETIC SURVEY, SEED {self.seed}, {what}")
                f.bin.update(hns=ns, hdt=DT_US, format=5)
                for i, il in enumerate(spec.ilines):
                    for j, xl in enumerate(spec.xlines):
                        f.header[i * nx + j] = {
                            segyio.su.iline: il,
                            segyio.su.xline: xl,
                            segyio.su.cdpx: 25 * il,
                            segyio.su.cdpy: 25 * xl,
                            segyio.su.scalco: 1,
                            segyio.su.ns: ns,
                            segyio.su.dt: DT_US,
                        }
            for a in range(0, ni, BLOCK):
                b = min(ni, a + BLOCK)
                amps, salt = self.block(a, b)
                for i in range(a, b):
                    files[0].iline[spec.ilines[i]] = amps[i - a]
                    if labels is not None:
                        files[1].iline[spec.ilines[i]] = salt[i - a].astype(np.float32)
        return Path(path)


def write_synthetic_segy(
    path: str | Path, shape: tuple[int, int, int], seed: int = 0, labels: str | Path | None = None
) -> SyntheticSurvey:
    """Write a synthetic survey of ``shape`` to ``path`` (and its labels); returns the generator."""
    survey = SyntheticSurvey(shape, seed)
    survey.write_segy(path, labels)
    return survey
