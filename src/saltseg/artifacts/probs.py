"""The one probability store: uint8 probabilities (p * 255) with their tile ids, image-level salt
probabilities and (for out-of-fold files) the packed truth masks, in ``.npz`` files written atomically.

Out-of-fold files (``oof.npz``) and prediction chunks (``probs/chunk-*.npz``) are the same format; OOF
files are compressed and carry the truth.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from saltseg.errors import DataError
from saltseg.utils.io import atomic_write


def encode_probs(probs: np.ndarray) -> np.ndarray:
    """Probabilities in [0, 1] as uint8 (p * 255, rounded); NaN (a diverged model) becomes 0. uint8
    codes pass through unchanged."""
    if probs.dtype == np.uint8:
        return probs
    return np.round(np.clip(np.nan_to_num(probs, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)


def decode_probs(codes: np.ndarray) -> np.ndarray:
    """uint8 codes back to float32 probabilities in [0, 1]."""
    return codes.astype(np.float32) / 255.0


def save_probs(
    path: Path,
    ids: list[str],
    probs: np.ndarray | None,
    salt: np.ndarray | None = None,
    truth: np.ndarray | None = None,
    compress: bool = True,
) -> None:
    """Write probabilities (or None for a model without a mask head) with their ids, atomically."""
    arrays: dict[str, np.ndarray] = {"ids": np.array(ids)}
    if probs is not None:
        arrays["probs"] = encode_probs(probs)
    if salt is not None:
        arrays["salt"] = np.nan_to_num(salt, nan=0.0).astype(np.float32)
    if truth is not None:
        arrays["truth"] = np.packbits(truth.astype(bool), axis=-1)
        arrays["width"] = np.array(truth.shape[-1])
    with atomic_write(path, "wb") as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)


def load_probs(path: Path) -> dict[str, np.ndarray]:
    """Read a file written by :func:`save_probs`: ``ids``, ``probs`` (float32, absent for a classifier),
    ``salt`` and ``truth`` (bool) where present. A damaged file is one :class:`DataError`."""
    try:
        with np.load(path) as z:
            d = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"unreadable probability file ({type(exc).__name__}: {exc})", path) from None
    if "ids" not in d:
        raise DataError("not a saltseg probability file (no ids)", path)
    d["ids"] = d["ids"].astype(str)
    if "probs" in d:
        d["probs"] = decode_probs(d["probs"])
    if "truth" in d:
        width = int(d.pop("width")) if "width" in d else d["probs"].shape[-1]
        d["truth"] = np.unpackbits(d["truth"], axis=-1, count=width).astype(bool)
    return d


@dataclass
class OutOfFold:
    """Out-of-fold predictions of a run or an ensemble: one row per labelled tile.

    ``probs`` is None when no member has a mask head (a classifier run); ``salt`` holds the image-level
    salt probabilities where some member has that head; ``images`` (uint8) are filled in by whoever
    needs them (tuning); ``fold`` is the fold each tile was held out in.
    """

    ids: list[str]
    probs: np.ndarray | None
    truth: np.ndarray
    salt: np.ndarray | None = None
    images: np.ndarray | None = None
    fold: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> OutOfFold:
        """The rows ``idx``, in that order."""

        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[idx]

        return OutOfFold(
            [self.ids[i] for i in idx],
            pick(self.probs),
            self.truth[idx],
            pick(self.salt),
            pick(self.images),
            pick(self.fold),
        )


def read_oof(files: list[Path], folds: list[int] | None = None) -> OutOfFold:
    """Concatenate out-of-fold files (``folds``: the fold index of each file, for ``OutOfFold.fold``)."""
    parts = [load_probs(p) for p in files]
    for p, d in zip(files, parts, strict=True):
        if "truth" not in d:
            raise DataError("out-of-fold file has no truth masks", p)
    with_probs = ["probs" in d for d in parts]
    if any(with_probs) and not all(with_probs):
        raise DataError("some out-of-fold files hold masks and some do not", files[0].parent)
    fold = None
    if folds is not None:
        sizes = [len(d["ids"]) for d in parts]
        fold = np.concatenate([np.full(n, k, dtype=int) for n, k in zip(sizes, folds, strict=True)])
    return OutOfFold(
        ids=[str(i) for d in parts for i in d["ids"]],
        probs=np.concatenate([d["probs"] for d in parts]) if all(with_probs) else None,
        truth=np.concatenate([d["truth"] for d in parts]),
        salt=np.concatenate([d["salt"] for d in parts]) if all("salt" in d for d in parts) else None,
        fold=fold,
    )
