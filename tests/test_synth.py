"""Tests of the synthetic seismic tile generator and its Kaggle-layout writer."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from saltseg.data.rle import rle_decode
from saltseg.data.synth import SynthTiles, generate_tiles, write_kaggle_layout
from saltseg.errors import DataError


@pytest.fixture(scope="module")
def tiles() -> SynthTiles:
    return generate_tiles(200, seed=7)


def test_shapes_and_dtypes(tiles: SynthTiles) -> None:
    assert tiles.images.shape == (200, 101, 101) and tiles.images.dtype == np.uint8
    assert tiles.masks.shape == (200, 101, 101) and tiles.masks.dtype == np.bool_
    assert tiles.depths.shape == (200,) and tiles.depths.dtype == np.int64
    assert tiles.depths.min() >= 50 and tiles.depths.max() <= 959


def test_other_size_and_zero() -> None:
    small = generate_tiles(5, seed=1, size=64)
    assert small.images.shape == (5, 64, 64) and small.masks.shape == (5, 64, 64)
    empty = generate_tiles(0)
    assert empty.images.shape == (0, 101, 101) and empty.depths.shape == (0,)


def test_determinism_by_seed() -> None:
    a, b, c = generate_tiles(40, seed=3), generate_tiles(40, seed=3), generate_tiles(40, seed=4)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.masks, b.masks)
    assert np.array_equal(a.depths, b.depths)
    assert not np.array_equal(a.images, c.images)


def test_empty_share_and_flat_tiles() -> None:
    t = generate_tiles(2000, seed=11)
    has_salt = t.masks.reshape(len(t.masks), -1).any(axis=1)
    assert 0.30 <= 1.0 - has_salt.mean() <= 0.48
    flat = t.images.reshape(len(t.images), -1).std(axis=1) == 0
    assert 0.002 <= flat.mean() <= 0.05
    assert not has_salt[flat].any()  # flat tiles never carry salt
    # Salt is more common at mid depths than in the shallowest tiles, like the real data.
    assert has_salt[t.depths < 200].mean() < has_salt[(t.depths > 350) & (t.depths < 750)].mean()


def test_grey_levels_like_real(tiles: SynthTiles) -> None:
    live = tiles.images.reshape(len(tiles.images), -1).std(axis=1) > 0
    assert 100 < tiles.images[live].mean() < 140
    assert 25 < tiles.images[live].std() < 60


def test_coverage_spread(tiles: SynthTiles) -> None:
    cov = tiles.masks.reshape(len(tiles.masks), -1).mean(axis=1)
    assert ((cov > 0) & (cov < 0.1)).sum() >= 5
    assert (cov > 0.5).sum() >= 10
    assert (cov < 1.0).all()


def test_salt_boundary_stronger_than_interior(tiles: SynthTiles) -> None:
    boundary_amp, interior_amp = [], []
    for image, mask in zip(tiles.images, tiles.masks, strict=True):
        inner = ndimage.binary_erosion(mask, iterations=8)
        band = ndimage.binary_dilation(mask, iterations=2) & ~ndimage.binary_erosion(mask, iterations=2)
        if inner.sum() < 100 or band.sum() < 20:
            continue
        dev = np.abs(image.astype(np.float64) - np.median(image))
        boundary_amp.append(dev[band].mean())
        interior_amp.append(dev[inner].mean())
    assert len(boundary_amp) >= 20
    assert np.mean(boundary_amp) > 1.5 * np.mean(interior_amp)


def test_write_kaggle_layout(tmp_path: Path) -> None:
    out = write_kaggle_layout(tmp_path / "synth", n_train=30, n_test=5, seed=2)
    assert out == tmp_path / "synth"
    assert [p.name for p in tmp_path.iterdir()] == ["synth"]  # no temporary folder left behind
    with open(out / "train.csv", newline="") as f:
        train = list(csv.DictReader(f))
    with open(out / "depths.csv", newline="") as f:
        depths = list(csv.DictReader(f))
    with open(out / "sample_submission.csv", newline="") as f:
        sub = list(csv.DictReader(f))
    train_ids = [r["id"] for r in train]
    test_ids = [r["id"] for r in sub]
    assert len(train_ids) == 30 and len(test_ids) == 5
    assert len(set(train_ids) | set(test_ids)) == 35
    assert all(len(i) == 10 and int(i, 16) >= 0 for i in train_ids + test_ids)
    assert [r["id"] for r in depths] == train_ids + test_ids
    assert all(50 <= int(r["z"]) <= 959 for r in depths)
    assert all(r["rle_mask"] == "" for r in sub)
    assert sorted(p.stem for p in (out / "train" / "images").glob("*.png")) == sorted(train_ids)
    assert sorted(p.stem for p in (out / "train" / "masks").glob("*.png")) == sorted(train_ids)
    assert sorted(p.stem for p in (out / "test" / "images").glob("*.png")) == sorted(test_ids)

    n_salt = 0
    for row in train:
        image = Image.open(out / "train" / "images" / f"{row['id']}.png")
        assert image.mode == "RGB" and image.size == (101, 101)
        rgb = np.asarray(image)
        assert (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all()
        mask_img = Image.open(out / "train" / "masks" / f"{row['id']}.png")
        mask = np.asarray(mask_img) > 0
        if mask.any():
            n_salt += 1
            assert mask_img.mode == "I;16"
            assert set(np.unique(np.asarray(mask_img)).tolist()) == {0, 65535}
        else:
            assert mask_img.mode == "L"
        assert np.array_equal(rle_decode(row["rle_mask"]), mask)
    assert 0 < n_salt < 30
    test_image = Image.open(out / "test" / "images" / f"{test_ids[0]}.png")
    assert test_image.mode == "RGB"

    # Same seed, same content.
    again = write_kaggle_layout(tmp_path / "again", n_train=30, n_test=5, seed=2)
    assert (again / "train.csv").read_text() == (out / "train.csv").read_text()


def test_write_refuses_non_empty_dir(tmp_path: Path) -> None:
    target = tmp_path / "busy"
    target.mkdir()
    (target / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="busy"):
        write_kaggle_layout(target, n_train=3)
    assert [p.name for p in target.iterdir()] == ["keep.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert write_kaggle_layout(empty, n_train=3).is_dir()
