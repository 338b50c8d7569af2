"""The training sampler: tiles with little salt drawn more often (``data.small_salt_weight``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch.utils.data import RandomSampler, WeightedRandomSampler

from saltseg.errors import ConfigError
from saltseg.training.config import load_config
from saltseg.training.data import LabelledTiles, SaltDataModule, small_salt_weights


def tiles_with_coverages(coverages: list[float], size: int = 10) -> LabelledTiles:
    """Tiles of ``size`` x ``size`` whose masks have the given salt fractions (rounded to whole pixels)."""
    n = len(coverages)
    masks = np.zeros((n, size, size), dtype=bool)
    for i, c in enumerate(coverages):
        masks[i].flat[: round(c * size * size)] = True
    images = np.zeros((n, size, size), dtype=np.uint8)
    return LabelledTiles(source=None, ids=[f"t{i}" for i in range(n)], images=images, masks=masks)  # type: ignore[arg-type]


def test_small_salt_weights_pick_the_0_to_10_percent_class() -> None:
    cov = np.array([0.0, 0.01, 0.10, 0.11, 0.5, 1.0])
    assert small_salt_weights(cov, 3.0).tolist() == [1.0, 3.0, 3.0, 1.0, 1.0, 1.0]


def test_weight_one_keeps_the_plain_shuffle() -> None:
    tiles = tiles_with_coverages([0.0, 0.05, 0.5, 0.9])
    dm = SaltDataModule(tiles, np.arange(4), np.arange(4), batch_size=2, transform=None)
    assert dm.train_sampler() is None
    assert isinstance(dm.train_dataloader().sampler, RandomSampler)


def test_small_salt_tiles_are_drawn_weight_times_as_often() -> None:
    # 10 small-salt tiles among 40: at weight 4, 40 / (30 + 40) = 57% of the draws instead of 25%
    covs = [0.05] * 10 + [0.0] * 15 + [0.5] * 15
    tiles = tiles_with_coverages(covs)
    train_idx = np.arange(40)
    dm = SaltDataModule(tiles, train_idx, train_idx[:4], batch_size=8, transform=None, small_salt_weight=4.0)
    loader = dm.train_dataloader()
    assert isinstance(loader.sampler, WeightedRandomSampler)
    torch.manual_seed(0)
    drawn = np.concatenate([list(iter(loader.sampler)) for _ in range(50)])
    assert len(drawn) == 50 * 40  # each epoch keeps its length
    share = np.isin(drawn, np.arange(10)).mean()
    assert 0.52 < share < 0.62


def test_sampler_follows_the_fold_order_and_counts_pseudo_tiles() -> None:
    # training tiles are 2 and 0 (in that order): tile 2 is the small one
    tiles = tiles_with_coverages([0.0, 0.5, 0.05])
    soft = np.zeros((2, 10, 10), dtype=np.uint8)
    soft[0].flat[:5] = 200  # 5% of the pixels above 0.5: small salt
    soft[1].flat[:50] = 100  # below 0.5 everywhere: empty
    pseudo = (np.zeros((2, 10, 10), dtype=np.uint8), soft)
    dm = SaltDataModule(tiles, np.array([2, 0]), np.array([1]), 1, None, pseudo=pseudo, small_salt_weight=5.0)
    assert dm.train_coverages().tolist() == pytest.approx([0.05, 0.0, 0.05, 0.0])
    sampler = dm.train_sampler()
    assert sampler is not None and sampler.weights.tolist() == [5.0, 1.0, 5.0, 1.0]
    assert len(dm.train_dataset()) == 4


@pytest.mark.parametrize("value", [0, -1, ".nan", 1000])
def test_a_bad_weight_is_a_config_error(tmp_path: Path, value: object) -> None:
    cfg = yaml.safe_load((Path(__file__).parents[1] / "configs" / "demo_quick.yaml").read_text())
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.raises(ConfigError, match="small_salt_weight"):
        load_config(path, [f"data.small_salt_weight={value}"])


def test_the_weight_reaches_the_data_module(tmp_path: Path) -> None:
    from saltseg.training.trainer import build_datamodule

    config = Path(__file__).parents[1] / "configs" / "demo_quick.yaml"
    cfg = load_config(config, ["data.small_salt_weight=2.5"])
    tiles = tiles_with_coverages([0.0, 0.05, 0.5, 0.9])
    dm = build_datamodule(cfg, tiles, np.arange(3), np.arange(3, 4))
    assert dm.small_salt_weight == 2.5
    sampler = dm.train_sampler()
    assert sampler is not None and sampler.weights.tolist() == [1.0, 2.5, 1.0]
