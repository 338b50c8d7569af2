"""Tests of saltseg.inference.sliding: blended overlapping windows over images of any size."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.artifacts import resolve_models
from saltseg.checkpoints import save_weights
from saltseg.data.synth import generate_tiles
from saltseg.errors import CheckpointError, DataError
from saltseg.inference.sliding import (
    blend_window,
    load_ensemble,
    predict_large,
    window_starts,
)
from saltseg.models import ModelConfig, create_model

TILE = 101


class Pointwise(nn.Module):
    """A 'model' whose probability is the pixel value itself: sliding windows must reproduce the image."""

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"mask": torch.logit(x.clamp(1e-4, 1 - 1e-4))}


def local_model() -> nn.Module:
    """A tiny U-Net (one pooling, small receptive field) with contrasted, centred predictions."""
    torch.manual_seed(0)
    config = ModelConfig(
        arch="vanilla_unet",
        depth=1,
        base_channels=4,
        attention=None,
        hypercolumn=False,
        batchnorm=False,
        input_size=128,
    )
    model = create_model(config).eval()
    head = model.net.heads.mask[-1]
    with torch.no_grad():
        head.weight.mul_(30)
        logits = model(torch.from_numpy(generate_tiles(4, seed=3).images[:, None]).float() / 255)["mask"]
        head.bias.sub_(logits.median())
    return model


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return local_model()


@pytest.fixture(scope="module")
def grid() -> tuple[np.ndarray, np.ndarray]:
    """12 synthetic tiles and the 303 x 404 image made of them (3 rows x 4 columns)."""
    tiles = generate_tiles(12, seed=1).images
    big = tiles.reshape(3, 4, TILE, TILE).transpose(0, 2, 1, 3).reshape(3 * TILE, 4 * TILE)
    return tiles, big


def assemble(per_tile: np.ndarray) -> np.ndarray:
    return per_tile.reshape(3, 4, TILE, TILE).transpose(0, 2, 1, 3).reshape(3 * TILE, 4 * TILE)


@pytest.mark.parametrize("autocast", [False, True])
def test_aligned_windows_equal_per_tile_predictions(model, grid, autocast: bool) -> None:
    tiles, big = grid
    per_tile = np.stack([predict_large(model, t, stride=TILE, autocast=autocast) for t in tiles])
    assert per_tile.std() > 0.1  # the model's predictions are not trivially constant
    large = predict_large(model, big, stride=TILE, batch_size=5, autocast=autocast)
    assert large.shape == big.shape and large.dtype == np.float32
    np.testing.assert_allclose(large, assemble(per_tile), atol=1e-4)


def test_overlapping_windows_agree_on_tile_interiors(model, grid) -> None:
    tiles, big = grid
    per_tile = assemble(np.stack([predict_large(model, t, stride=TILE) for t in tiles]))
    large = predict_large(model, big, stride=50)
    interior = np.zeros(big.shape, bool)
    for i in range(3):
        for j in range(4):
            interior[i * TILE + 15 : (i + 1) * TILE - 15, j * TILE + 15 : (j + 1) * TILE - 15] = True
    diff = np.abs(large - per_tile)[interior]
    assert diff.mean() < 0.05
    assert ((large > 0.5) == (per_tile > 0.5))[interior].mean() >= 0.9
    assert large.min() >= 0.0 and large.max() <= 1.0


@pytest.mark.parametrize("shape", [(150, 237), (101, 101), (40, 7), (1, 1), (260, 101)])
@pytest.mark.parametrize("stride", [101, 50, 33])
def test_any_size_is_reproduced_by_a_pointwise_model(shape: tuple[int, int], stride: int) -> None:
    image = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    probs = predict_large(Pointwise(), image, stride=stride, batch_size=7, autocast=False)
    assert probs.shape == shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs, np.clip(image / 255.0, 1e-4, 1 - 1e-4), atol=1e-5)


def test_any_size_with_a_real_model(model) -> None:
    image = generate_tiles(1, seed=5, size=237).images[0][:150]
    calls: list[tuple[int, int]] = []
    probs = predict_large(model, image, progress=lambda d, t: calls.append((d, t)), batch_size=4)
    assert probs.shape == (150, 237) and np.isfinite(probs).all()
    assert calls[-1][0] == calls[-1][1] == 5 * 3


def test_float_input_and_ensemble_weights(model) -> None:
    image = generate_tiles(1, seed=2).images[0]
    as_float = predict_large(model, image.astype(np.float32) / 255, stride=TILE, autocast=False)
    as_uint8 = predict_large(model, image, stride=TILE, autocast=False)
    np.testing.assert_allclose(as_float, as_uint8, atol=1e-6)
    mixed = predict_large([model, Pointwise()], image, stride=TILE, weights=[3, 1], autocast=False)
    expected = 0.75 * as_uint8 + 0.25 * np.clip(image / 255.0, 1e-4, 1 - 1e-4)
    np.testing.assert_allclose(mixed, expected, atol=1e-5)


def test_window_geometry() -> None:
    for length in (1, 50, 101, 150, 303, 1000):
        for stride in (1, 33, 50, 101):
            starts, before, after = window_starts(length, TILE, stride)
            assert before >= (TILE - stride) // 2 and after >= (TILE - stride) // 2
            assert starts[-1] + TILE == before + length + after
    assert window_starts(303, TILE, TILE) == ([0, 101, 202], 0, 0)
    w = blend_window(TILE, floor=0.1)
    assert w.shape == (TILE, TILE) and w.min() == pytest.approx(0.1 * 0.1, rel=0.01)
    assert w.max() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError):
        window_starts(100, TILE, 102)


def test_bad_images_are_clear_errors(model) -> None:
    with pytest.raises(DataError, match="2-D"):
        predict_large(model, np.zeros((2, 3, 4), np.uint8))
    with pytest.raises(DataError, match="NaN"):
        predict_large(model, np.full((5, 5), np.nan, np.float32))


def _resolve_checkpoints(paths: list[Path]) -> list[tuple[Path, float]]:
    return [(m.path, m.weight) for m in resolve_models(paths)]


def test_resolve_checkpoints(tmp_path: Path, model) -> None:
    run = tmp_path / "run"
    for k in range(2):
        fold = run / f"fold{k}"
        members = ["snapshots/s1.safetensors", "snapshots/s2.safetensors"] if k == 0 else ["best.safetensors"]
        for m in members:
            save_weights(model, fold / m)
        (fold / "summary.json").write_text(json.dumps({"members": members}))
    pairs = _resolve_checkpoints([run])
    assert [p.name for p, _ in pairs] == ["s1.safetensors", "s2.safetensors", "best.safetensors"]
    assert [w for _, w in pairs] == [0.25, 0.25, 0.5]
    assert [p.name for p, _ in _resolve_checkpoints([run / "fold0"])] == ["s1.safetensors", "s2.safetensors"]
    single = run / "fold1" / "best.safetensors"
    assert _resolve_checkpoints([single]) == [(single, 1.0)]
    models, weights = load_ensemble([single])
    assert len(models) == 1 and weights == [1.0] and not models[0].training
    with pytest.raises(CheckpointError, match="not found"):
        _resolve_checkpoints([tmp_path / "nope.safetensors"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="no trained model"):
        _resolve_checkpoints([tmp_path / "empty"])
