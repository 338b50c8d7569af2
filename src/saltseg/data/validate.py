"""``saltseg data check``: validate every input of a dataset and summarise what it holds."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from saltseg.data.rle import rle_decode
from saltseg.data.tiles import TileSource, open_dataset, read_csv_column_pairs, read_image, read_mask
from saltseg.errors import DataError, RLEError
from saltseg.metrics.kaggle import COVERAGE_BINS, coverage_class


@dataclass
class Problem:
    """One kind of problem and the files (or ids) that have it."""

    kind: str
    where: str
    items: list[str] = field(default_factory=list)

    def line(self, show: int = 3) -> str:
        """One line: the count, the kind, and the first few items."""
        head = ", ".join(self.items[:show]) + (", ..." if len(self.items) > show else "")
        return f"{self.kind} in {self.where}: {len(self.items)} ({head})"


@dataclass
class DataReport:
    """Summary and problems of one dataset."""

    root: Path
    layout: str
    n_labelled: int = 0
    n_unlabelled: int = 0
    empty_fraction: float = float("nan")
    coverage_hist: dict[str, int] = field(default_factory=dict)
    depth_range: tuple[float, float] | None = None
    n_depths: int = 0
    flat_tiles: list[str] = field(default_factory=list)
    image_size: tuple[int, int] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


class _Collector:
    def __init__(self) -> None:
        self.found: dict[tuple[str, str], list[str]] = {}

    def add(self, kind: str, where: str | Path, item: str) -> None:
        self.found.setdefault((kind, str(where)), []).append(item)

    def problems(self) -> list[Problem]:
        return [Problem(k, w, sorted(v)) for (k, w), v in self.found.items()]


def _duplicates(values: list[str]) -> list[str]:
    return sorted(k for k, n in Counter(values).items() if n > 1)


def check_dataset(root: str | Path, size: tuple[int, int] = (101, 101)) -> DataReport:
    """Read every image, mask and CSV under ``root`` and report a summary and every problem found."""
    src: TileSource = open_dataset(root, strict=False)
    rep = DataReport(root=src.root, layout=src.layout)
    col = _Collector()
    masks_dir = src.mask_dir or src.root

    # images: readable, right size, flat (not kept in memory: 21k tiles would be about 200 MB)
    for tile_id in src.labelled_ids + src.unlabelled_ids:
        path = src.image_path(tile_id)
        try:
            img = read_image(path)
        except DataError as exc:
            col.add(_unreadable_kind(exc, "image"), path.parent, f"{path.name} ({_reason(exc)})")
            continue
        if img.shape != size:
            col.add(
                f"wrong image size (expected {size[1]}x{size[0]})",
                path.parent,
                f"{path.name} is {img.shape[1]}x{img.shape[0]}",
            )
            continue
        if img.min() == img.max():
            rep.flat_tiles.append(tile_id)
    rep.image_size = size

    # masks: readable, binary, right size
    masks: dict[str, np.ndarray] = {}
    for tile_id in src.labelled_ids:
        path = src.mask_path(tile_id)
        try:
            m = read_mask(path, strict=True)
        except DataError as exc:
            kind = "non-binary mask" if "not binary" in _reason(exc) else _unreadable_kind(exc, "mask")
            col.add(kind, masks_dir, f"{path.name} ({_reason(exc)})")
            continue
        if m.shape != size:
            col.add(
                f"wrong mask size (expected {size[1]}x{size[0]})",
                masks_dir,
                f"{path.name} is {m.shape[1]}x{m.shape[0]}",
            )
            continue
        masks[tile_id] = m
    for tile_id in src.orphan_masks:
        col.add("mask without image", masks_dir, src.mask_path(tile_id).name)
    for tile_id in src.images_without_masks:
        path = src.image_path(tile_id)
        col.add("image without mask", path.parent, path.name)
    for tile_id in src.train_and_test_ids:
        col.add("id both in train and test", src.root / "test" / "images", f"{tile_id}.png")

    _check_train_csv(src, masks, col, size)
    _check_id_csv(src.sample_submission, "id", "rle_mask", src.test_ids, col, what="test image")
    depths_csv = src.root / "depths.csv"
    if depths_csv.exists():
        _check_depths_csv(src, depths_csv, col)

    rep.n_labelled, rep.n_unlabelled = len(src.labelled_ids), len(src.unlabelled_ids)
    if masks:
        stack = np.stack(list(masks.values()))
        classes = coverage_class(stack)
        rep.empty_fraction = float((classes == 0).mean())
        rep.coverage_hist = {name: int((classes == k).sum()) for k, (name, _, _) in enumerate(COVERAGE_BINS)}
    z = [src.depths[i] for i in src.labelled_ids + src.unlabelled_ids if i in src.depths]
    rep.n_depths = len(z)
    if z:
        rep.depth_range = (float(min(z)), float(max(z)))
    rep.problems = col.problems()
    return rep


def _check_depths_csv(src: TileSource, depths_csv: Path, col: _Collector) -> None:
    rows = _read_pairs(depths_csv, "id", "z", col)
    if rows is None:
        return
    ids = [i for i, _ in rows]
    for d in _duplicates(ids):
        col.add("duplicate id", depths_csv, d)
    for item in src.bad_depths:
        col.add("depth is not a number", depths_csv, item)
    known = set(src.labelled_ids) | set(src.unlabelled_ids)
    for i in sorted(set(ids) - known):
        col.add("id in CSV without image", depths_csv, i)
    for i in sorted(known - set(ids)):
        col.add("image without depth", depths_csv, i)


def _reason(exc: DataError) -> str:
    return getattr(exc, "message", None) or str(exc)


def _unreadable_kind(exc: DataError, what: str) -> str:
    """The problem kind of a file the reader refused: of a pixel format it does not take, or damaged."""
    if _reason(exc).startswith("unsupported"):
        return f"unsupported {what} format"
    return f"unreadable or truncated {what}"


def _read_pairs(path: Path, key: str, value: str, col: _Collector) -> list[tuple[str, str]] | None:
    """The rows of a CSV, or None (and a problem) when it cannot be read or lacks the columns."""
    try:
        return read_csv_column_pairs(path, key, value)
    except DataError as exc:
        col.add("unreadable CSV", path.parent, f"{path.name} ({_reason(exc)})")
        return None


def _check_train_csv(
    src: TileSource, masks: dict[str, np.ndarray], col: _Collector, size: tuple[int, int]
) -> None:
    if src.train_csv is None:
        return
    rows = _read_pairs(src.train_csv, "id", "rle_mask", col)
    if rows is None:
        return
    ids = [i for i, _ in rows]
    for d in _duplicates(ids):
        col.add("duplicate id", src.train_csv, d)
    labelled = set(src.labelled_ids)
    with_image, with_mask = set(src.images_without_masks), set(src.orphan_masks)
    for i in sorted(set(ids) - labelled):
        what = "mask" if i in with_image else "image" if i in with_mask else "image and mask"
        col.add(f"id in CSV without {what}", src.train_csv, i)
    for i in sorted(labelled - set(ids)):
        col.add("labelled tile missing from CSV", src.train_csv, i)
    for line, (tile_id, rle) in enumerate(rows, start=2):
        try:
            decoded = rle_decode(rle, size)
        except RLEError as exc:
            col.add("bad RLE", src.train_csv, f"line {line} {tile_id} ({_reason(exc)})")
            continue
        if tile_id in masks and not np.array_equal(decoded, masks[tile_id]):
            col.add("RLE disagrees with mask PNG", src.train_csv, tile_id)


def _check_id_csv(
    path: Path | None, key: str, value: str, ids: list[str], col: _Collector, what: str
) -> None:
    if path is None:
        return
    rows = _read_pairs(path, key, value, col)
    if rows is None:
        return
    listed = [i for i, _ in rows]
    for d in _duplicates(listed):
        col.add("duplicate id", path, d)
    for i in sorted(set(listed) - set(ids)):
        col.add(f"id in CSV without {what}", path, i)
    for i in sorted(set(ids) - set(listed)):
        col.add(f"{what} missing from CSV", path, i)


def format_report(rep: DataReport) -> list[str]:
    """Human-readable lines of a report (summary first, then one line per problem)."""
    lines = [
        f"dataset: {rep.root} ({rep.layout} layout)",
        f"labelled tiles: {rep.n_labelled}",
        f"unlabelled tiles: {rep.n_unlabelled}",
    ]
    if rep.coverage_hist:
        lines.append(f"empty masks: {rep.empty_fraction:.1%}")
        total = max(sum(rep.coverage_hist.values()), 1)
        for name, n in rep.coverage_hist.items():
            lines.append(f"  coverage {name:>10}: {n:6d} {'#' * round(40 * n / total)}")
    if rep.depth_range:
        lines.append(f"depths: {rep.n_depths} known, z from {rep.depth_range[0]:g} to {rep.depth_range[1]:g}")
    else:
        lines.append("depths: none (no depths.csv)")
    lines.append(f"flat single-value tiles: {len(rep.flat_tiles)}")
    if rep.problems:
        lines.append(f"problems: {len(rep.problems)}")
        lines += [f"  {p.line()}" for p in rep.problems]
    else:
        lines.append("problems: none")
    return lines
