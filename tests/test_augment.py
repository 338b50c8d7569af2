"""Augmentations: geometric transforms move image and mask alike, photometric ones touch the image only."""

from __future__ import annotations

import pickle
import random

import numpy as np
import pydantic
import pytest
import torch

from saltseg.augment import AugmentConfig, build_transforms

GEOMETRIC = ("hflip", "vflip", "shift_scale", "rotate", "shear", "random_crop")
PHOTOMETRIC = ("brightness", "contrast", "gamma", "invert", "cutout")
NONE = {"hflip": 0.0}  # every other probability already defaults to 0


def make_mask(height: int = 101, width: int = 101) -> torch.Tensor:
    """An asymmetric binary pattern: an ellipse and a rectangle, (1,H,W) float32."""
    yy, xx = torch.meshgrid(torch.arange(height) / height, torch.arange(width) / width, indexing="ij")
    mask = ((yy - 0.4) / 0.3) ** 2 + ((xx - 0.55) / 0.2) ** 2 < 1
    mask[int(0.7 * height) : int(0.9 * height), int(0.1 * width) : int(0.4 * width)] = True
    return mask.float()[None]


MASK = make_mask()
IMAGE = MASK * 0.8 + 0.1  # the image encodes the mask: thresholding it at 0.5 gives the mask back


def augment(cfg: AugmentConfig, seed: int, image: torch.Tensor = IMAGE, mask: torch.Tensor = MASK):
    torch.manual_seed(seed)
    return build_transforms(cfg)(image, mask)


def assert_binary(mask: torch.Tensor) -> None:
    assert set(mask.unique().tolist()) <= {0, 1}


@pytest.mark.parametrize("name", [*GEOMETRIC, "all"])
def test_geometric_moves_image_and_mask_together(name: str) -> None:
    kwargs = dict.fromkeys(GEOMETRIC, 1.0) if name == "all" else {**NONE, name: 1.0}
    cfg = AugmentConfig(**kwargs)
    moved = 0
    for seed in range(6):
        image, mask = augment(cfg, seed)
        assert image.shape == IMAGE.shape and mask.shape == MASK.shape
        assert image.dtype == torch.float32 and mask.dtype == torch.float32
        assert_binary(mask)
        agreement = ((image > 0.5).float() == mask).float().mean().item()
        assert agreement >= 0.98, (name, seed, agreement)
        # reflection padding: no constant fill enters the tile, the image stays within its two levels
        assert image.min() >= 0.1 - 1e-5 and image.max() <= 0.9 + 1e-5
        moved += int(not torch.equal(mask, MASK))
    assert moved == 6


@pytest.mark.parametrize("name", ["hflip", "vflip"])
def test_flips_are_exact(name: str) -> None:
    dim = -1 if name == "hflip" else -2
    image, mask = augment(AugmentConfig(**{**NONE, name: 1.0}), seed=0)
    assert torch.equal(image, IMAGE.flip(dim)) and torch.equal(mask, MASK.flip(dim))


def test_hflip_probability() -> None:
    cfg = AugmentConfig(hflip=0.5)
    flipped = []
    for seed in range(20):
        image, mask = augment(cfg, seed)
        was_flipped = torch.equal(mask, MASK.flip(-1))
        assert torch.equal(image, IMAGE.flip(-1) if was_flipped else IMAGE)
        flipped.append(was_flipped)
    assert any(flipped) and not all(flipped)


@pytest.mark.parametrize("name", PHOTOMETRIC)
def test_photometric_changes_image_only(name: str) -> None:
    cfg = AugmentConfig(**{**NONE, name: 1.0})
    for seed in range(4):
        image, mask = augment(cfg, seed)
        assert torch.equal(mask, MASK)
        assert not torch.equal(image, IMAGE)
        assert image.min() >= 0.0 and image.max() <= 1.0


def test_invert_is_one_minus_image() -> None:
    image, _ = augment(AugmentConfig(**{**NONE, "invert": 1.0}), seed=0)
    assert torch.allclose(image, 1.0 - IMAGE)


def test_cutout_erases_a_square_of_the_image_only() -> None:
    cfg = AugmentConfig(**{**NONE, "cutout": 1.0, "cutout_size": 0.2})
    for seed in range(4):
        image, mask = augment(cfg, seed)
        assert torch.equal(mask, MASK)
        erased = image != IMAGE
        assert torch.all(image[erased] == 0.0)
        rows, cols = erased[0].any(dim=1).nonzero(), erased[0].any(dim=0).nonzero()
        assert len(rows) == len(cols) == 20 and int(erased.sum()) == 400  # round(0.2 * 101) squared


def test_mask_dtype_kept_and_binary() -> None:
    cfg = AugmentConfig(**dict.fromkeys(GEOMETRIC + PHOTOMETRIC, 1.0))
    for mask in (MASK, MASK.to(torch.uint8)):
        for seed in range(3):
            image, out = augment(cfg, seed, mask=mask)
            assert out.dtype == mask.dtype and out.shape == mask.shape
            assert image.dtype == torch.float32 and image.shape == IMAGE.shape
            assert image.min() >= 0.0 and image.max() <= 1.0
            assert_binary(out)


def test_non_square_tile() -> None:
    mask = make_mask(64, 80)
    image, out = augment(AugmentConfig(**dict.fromkeys(GEOMETRIC, 1.0)), 0, mask * 0.8 + 0.1, mask)
    assert image.shape == out.shape == (1, 64, 80)
    assert ((image > 0.5).float() == out).float().mean() >= 0.97


def test_same_torch_seed_same_output_whatever_other_rngs() -> None:
    cfg = AugmentConfig(**dict.fromkeys(GEOMETRIC + PHOTOMETRIC, 0.5))
    random.seed(1)
    np.random.seed(1)
    first = [augment(cfg, seed) for seed in range(6)]
    random.seed(2)
    np.random.seed(2)
    second = [augment(cfg, seed) for seed in range(6)]
    for (image_a, mask_a), (image_b, mask_b) in zip(first, second, strict=True):
        assert torch.equal(image_a, image_b) and torch.equal(mask_a, mask_b)
    assert any(not torch.equal(first[0][0], image) for image, _ in first[1:])


def test_all_zero_probabilities_is_identity() -> None:
    fn = build_transforms(AugmentConfig(hflip=0.0))
    state = torch.get_rng_state()
    image, mask = fn(IMAGE, MASK)
    assert image is IMAGE and mask is MASK
    assert torch.equal(torch.get_rng_state(), state)


def test_picklable_for_dataloader_workers() -> None:
    fn = build_transforms(AugmentConfig(rotate=1.0, brightness=1.0))
    clone = pickle.loads(pickle.dumps(fn))
    torch.manual_seed(3)
    a = fn(IMAGE, MASK)
    torch.manual_seed(3)
    b = clone(IMAGE, MASK)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_config_defaults_and_validation() -> None:
    cfg = AugmentConfig()
    assert cfg.hflip == 0.5 and cfg.vflip == 0.0 and cfg.scale_limit == (0.9, 1.1)
    assert cfg.crop_scale == (0.7, 1.0) and cfg.gamma_limit == (0.8, 1.2)
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(hflp=0.5)  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(rotate=1.5)
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(scale_limit=(1.1, 0.9))
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(crop_scale=(0.5, 1.2))
    with pytest.raises(ValueError, match="same size"):
        build_transforms(AugmentConfig())(IMAGE, MASK[:, :50])


def test_additive_brightness_adds_one_offset_to_every_pixel() -> None:
    cfg = AugmentConfig(**NONE, brightness=1.0, brightness_limit=0.2, brightness_mode="additive")
    mid = 0.5 * IMAGE + 0.25  # 0.3 and 0.7: an offset of up to 0.2 is never clamped
    shifts = set()
    for seed in range(8):
        image, mask = augment(cfg, seed, image=mid)
        delta = image - mid
        assert torch.allclose(delta, delta.flatten()[0].expand_as(delta), atol=1e-6)  # one offset
        assert abs(float(delta.flatten()[0])) <= 0.2 + 1e-6 and torch.equal(mask, MASK)
        shifts.add(round(float(delta.flatten()[0]), 4))
    assert len(shifts) > 4
    times = AugmentConfig(**NONE, brightness=1.0, brightness_limit=0.2)  # the multiplicative default
    image, _ = augment(times, 0, image=mid)
    ratio = image / mid
    assert torch.allclose(ratio, ratio.flatten()[0].expand_as(ratio), atol=1e-5)


def test_fixed_size_crop_is_not_resized_back() -> None:
    cfg = AugmentConfig(**NONE, fixed_crop=64)
    seen = set()
    for seed in range(6):
        image, mask = augment(cfg, seed)
        assert image.shape == mask.shape == (1, 64, 64)
        y, x = next(  # the window of the original it came from: the same pixels, no resampling
            (y, x)
            for y in range(38)
            for x in range(38)
            if torch.equal(mask, MASK[:, y : y + 64, x : x + 64])
            and torch.equal(image, IMAGE[:, y : y + 64, x : x + 64])
        )
        seen.add((y, x))
    assert len(seen) > 1
    with pytest.raises(ValueError, match="larger than"):
        augment(AugmentConfig(**NONE, fixed_crop=128), 0)
    with pytest.raises(pydantic.ValidationError):
        AugmentConfig(fixed_crop=4)
