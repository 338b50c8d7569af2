"""Kaggle submissions: an atomic CSV writer, a checker and a blend of several submissions."""

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


def _header(path: Path) -> list[str]:
    """The column names of a CSV whose columns :func:`read_csv_column_pairs` already checked."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        return [c.strip() for c in next(csv.reader(f), [])]


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
    header = _header(path)
    if tuple(header) != HEADER:  # Kaggle takes exactly these two columns
        problems.append(f"{path}: columns {header}, expected exactly {list(HEADER)}")
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


def blend_submissions(
    paths: list[Path],
    out: str | Path,
    weights: list[float] | None = None,
    shape: tuple[int, int] = (101, 101),
) -> tuple[int, int]:
    """Pixel-wise weighted vote of submission CSVs (the "rle blend" of the competition), written to
    ``out`` atomically in the first file's row order: a pixel is salt where the weights of the files
    that mark it add up to more than half of all the weights. Returns (tiles, empty tiles).

    Every file must hold exactly the same ids, each once, with valid RLE (one :class:`DataError`
    naming the file and the first problem otherwise); ``out`` may not be one of the inputs.
    """
    if len(paths) < 2:
        raise DataError(f"blending needs at least two submissions, got {len(paths)}")
    weights = [1.0] * len(paths) if weights is None else [float(w) for w in weights]
    if len(weights) != len(paths):
        raise DataError(f"{len(weights)} weights for {len(paths)} submissions")
    if any(not np.isfinite(w) or w < 0 for w in weights) or sum(weights) <= 0:
        raise DataError(f"weights must be non-negative numbers with a positive sum, got {weights}")
    from saltseg.utils.io import check_output_file

    check_output_file(out, inputs=list(paths), may_replace=is_submission_csv)
    if Path(out).is_file() and not is_submission_csv(Path(out)):
        raise DataError("exists and is not a submission CSV; saltseg replaces only its own outputs", out)
    first = [i for i, _ in read_csv_column_pairs(paths[0], "id", "rle_mask")]
    votes: dict[str, np.ndarray] = {}
    for path, weight in zip(paths, weights, strict=True):
        masks = read_submission(path, shape)
        if set(masks) != set(first):
            missing = sorted(set(first) - set(masks))
            extra = sorted(set(masks) - set(first))
            what = f"lacks {len(missing)} id(s) of {paths[0]} (first: {missing[0]})" if missing else ""
            what = what or f"has {len(extra)} id(s) {paths[0]} lacks (first: {extra[0]})"
            raise DataError(what, path)
        for tile_id, mask in masks.items():
            v = mask.astype(np.float64) * weight
            votes[tile_id] = v if tile_id not in votes else votes[tile_id] + v
    half = sum(weights) / 2
    blended = [votes[i] > half for i in first]
    write_submission(out, first, blended)
    return len(first), sum(1 for m in blended if not m.any())
