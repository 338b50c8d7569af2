"""K-fold splits stratified by depth, by salt-coverage class, or both (sort, then rank mod K)."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path
from typing import Literal

import numpy as np

from saltseg.errors import DataError
from saltseg.utils.io import atomic_write

Stratify = Literal["depth", "coverage", "depth_coverage", "random"]


def coverage_strata(coverages: np.ndarray) -> np.ndarray:
    """Coverage class used for stratification: 0 for empty, else ceil(10 * coverage) in 1..10."""
    cov = np.asarray(coverages, dtype=float)
    return np.where(cov > 0, np.ceil(cov * 10).clip(1, 10), 0).astype(np.int64)


MIN_TILES_PER_FOLD = 2
"""Fewest validation tiles a fold may have (more folds than this allows are refused)."""


def make_folds(
    ids: list[str],
    k: int = 5,
    by: Stratify = "depth",
    depths: np.ndarray | None = None,
    coverages: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, int]:
    """Assign each id to one of ``k`` folds.

    Ids are ordered by the stratification key (depth z, coverage class, or coverage class then depth),
    ties broken by a permutation seeded by ``seed`` over the sorted ids, and fold = rank mod k. The
    result depends only on the set of ids, their keys and the seed, not on the input order.
    """
    if k < 2:
        raise DataError(f"the number of folds must be at least 2, got {k}")
    if len(set(ids)) != len(ids):
        raise DataError("duplicate ids given to make_folds")
    if len(ids) < MIN_TILES_PER_FOLD * k:
        raise DataError(
            f"{k} folds of {len(ids)} labelled tiles leave fewer than {MIN_TILES_PER_FOLD} tiles per "
            f"validation fold (a meaningless score); use at most {len(ids) // MIN_TILES_PER_FOLD} folds"
        )
    order_in = np.argsort(np.asarray(ids, dtype=object).astype(str), kind="stable")
    sorted_ids = [ids[i] for i in order_in]
    n = len(sorted_ids)
    tiebreak = np.random.default_rng(seed).permutation(n)
    keys: list[np.ndarray] = [tiebreak]
    if by not in ("depth", "coverage", "depth_coverage", "random"):
        raise ValueError(f"unknown stratification {by!r}")
    for name, values in (("depths", depths), ("coverages", coverages)):
        if values is not None and np.shape(values) != (n,):
            raise ValueError(f"{name} must have one value per id ({n}), got shape {np.shape(values)}")
    if by in ("depth", "depth_coverage"):
        if depths is None:
            raise DataError("depth-stratified folds need depths (depths.csv)")
        z = np.asarray(depths, dtype=float)[order_in]
        if np.isnan(z).any():
            raise DataError(f"{int(np.isnan(z).sum())} tiles have no depth; use --by coverage")
        keys.append(z)
    if by in ("coverage", "depth_coverage"):
        if coverages is None:
            raise DataError("coverage-stratified folds need masks")
        keys.append(coverage_strata(np.asarray(coverages)[order_in]))
    order = np.lexsort(keys)  # last key is primary
    folds = np.empty(n, dtype=np.int64)
    folds[order] = np.arange(n) % k
    return {sorted_ids[i]: int(folds[i]) for i in range(n)}


def save_folds(path: str | Path, folds: dict[str, int]) -> None:
    """Write ``id,fold`` rows atomically."""
    with atomic_write(path, newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "fold"])
        for tile_id in sorted(folds):
            w.writerow([tile_id, folds[tile_id]])


def load_folds(path: str | Path) -> dict[str, int]:
    """Read a folds CSV written by :func:`save_folds`."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise DataError("folds file not found", path) from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"unreadable folds file ({exc})", path) from None
    try:
        folds = {r["id"]: int(r["fold"]) for r in rows}
    except (KeyError, ValueError, TypeError):
        raise DataError("expected columns 'id' and integer 'fold'", path) from None
    if len(folds) != len(rows):
        dup = sorted(k for k, n in Counter(r["id"] for r in rows).items() if n > 1)
        raise DataError(f"duplicate ids ({len(dup)}, first {dup[0]!r})", path)
    if any(v < 0 for v in folds.values()):
        raise DataError("fold numbers must be 0 or more", path)
    return folds
