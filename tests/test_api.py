"""The public Python API (``saltseg.<name>``): what a notebook user calls instead of the CLI."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest

import saltseg
from saltseg.errors import DataError


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from saltseg.checkpoints import save_weights
    from saltseg.models import ModelConfig, create_model

    torch.manual_seed(0)
    cfg = ModelConfig(arch="vanilla_unet", depth=1, base_channels=4, attention=None, hypercolumn=False)
    return save_weights(create_model(cfg).eval(), tmp_path_factory.mktemp("api") / "tiny.safetensors")


def test_every_public_name_is_a_documented_function_or_class() -> None:
    for name in saltseg.__all__:
        if name == "__version__":
            continue
        obj = getattr(saltseg, name)
        assert callable(obj) and inspect.getdoc(obj), name
    from saltseg import api

    # saltseg/__init__.py names the API itself so that `import saltseg` stays light: the two lists agree
    assert sorted(n for n in saltseg.__all__ if n != "__version__") == sorted(api.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        saltseg.nope  # noqa: B018


def test_predict_arrays_takes_tiles_or_a_section_of_any_size(tiny_model: Path) -> None:
    from saltseg.inference.sliding import predict_large

    rng = np.random.default_rng(0)
    tiles = rng.integers(0, 256, (3, 101, 101), dtype=np.uint8)
    seg = saltseg.Segmenter.from_runs(tiny_model, backend="torch")
    probs = saltseg.predict_arrays(tiny_model, tiles, backend="torch")
    assert probs.shape == (3, 101, 101) and probs.dtype == np.float32
    np.testing.assert_allclose(probs, seg.probabilities(tiles)[0], atol=1e-6)

    section = rng.integers(0, 256, (150, 260), dtype=np.uint8)
    whole = saltseg.predict_arrays(tiny_model, section, stride=40, backend="torch")
    assert whole.shape == (150, 260) and 0 <= whole.min() <= whole.max() <= 1
    np.testing.assert_allclose(whole, predict_large(seg.predictor, section, stride=40), atol=1e-6)

    bad = section.astype(np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(DataError, match="finite 2-D"):
        saltseg.predict_arrays(tiny_model, bad, backend="torch")


def test_export_through_the_api_writes_a_verified_graph(tiny_model: Path, tmp_path: Path) -> None:
    report = saltseg.export(tiny_model, tmp_path / "m.onnx")
    assert report.path == tmp_path / "m.onnx" and report.path.stat().st_size > 1000
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-3
