"""Shared fixtures: tiny synthetic datasets in the Kaggle layout, and the real TGS data when present."""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import lightning.pytorch  # noqa: F401  (binds its log handler to the real stderr, before any capsys)
import numpy as np
import pytest
from PIL import Image

from saltseg.data.rle import rle_encode

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_REASON = "real TGS data not found at ../shared/data/tgs-salt"


def real_data_dir() -> Path | None:
    """The real TGS Salt folder: ``$SALTSEG_TGS_DATA`` or ``<repo>/../shared/data/tgs-salt``."""
    env = os.environ.get("SALTSEG_TGS_DATA")
    path = Path(env) if env else REPO_ROOT / ".." / "shared" / "data" / "tgs-salt"
    return path.resolve() if (path / "train" / "images").is_dir() else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip every ``@pytest.mark.realdata`` test, with a reason, where the real data is absent."""
    if real_data_dir() is not None:
        return
    skip = pytest.mark.skip(reason=REAL_DATA_REASON)
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _graph_cache_in_tmp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Exported inference graphs (saltseg.backends) go to a temporary folder, never to ~/.cache."""
    old = os.environ.get("SALTSEG_CACHE")
    os.environ["SALTSEG_CACHE"] = str(tmp_path_factory.mktemp("saltseg-cache"))
    yield
    if old is None:
        os.environ.pop("SALTSEG_CACHE", None)
    else:
        os.environ["SALTSEG_CACHE"] = old


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Path of the real TGS Salt data; the test is skipped (with a reason) where it is absent."""
    path = real_data_dir()
    if path is None:
        pytest.skip(REAL_DATA_REASON)
    return path


# ---------------------------------------------------------------------------------------------------
# tiny Kaggle-layout datasets


def write_png(path: Path, arr: np.ndarray) -> Path:
    """Write ``arr`` as a PNG: uint8 (H, W) -> L, uint8 (H, W, 3) -> RGB, uint16 (H, W) -> I;16."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.ascontiguousarray(arr)).save(path)
    return path


def kaggle_image(rng: np.random.Generator, size: int = 101) -> np.ndarray:
    """An 8-bit RGB tile with three identical channels, like the Kaggle images."""
    gray = rng.integers(0, 256, (size, size), dtype=np.uint8)
    return np.repeat(gray[..., None], 3, axis=2)


def kaggle_mask_pixels(mask: np.ndarray) -> np.ndarray:
    """Mask pixels as Kaggle stores them: all-zero 8-bit when empty, 16-bit {0, 65535} otherwise."""
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.uint8)
    return mask.astype(np.uint16) * 65535


def random_mask(rng: np.random.Generator, size: int = 101) -> np.ndarray:
    """A random blob-ish mask: a rectangle, sometimes with noise, sometimes empty or full."""
    kind = rng.integers(0, 4)
    m = np.zeros((size, size), dtype=bool)
    if kind == 0:
        return m
    if kind == 3:
        return rng.random((size, size)) < rng.uniform(0.05, 0.95)
    r0, c0 = rng.integers(0, size, 2)
    r1, c1 = rng.integers(r0 + 1, size + 1), rng.integers(c0 + 1, size + 1)
    m[r0:r1, c0:c1] = True
    return m


@dataclass
class TinyKaggle:
    """A tiny dataset written in the Kaggle layout, and what was written."""

    root: Path
    train_ids: list[str]
    test_ids: list[str]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    depths: dict[str, int] = field(default_factory=dict)

    def image(self, tile_id: str) -> Path:
        split = "train" if tile_id in self.train_ids else "test"
        return self.root / split / "images" / f"{tile_id}.png"

    def mask(self, tile_id: str) -> Path:
        return self.root / "train" / "masks" / f"{tile_id}.png"

    def rewrite_csv(self, name: str, header: list[str], rows: list[list[str]]) -> Path:
        path = self.root / name
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows(rows)
        return path


MakeTiny = Callable[..., TinyKaggle]


@pytest.fixture
def tiny_kaggle_dir(tmp_path: Path) -> MakeTiny:
    """Factory: ``make(n_train=6, n_test=3, seed=0, name="data", n_empty=2)`` writes a valid tiny
    Kaggle-layout dataset (RGB images, 8-bit empty and 16-bit non-empty masks, train.csv, depths.csv,
    sample_submission.csv) under ``tmp_path / name`` and returns a :class:`TinyKaggle`."""

    def make(
        n_train: int = 6,
        n_test: int = 3,
        seed: int = 0,
        name: str = "data",
        n_empty: int = 2,
        csvs: bool = True,
    ) -> TinyKaggle:
        rng = np.random.default_rng(seed)
        root = tmp_path / name
        train_ids = [f"tr{seed}_{k:03d}" for k in range(n_train)]
        test_ids = [f"te{seed}_{k:03d}" for k in range(n_test)]
        data = TinyKaggle(root, train_ids, test_ids)
        for k, tile_id in enumerate(train_ids):
            write_png(root / "train" / "images" / f"{tile_id}.png", kaggle_image(rng))
            if k < n_empty:
                m = np.zeros((101, 101), dtype=bool)
            else:
                m = np.zeros((101, 101), dtype=bool)
                r0, c0 = rng.integers(0, 90, 2)
                m[r0 : r0 + rng.integers(1, 12), c0 : c0 + rng.integers(1, 12)] = True
            write_png(root / "train" / "masks" / f"{tile_id}.png", kaggle_mask_pixels(m))
            data.masks[tile_id] = m
        for tile_id in test_ids:
            write_png(root / "test" / "images" / f"{tile_id}.png", kaggle_image(rng))
        for tile_id in train_ids + test_ids:
            data.depths[tile_id] = int(rng.integers(50, 960))
        if csvs:
            rles = [[i, rle_encode(data.masks[i])] for i in train_ids]
            data.rewrite_csv("train.csv", ["id", "rle_mask"], rles)
            data.rewrite_csv("depths.csv", ["id", "z"], [[i, str(z)] for i, z in data.depths.items()])
            data.rewrite_csv("sample_submission.csv", ["id", "rle_mask"], [[i, "1 1"] for i in test_ids])
        return data

    return make


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """Tiny models run fastest on one thread (OpenMP threads stall on a shared, busy CPU)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY = """\
name: tiny
model: {arch: vanilla_unet, base_channels: 8, depth: 3, attention: null, hypercolumn: false}
data: {folds: 3}
stages:
  - {name: warm, epochs: 1, loss: {name: bce_dice}, optimizer: {name: adam, lr: 0.003}}
  - {name: lovasz, epochs: 2, loss: {name: lovasz}, optimizer: {name: adam, lr: 0.001},
     schedule: {name: cosine_restarts, cycles: 2}, snapshots: true}
train: {batch_size: 16}
"""
FIGURES = ("fig-learning-curves", "fig-breakdown", "fig-threshold", "fig-gallery-worst", "fig-gallery-best")


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished one-fold run of a tiny model on 90 synthetic tiles (about 10 s)."""
    import torch

    from saltseg.data.synth import write_kaggle_layout
    from saltseg.training.config import load_config
    from saltseg.training.train import train_run

    root = tmp_path_factory.mktemp("diag")
    data = write_kaggle_layout(root / "data", n_train=90, n_test=4, seed=3)
    (root / "tiny.yaml").write_text(TINY)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: one thread is faster on shared cores (no oversubscription)
    try:
        train_run(load_config(root / "tiny.yaml"), data, root / "run", folds_to_run=[0], progress=False)
    finally:
        torch.set_num_threads(threads)
    return root / "run"
