"""Synthetic seismic tiles with exact salt masks, shaped like the TGS Salt 2018 data.

Each tile is a small image of a seismic section:

* sediments: a Bernoulli-Gaussian layered reflectivity series (random layer thicknesses and impedance
  contrasts) convolved with a zero-phase Ricker wavelet of random peak frequency, then mapped through a
  deformed "geological time" field (dip, smooth folds, up to two faults with a throw, drag near salt);
* salt: a body (dome top, base of a sheet, diapir/stock, sheet/tongue, flank crossing the tile at a
  random angle, or an isolated blob) with a weak chaotic interior and a strong reflection at its
  boundary, imaged along the boundary normal like a migrated section (top salt positive, base negative);
* shallow tiles may show a water column above the sea floor;
* band-limited noise, trace striping, depth gain and a partial AGC, then a grey-level mapping to uint8
  centred near 120 with a variable contrast, like the competition tiles.

Everything is vectorised over a batch of tiles; smooth random fields are built as ``A_y @ C @ A_x.T`` with
a Gaussian radial basis ``A`` and random coefficients ``C``, so there is no per-pixel Python loop.
"""

from __future__ import annotations

import csv
import os
import shutil
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from saltseg.data.rle import rle_encode
from saltseg.errors import DataError
from saltseg.utils.io import naming_disk_full

__all__ = ["SynthTiles", "generate_tiles", "write_kaggle_layout"]

# Measured on the 3199 labelled real tiles: 39.0% empty masks, 2.3% single-value (all zero) images,
# salt coverage of the non-empty masks binned as below, depth quartiles 351/512/670 ft.
_COVERAGE_EDGES = np.array([0.0, 0.01, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 0.99, 0.998])
_COVERAGE_COUNTS = np.array([136, 199, 125, 237, 179, 329, 303, 246, 153, 43], dtype=float)
_SALT_PROB_Z = np.array([50.0, 100.0, 300.0, 500.0, 700.0, 900.0, 959.0])
_SALT_PROB_P = np.array([0.20, 0.24, 0.60, 0.70, 0.68, 0.49, 0.45])
_EMPTY_SHARE = 0.39
_FLAT_SHARE = 0.015
_Z_MIN, _Z_MAX = 50, 959
_TRACE_LEN = 1024  # samples of the 1-D reflectivity series per tile ("geological time" units)
_TRACE_PAD = 96
_BATCH = 512

# Salt body kinds: dome/top of salt, base of salt (salt above), diapir/stock, sheet/tongue, flank, blob.
_KIND_P = np.array([0.20, 0.08, 0.16, 0.14, 0.34, 0.08])


@dataclass(frozen=True)
class SynthTiles:
    """A batch of synthetic tiles: ``images`` (n, s, s) uint8, ``masks`` (n, s, s) bool, ``depths`` (n,)."""

    images: np.ndarray
    masks: np.ndarray
    depths: np.ndarray


@lru_cache(maxsize=64)
def _basis(size: int, k: int) -> np.ndarray:
    """Gaussian radial basis (size, k): each row has unit L2 norm, so ``A @ c`` has unit variance."""
    centres = np.linspace(-0.15 * size, 1.15 * size, k)
    width = centres[1] - centres[0]
    x = np.arange(size, dtype=np.float64)[:, None]
    a = np.exp(-0.5 * ((x - centres[None, :]) / width) ** 2)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    return a.astype(np.float32)


@lru_cache(maxsize=16)
def _pool(size: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Matrices (k, size) for local averages and (size, k) for interpolating them back (smoothing)."""
    a = _basis(size, k).astype(np.float64)
    down = (a / a.sum(axis=0, keepdims=True)).T
    up = a / a.sum(axis=1, keepdims=True)
    return down.astype(np.float32), up.astype(np.float32)


def _field(rng: np.random.Generator, b: int, size: int, ky: int, kx: int) -> np.ndarray:
    """``b`` smooth unit-variance random fields (b, size, size) with ``ky`` x ``kx`` degrees of freedom."""
    coef = rng.standard_normal((b, ky, kx), dtype=np.float32)
    return _basis(size, ky) @ (coef @ _basis(size, kx).T)


def _ricker(d: np.ndarray, f: np.ndarray | float) -> np.ndarray:
    """Ricker wavelet of peak frequency ``f`` (cycles per pixel) evaluated at offsets ``d`` (pixels)."""
    a = (np.pi * f * d) ** 2
    return (1.0 - 2.0 * a) * np.exp(-a)


def _col(x: np.ndarray) -> np.ndarray:
    """Per-tile parameters (m,) as (m, 1, 1) float32 for broadcasting over tiles."""
    return np.asarray(x, dtype=np.float32)[:, None, None]


def _traces(rng: np.random.Generator, b: int, fp_t: np.ndarray) -> np.ndarray:
    """Layered reflectivity convolved with a Ricker wavelet: (b, _TRACE_LEN) unit-std traces."""
    n = _TRACE_LEN
    thick = np.exp(rng.uniform(np.log(1.5), np.log(9.0), b))[:, None]
    spikes = rng.random((b, n), dtype=np.float32) < (1.0 / thick)
    contrast = rng.standard_normal((b, n), dtype=np.float32)
    # Slowly varying envelope: packages of bright and dim reflectors, and a few very strong contrasts.
    env = np.exp(0.7 * (_field_1d(rng, b, n, 24)))
    strong = rng.random((b, n), dtype=np.float32) < 0.004
    refl = spikes * contrast * env * (1.0 + 3.0 * strong)
    freq = np.fft.rfftfreq(n)[None, :].astype(np.float32)
    q = (freq / fp_t[:, None]) ** 2
    spectrum = q * np.exp(1.0 - q)
    tr = np.fft.irfft(np.fft.rfft(refl, axis=1) * spectrum, n=n, axis=1).astype(np.float32)
    tr /= tr.std(axis=1, keepdims=True) + 1e-6
    return tr


def _field_1d(rng: np.random.Generator, b: int, n: int, k: int) -> np.ndarray:
    """``b`` smooth unit-variance 1-D random series of length ``n``."""
    return rng.standard_normal((b, k), dtype=np.float32) @ _basis(n, k).T


def _pairs(traces: np.ndarray) -> np.ndarray:
    """Traces as complex64 pairs (sample i, sample i + 1), so interpolation needs a single gather."""
    pairs = np.empty((*traces.shape, 2), dtype=np.float32)
    pairs[..., 0] = traces
    pairs[..., :-1, 1] = traces[:, 1:]
    pairs[..., -1, 1] = traces[:, -1]
    return pairs.view(np.complex64)[..., 0]


def _sample(pairs: np.ndarray, t: np.ndarray, offset: int = 0) -> np.ndarray:
    """Linear interpolation of trace ``i`` (as :func:`_pairs`) at positions ``t[i]`` (b, s, s).

    Positions are shifted so that each tile's smallest one lands at ``_TRACE_PAD + offset``.
    """
    b, n = pairs.shape
    t = t - (t.min(axis=(1, 2), keepdims=True) - (_TRACE_PAD + offset))
    np.clip(t, 0, n - 1, out=t)
    i0 = t.astype(np.int32)
    t -= i0
    i0 += (np.arange(b, dtype=np.int32) * n)[:, None, None]
    g = pairs.ravel()[i0]
    lo = g.real
    out = g.imag - lo
    out *= t
    out += lo
    return out


def _coverage_targets(rng: np.random.Generator, m: int) -> np.ndarray:
    """Salt coverages drawn from the real histogram of non-empty masks (uniform inside each bin)."""
    p = _COVERAGE_COUNTS / _COVERAGE_COUNTS.sum()
    k = rng.choice(p.size, size=m, p=p)
    return rng.uniform(_COVERAGE_EDGES[k], _COVERAGE_EDGES[k + 1])


def _salt_phi(rng: np.random.Generator, m: int, size: int) -> np.ndarray:
    """Level-set functions (m, s, s) in pixels: salt where phi is above a per-tile threshold."""
    yy = np.arange(size, dtype=np.float32)[None, :, None]
    xx = np.arange(size, dtype=np.float32)[None, None, :]
    c = (size - 1) / 2.0
    kind = rng.choice(_KIND_P.size, size=m, p=_KIND_P)
    phi = np.empty((m, size, size), dtype=np.float32)
    for k in range(_KIND_P.size):
        idx = np.flatnonzero(kind == k)
        j = idx.size
        if j == 0:
            continue
        x0 = _col(rng.uniform(-0.3, 1.3, j) * size)
        y0 = _col(rng.uniform(-0.3, 1.3, j) * size)
        if k in (0, 1):  # dome top (salt below a curved top) or base of salt (salt above)
            amp = _col(rng.uniform(0.0, 1.2, j) * size)
            width = _col(np.exp(rng.uniform(np.log(0.2), np.log(1.5), j)) * size)
            slope = _col(rng.normal(0.0, 0.35, j))
            top = -amp * np.exp(-(((xx - x0) / width) ** 2)) + slope * (xx - c)
            sign = 1.0 if k == 0 else -1.0
            p = sign * (yy - top)
        elif k == 2:  # diapir / stock: a near-vertical column, widening down, with a rounded cap
            slope = _col(rng.normal(0.0, 0.35, j))
            half = _col(rng.uniform(0.1, 1.0, j) * size)
            widen = _col(rng.uniform(0.0, 0.5, j))
            centre = x0 + slope * (yy - c)
            p = half + widen * (yy - c) - np.abs(xx - centre)
            cap = _col(rng.uniform(0.5, 2.0, j)) * (yy - y0) + half * 0.5
            p = np.minimum(p, cap)
        elif k == 3:  # sheet / tongue: a sub-horizontal band ending in a tapered tip
            slope = _col(rng.normal(0.0, 0.25, j))
            half = _col(rng.uniform(0.08, 0.6, j) * size)
            mid = y0 + slope * (xx - c)
            side = _col(rng.choice([-1.0, 1.0], j))
            taper = _col(rng.uniform(0.1, 0.5, j))
            tip = side * (xx - x0)
            p = half + taper * np.minimum(tip, 0.0) - np.abs(yy - mid)
        elif k == 4:  # flank: boundary crossing the tile at a random, mostly steep, angle
            steep = rng.random(j) < 0.7
            ang = np.where(steep, rng.normal(0.0, 0.45, j), rng.uniform(-np.pi, np.pi, j))
            ang = ang + np.pi * (rng.random(j) < 0.5)
            nx, ny = _col(np.cos(ang)), _col(np.sin(ang))
            bend = _col(rng.normal(0.0, 1.2, j) / size)
            along = -(xx - c) * ny + (yy - c) * nx
            p = (xx - c) * nx + (yy - c) * ny + bend * along**2
        else:  # isolated blob (a small body, or a body with sediment round it)
            rx = _col(rng.uniform(0.15, 1.0, j) * size)
            ry = _col(rng.uniform(0.15, 1.0, j) * size)
            scale = np.sqrt(rx * ry)
            p = scale * (1.0 - np.sqrt(((xx - x0) / rx) ** 2 + ((yy - y0) / ry) ** 2))
        phi[idx] = p
    # Large-scale undulation and small-scale rugosity of the boundary.
    wig = _col(rng.uniform(0.0, 0.12, m) * size)
    rug = _col(np.where(rng.random(m) < 0.35, rng.uniform(1.0, 5.0, m), rng.uniform(0.0, 1.0, m)))
    phi += wig * _field(rng, m, size, 4, 4)
    phi += rug * _field(rng, m, size, 14, 14)
    return phi


def _threshold(phi: np.ndarray, cover: np.ndarray) -> np.ndarray:
    """Per-tile level giving roughly the target coverage (exact for small coverages)."""
    m = phi.shape[0]
    flat = phi.reshape(m, -1)
    sub = np.sort(phi[:, ::3, ::3].reshape(m, -1), axis=1)
    k = np.clip(np.round((1.0 - cover) * (sub.shape[1] - 1)).astype(np.int64), 0, sub.shape[1] - 1)
    thr = sub[np.arange(m), k]
    small = np.flatnonzero(cover < 0.06)
    if small.size:
        full = np.sort(flat[small], axis=1)
        n = full.shape[1]
        kk = np.clip(np.round((1.0 - cover[small]) * n).astype(np.int64), 0, n - 1)
        # The level sits between two sorted values so that exactly n - kk pixels lie above it.
        below = full[np.arange(small.size), np.maximum(kk - 1, 0)]
        at = full[np.arange(small.size), kk]
        thr[small] = np.where(kk > 0, 0.5 * (below + at), at - 1.0)
    # Never leave a salt tile empty: fall back to the highest point.
    top = flat.max(axis=1)
    return np.where(thr >= top, top - 1e-3, thr).astype(np.float32)


def _generate_batch(rng: np.random.Generator, b: int, size: int) -> SynthTiles:
    """One vectorised batch of ``b`` tiles.

    Tiles are built grouped (salt tiles first, then water-column tiles, then the rest) so that the
    group-specific steps work on contiguous views, and shuffled at the end.
    """
    yy = np.arange(size, dtype=np.float32)[None, :, None]
    xx = np.arange(size, dtype=np.float32)[None, None, :]
    c = (size - 1) / 2.0

    # Depth, and salt presence correlated with depth like the real data.
    z = np.clip(np.round(rng.normal(505.0, 215.0, b)), _Z_MIN, _Z_MAX).astype(np.int64)
    salt = rng.random(b) < np.interp(z, _SALT_PROB_Z, _SALT_PROB_P)
    water = ~salt & (rng.random(b) < np.interp(z, [50.0, 200.0, 350.0], [0.45, 0.25, 0.0]))
    order = np.argsort(np.where(salt, 0, np.where(water, 1, 2)), kind="stable")
    z = z[order]
    m = int(salt.sum())
    mw = int(water.sum())
    flat_tile = np.zeros(b, dtype=bool)
    flat_tile[m:] = rng.random(b - m) < _FLAT_SHARE / _EMPTY_SHARE

    # Scale of the picture: pixels per geological-time unit, and the wavelet's frequency in those units.
    zoom = np.exp(rng.uniform(np.log(0.45), np.log(2.2), b)).astype(np.float32)
    fp_t = np.exp(rng.uniform(np.log(0.035), np.log(0.16), b)).astype(np.float32)
    fp_px = _col(fp_t / zoom)
    traces = _pairs(_traces(rng, b, fp_t))

    # Deformed geological time: dip, folds at two scales, and faults.
    dip = _col(rng.normal(0.0, 0.3, b))
    t = _field(rng, b, size, 3, 4)
    t *= _col(rng.uniform(0.0, 0.25, b) * size)
    t += yy + dip * (xx - c)
    t += _col(rng.exponential(2.5, b)) * _field(rng, b, size, 6, 8)
    for p_fault in (0.25, 0.08):
        has = rng.random(b) < p_fault
        ang = rng.uniform(np.radians(45.0), np.radians(88.0), b) * rng.choice([-1.0, 1.0], b)
        nx, ny = _col(np.sin(ang)), _col(-np.cos(ang))
        fx, fy = _col(rng.uniform(0.1, 0.9, b) * size), _col(rng.uniform(0.1, 0.9, b) * size)
        throw = _col(rng.uniform(3.0, 25.0, b) * rng.choice([-1.0, 1.0], b))
        f = np.flatnonzero(has)
        t[f] += throw[f] * (((xx - fx[f]) * nx[f] + (yy - fy[f]) * ny[f]) > 0)

    masks = np.zeros((b, size, size), dtype=bool)
    if m:
        phi = _salt_phi(rng, m, size)
        phi -= _threshold(phi, _coverage_targets(rng, m))[:, None, None]
        masks[:m] = phi > 0
        gy, gx = np.gradient(phi, axis=(1, 2))
        gnorm = np.sqrt(gx * gx + gy * gy)
        gnorm += 1e-3
        sd = phi / np.maximum(gnorm, 0.05)  # signed distance to the boundary, pixels, + inside salt
        ny = gy / gnorm  # > 0 where salt lies below its boundary (top salt)
        # Drag: sediment layers bend up against the salt.
        drag = _col(rng.uniform(-3.0, 12.0, m))
        t[:m] -= drag * np.exp(np.minimum(sd, 0.0) / _col(rng.uniform(5.0, 25.0, m)))

    # Trace-to-trace statics: short-wavelength lateral jitter of the reflectors.
    t += _col(rng.exponential(0.4, b)) * _field_1d(rng, b, size, 45)[:, None, :]
    t /= zoom[:, None, None]
    img = _sample(traces, t)
    img *= 1.0 + _col(rng.uniform(0.0, 0.25, b)) * _field_1d(rng, b, size, 45)[:, None, :]
    # Lateral changes of reflector character: blend in other reflectors where a smooth field says so.
    mix = _field(rng, b, size, 3, 5)
    mix *= _col(rng.uniform(0.0, 4.0, b))
    np.tanh(mix, out=mix)
    mix *= _col(rng.uniform(0.0, 0.5, b))
    img += mix * (_sample(traces, t, offset=_TRACE_LEN // 3) - img)
    # Lateral amplitude variation.
    lateral = _field(rng, b, size, 4, 6)
    lateral *= _col(rng.uniform(0.0, 0.5, b))
    img *= np.exp(lateral)

    if m:
        # Weak chaotic interior (blotchy, low amplitude) and a strong reflection at the boundary.
        chaos = _field(rng, m, size, 34, 22)
        chaos += _col(rng.uniform(0.0, 1.2, m)) * _field(rng, m, size, 5, 40)  # migration streaks
        inner = _col(rng.uniform(0.05, 0.2, m))
        w = np.tanh(sd / 1.5)
        w *= 0.5
        w += 0.5
        boundary_amp = _col(rng.uniform(1.2, 3.0, m)) * (0.45 + 0.55 * np.abs(ny))
        polarity = np.tanh(4.0 * (ny + 0.25))
        sal = img[:m]
        sal *= 1.0 - w
        sal += inner * chaos * w
        sal += boundary_amp * polarity * _ricker(sd, fp_px[:m])

    # Noise: band-limited at two scales, and vertical trace striping in some tiles.
    img += _col(np.exp(rng.uniform(np.log(0.02), np.log(0.7), b))) * _field(rng, b, size, 34, 16)
    img += _col(np.exp(rng.uniform(np.log(0.01), np.log(0.8), b))) * _field(rng, b, size, 44, 36)
    sidx = np.flatnonzero(rng.random(b) < 0.15)
    if sidx.size:
        img[sidx] += _col(rng.uniform(0.1, 0.6, sidx.size)) * _field(rng, sidx.size, size, 2, 50)

    # Water column above the sea floor in some shallow, salt-free tiles (quiet: no noise above it).
    if mw:
        sl = slice(m, m + mw)
        sf = _col(rng.uniform(-0.1, 0.9, mw) * size) + dip[sl] * (xx - c)
        dsf = yy - sf
        below = 0.5 + 0.5 * np.tanh(dsf / 1.5)
        amp = _col(rng.uniform(2.0, 4.0, mw))
        wat = img[sl]
        wat *= below
        wat += amp * _ricker(dsf, fp_px[sl])

    # Gain: depth gain, then a partial AGC (divide by a power of the smoothed local energy).
    img *= np.exp(_col(rng.uniform(-0.6, 1.0, b)) * (yy / size))
    down, up = _pool(size, 5)
    energy = up @ (down @ (img * img) @ down.T) @ up.T
    energy += 1e-3
    img /= energy ** _col(rng.uniform(0.0, 0.35, b))

    # Grey levels: per-tile mean and contrast like the real tiles.
    mean = img.mean(axis=(1, 2), keepdims=True)
    std = img.std(axis=(1, 2), keepdims=True) + 1e-6
    grey_mean = _col(np.clip(rng.normal(121.0, 24.0, b), 60.0, 190.0))
    grey_std = _col(np.clip(np.exp(rng.normal(np.log(27.0), 0.33, b)), 7.0, 60.0))
    img -= mean
    img *= grey_std / std
    img += grey_mean
    np.clip(img, 0, 255, out=img)
    images = np.rint(img, out=img).astype(np.uint8)
    images[flat_tile] = 0
    perm = rng.permutation(b)
    return SynthTiles(images=images[perm], masks=masks[perm], depths=z[perm])


def generate_tiles(n: int, seed: int = 0, size: int = 101) -> SynthTiles:
    """Generate ``n`` synthetic seismic tiles of ``size`` x ``size`` with salt masks and depths.

    The same ``seed`` gives identical output. About 39% of the masks are empty (about 1.5% of all
    tiles are flat, all-zero images with empty masks); the rest spread over coverages like the real data.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x5A17]))
    parts = [_generate_batch(rng, min(_BATCH, n - i), size) for i in range(0, n, _BATCH)]
    if not parts:
        return SynthTiles(
            images=np.zeros((0, size, size), np.uint8),
            masks=np.zeros((0, size, size), bool),
            depths=np.zeros(0, np.int64),
        )
    return SynthTiles(
        images=np.concatenate([p.images for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        depths=np.concatenate([p.depths for p in parts]),
    )


def _make_ids(n: int, seed: int) -> list[str]:
    """``n`` unique 10-character hex ids, derived deterministically from ``seed``."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D5]))
    ids: list[str] = []
    seen: set[str] = set()
    while len(ids) < n:
        for v in rng.integers(0, 16**10, size=n - len(ids) + 8, dtype=np.int64).tolist():
            s = f"{v:010x}"
            if s not in seen:
                seen.add(s)
                ids.append(s)
    return ids[:n]


def _save_image(path: Path, image: np.ndarray) -> None:
    Image.fromarray(np.repeat(image[:, :, None], 3, axis=2), mode="RGB").save(path)


def _save_mask(path: Path, mask: np.ndarray) -> None:
    if mask.any():
        Image.fromarray(mask.astype(np.uint16) * np.uint16(65535)).save(path)  # mode "I;16"
    else:
        Image.fromarray(np.zeros(mask.shape, np.uint8), mode="L").save(path)


def write_kaggle_layout(out_dir: str | Path, n_train: int, n_test: int = 0, seed: int = 0) -> Path:
    """Write synthetic tiles in the competition's layout and return ``out_dir``.

    Writes ``train/images``, ``train/masks``, ``train.csv``, ``test/images``, ``depths.csv`` and
    ``sample_submission.csv`` (empty masks) into a temporary folder beside ``out_dir``, then renames it
    into place.

    Raises:
        DataError: if ``out_dir`` exists and is not an empty folder.
        DiskFullError: the disk filled up; names the file (as it would be under ``out_dir``) and nothing
            is left behind.
    """
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError("output folder exists and is not empty; choose a new one", out)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train and n_test must be >= 0, got {n_train} and {n_test}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tiles = generate_tiles(n_train + n_test, seed=seed)
    ids = _make_ids(n_train + n_test, seed)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for sub in ("train/images", "train/masks", "test/images"):
            (tmp / sub).mkdir(parents=True)
        with naming_disk_full(out / "train.csv"), open(tmp / "train.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "rle_mask"])
            for i in range(n_train):
                image, mask = (
                    Path("train", "images", f"{ids[i]}.png"),
                    Path("train", "masks", f"{ids[i]}.png"),
                )
                with naming_disk_full(out / image):
                    _save_image(tmp / image, tiles.images[i])
                with naming_disk_full(out / mask):
                    _save_mask(tmp / mask, tiles.masks[i])
                w.writerow([ids[i], rle_encode(tiles.masks[i])])
        with (
            naming_disk_full(out / "sample_submission.csv"),
            open(tmp / "sample_submission.csv", "w", newline="") as f,
        ):
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "rle_mask"])
            for i in range(n_train, n_train + n_test):
                image = Path("test", "images", f"{ids[i]}.png")
                with naming_disk_full(out / image):
                    _save_image(tmp / image, tiles.images[i])
                w.writerow([ids[i], ""])
        with naming_disk_full(out / "depths.csv"), open(tmp / "depths.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "z"])
            for i, z in enumerate(tiles.depths.tolist()):
                w.writerow([ids[i], z])
        os.chmod(tmp, 0o755)
        if out.exists():
            out.rmdir()  # empty (checked above)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
