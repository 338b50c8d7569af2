"""Kaggle submissions: an atomic CSV writer and a checker."""

from __future__ import annotations

import contextlib
import csv
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from saltseg.data.rle import rle_decode, rle_encode
from saltseg.data.tiles import open_dataset, read_csv_column_pairs
from saltseg.errors import DataError, RLEError
from saltseg.utils.io import atomic_write

HEADER = ("id", "rle_mask")
"""The columns of a Kaggle submission."""


def is_submission_csv(path: Path) -> bool:
    """True when ``path`` starts with the submission header (an earlier output a command may replace)."""
    try:
        with open(path, encoding="utf-8") as f:
            return tuple(f.readline().strip().replace(" ", "").split(",")) == HEADER
    except (OSError, UnicodeDecodeError):
        return False


@contextlib.contextmanager
def open_submission(path: str | Path) -> Iterator[Callable[[Iterable[str], Iterable[np.ndarray]], None]]:
    """Write a submission CSV batch by batch: yields ``add(ids, masks)``; the file appears (atomically)
    only when the block ends without an error."""
    with atomic_write(Path(path), newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(HEADER)

        def add(ids: Iterable[str], masks: Iterable[np.ndarray]) -> None:
            for tile_id, mask in zip(ids, masks, strict=True):
                w.writerow([tile_id, rle_encode(mask)])

        yield add


def write_submission(path: str | Path, ids: Iterable[str], masks: Iterable[np.ndarray]) -> Path:
    """Write ``id,rle_mask`` rows (empty masks as empty strings) to ``path`` atomically."""
    with open_submission(path) as add:
        add(ids, masks)
    return Path(path)


def read_submission(path: str | Path, shape: tuple[int, int] = (101, 101)) -> dict[str, np.ndarray]:
    """Read a submission CSV into ``{id: bool mask}``, failing on the first bad row."""
    path = Path(path)
    rows = read_csv_column_pairs(path, "id", "rle_mask")
    dup = [k for k, n in Counter(i for i, _ in rows).items() if n > 1]
    if dup:
        raise DataError(f"duplicate ids ({len(dup)}, first {dup[0]!r})", path)
    out: dict[str, np.ndarray] = {}
    for line, (tile_id, rle) in enumerate(rows, start=2):
        try:
            out[tile_id] = rle_decode(rle, shape)
        except RLEError as exc:
            raise DataError(f"line {line}, id {tile_id!r}: {exc}", path) from None
    return out


def check_submission(path: str | Path, data_dir: str | Path) -> list[str]:
    """Problems of a submission for the test tiles of ``data_dir`` (empty list when valid).

    The expected ids are the sample submission's if there is one, else the test images' ids.
    """
    path = Path(path)
    src = open_dataset(data_dir)
    expected = (
        [i for i, _ in read_csv_column_pairs(src.sample_submission, "id", "rle_mask")]
        if src.sample_submission
        else (src.test_ids or src.unlabelled_ids)
    )
    rows = read_csv_column_pairs(path, "id", "rle_mask")
    problems: list[str] = []
    ids = [i for i, _ in rows]
    dup = sorted(k for k, n in Counter(ids).items() if n > 1)
    if dup:
        problems.append(f"{path}: duplicate ids: {len(dup)} ({', '.join(dup[:3])})")
    missing = sorted(set(expected) - set(ids))
    extra = sorted(set(ids) - set(expected))
    if missing:
        problems.append(f"{path}: ids missing: {len(missing)} ({', '.join(missing[:3])})")
    if extra:
        problems.append(f"{path}: unknown ids: {len(extra)} ({', '.join(extra[:3])})")
    bad = []
    for line, (tile_id, rle) in enumerate(rows, start=2):
        try:
            rle_decode(rle)
        except RLEError as exc:
            bad.append(f"line {line} {tile_id} ({exc})")
    if bad:
        problems.append(f"{path}: invalid RLE: {len(bad)} ({'; '.join(bad[:3])})")
    return problems
