"""Inference backends (saltseg.backends): torch, ONNX Runtime and OpenVINO give the same probabilities
within their tolerance, ``auto`` falls back when a backend fails, exported graphs are cached."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import saltseg.backends as backends
import saltseg.predictor as predictor_module
from saltseg.backends import TOLERANCE, candidates, installed, weights_digest
from saltseg.checkpoints import save_weights
from saltseg.cli import main
from saltseg.data.synth import write_kaggle_layout
from saltseg.errors import SaltsegError
from saltseg.inference.predict import load_prediction_probs
from saltseg.inference.tta import predict_batch
from saltseg.models import create_model
from saltseg.predictor import EnsemblePredictor

GRAPH_BACKENDS = [b for b in ("onnxruntime", "openvino") if installed(b)]
#: how far each backend may be from torch fp32: ONNX Runtime runs fp32, OpenVINO bf16 on AMX CPUs
ATOL = {"onnxruntime": 1e-4, "openvino": TOLERANCE["max"]}


@pytest.fixture(scope="module")
def _module_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(autouse=True)
def _shared_graph_cache(_module_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test of this module exports into the module's cache, never into ~/.cache: a model is
    exported once for all the tests that predict with it (each export takes seconds)."""
    monkeypatch.setenv("SALTSEG_CACHE", str(_module_cache))


@pytest.fixture
def _graph_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, _shared_graph_cache: None
) -> Path:
    """An empty cache of the test's own, for the tests that count exports, quantisations or files."""
    path = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("SALTSEG_CACHE", str(path))
    return path / "graphs"


def salt_model(seed: int = 0) -> torch.nn.Module:
    """A tiny residual dilated U-Net with an image-level head, its mask logits spread around 0."""
    torch.manual_seed(seed)
    model = create_model(
        {"arch": "dilated_unet", "residual": True, "base_channels": 4, "depth": 3, "image_head": True}
    ).eval()
    return model


def tiles(n: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (n, 1, 1), dtype=np.int64)
    noise = rng.integers(-40, 40, (n, 101, 101))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def fp32(models: list[torch.nn.Module], images: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    return EnsemblePredictor(models, backend="torch", autocast=False).predict_array(images)


def test_flip_tta_in_one_call_or_two_gives_the_same_answer() -> None:
    model = salt_model()
    x = torch.rand(3, 1, 101, 101)
    with torch.no_grad():
        a, b = model(x), model(torch.flip(x, dims=[-1]))
    want = (torch.sigmoid(a["mask"]) + torch.flip(torch.sigmoid(b["mask"]), dims=[-1])) / 2
    for batched in (False, True):
        got = predict_batch(model, x, batch_views=batched)
        torch.testing.assert_close(got["mask"], want, atol=1e-5, rtol=0)
        torch.testing.assert_close(got["salt"], (torch.sigmoid(a["salt"]) + torch.sigmoid(b["salt"])) / 2)
    plain = predict_batch(model, x, hflip=False)
    torch.testing.assert_close(plain["mask"], torch.sigmoid(a["mask"]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_graph_backend_matches_torch_fp32(backend: str) -> None:
    models = [salt_model(0), salt_model(1)]
    images = tiles()
    want_probs, _ = fp32(models, images)
    ens = EnsemblePredictor(models, weights=[0.7, 0.3], backend=backend)
    ref = EnsemblePredictor(models, weights=[0.7, 0.3], backend="torch", autocast=False)
    got = ens.predict_tiles(images, batch_size=5, with_members=True)  # 5: a last partial batch
    want = ref.predict_tiles(images, batch_size=5, with_members=True)
    assert ens.backend == backend and ens.check is not None and ens.check.passed
    assert ens.check.tiles == 5 and backend in ens.check.describe()
    np.testing.assert_allclose(got.probs, want.probs, atol=ATOL[backend])
    np.testing.assert_allclose(got.salt, want.salt, atol=ATOL[backend])
    for g, w in zip(got.member_probs, want.member_probs, strict=True):
        np.testing.assert_allclose(g, w, atol=ATOL[backend])
    assert not np.allclose(want_probs, 0.5, atol=0.01)  # the models say something


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_fused_members_give_the_unfused_answer_in_one_graph(backend: str, _module_cache: Path) -> None:
    models = [salt_model(0), salt_model(1), salt_model(2)]
    images = tiles()
    weights = [0.5, 0.3, 0.2]
    fused = EnsemblePredictor(models, weights=weights, backend=backend, fuse=True)
    apart = EnsemblePredictor(models, weights=weights, backend=backend)
    ref = EnsemblePredictor(models, weights=weights, backend="torch", autocast=False)
    got, want = fused.predict_tiles(images, batch_size=5), ref.predict_tiles(images, batch_size=5)
    assert fused.check is not None and fused.check.passed and fused.backend == backend
    assert (
        len(fused._graphs[(101, 101)]) == 1 and len(list((_module_cache / "graphs").glob("ens*.onnx"))) == 1
    )  # one graph, for either backend
    np.testing.assert_allclose(got.probs, want.probs, atol=ATOL[backend])
    np.testing.assert_allclose(got.salt, want.salt, atol=ATOL[backend])
    np.testing.assert_allclose(got.probs, apart.predict_tiles(images, batch_size=5).probs, atol=ATOL[backend])
    with pytest.raises(SaltsegError, match="each member's masks"):
        fused.predict_tiles(images, with_members=True)


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_graph_backend_without_tta(backend: str) -> None:
    model = salt_model()
    images = tiles(4)
    got = EnsemblePredictor([model], hflip=False, backend=backend).predict_array(images)[0]
    want = EnsemblePredictor([model], hflip=False, backend="torch", autocast=False).predict_array(images)[0]
    with_tta = fp32([model], images)[0]
    np.testing.assert_allclose(got, want, atol=ATOL[backend])
    assert np.abs(with_tta - want).max() > 10 * ATOL["onnxruntime"]  # TTA changes the answer


def test_auto_on_the_cpu_takes_the_first_installed_backend() -> None:
    order = candidates("auto", torch.device("cpu"))
    assert order == [b for b in backends.AUTO_ORDER if installed(b)] and order[-1] == "torch"
    ens = EnsemblePredictor([salt_model()], backend="auto")
    ens.predict_array(tiles(2))
    assert ens.backend == order[0]
    assert candidates("auto", torch.device("meta")) == ["torch"]  # another device: torch


def test_auto_falls_back_when_an_export_fails(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise SaltsegError("ONNX export failed (dynamo: unsupported operator)")

    monkeypatch.setattr(predictor_module, "member_graph", refuse)
    ens = EnsemblePredictor([salt_model()], backend="auto")
    with caplog.at_level(logging.WARNING):
        probs, _ = ens.predict_array(tiles(3))
    assert ens.backend == "torch" and ens.check is None and probs.shape == (3, 101, 101)
    assert "unsupported operator" in caplog.text
    explicit = EnsemblePredictor([salt_model()], backend=GRAPH_BACKENDS[0])
    with pytest.raises(SaltsegError, match="unsupported operator"):
        explicit.predict_array(tiles(3))


def test_a_backend_that_fails_the_accuracy_check(monkeypatch: pytest.MonkeyPatch, caplog) -> None:
    monkeypatch.setitem(TOLERANCE, "max", -1.0)  # nothing passes
    ens = EnsemblePredictor([salt_model()], backend="auto")
    with caplog.at_level(logging.WARNING):
        ens.predict_array(tiles(2))
    assert ens.backend == "torch" and "fails the accuracy check" in caplog.text
    with pytest.raises(SaltsegError, match="fails the accuracy check"):
        EnsemblePredictor([salt_model()], backend=GRAPH_BACKENDS[0]).predict_array(tiles(2))


def test_graphs_are_cached_per_weights_and_size(monkeypatch: pytest.MonkeyPatch, _graph_cache: Path) -> None:
    calls: list[object] = []
    real = backends.export_module
    monkeypatch.setattr(backends, "export_module", lambda *a, **k: calls.append(a) or real(*a, **k))
    model = salt_model()
    for _ in range(2):
        EnsemblePredictor([model], backend=GRAPH_BACKENDS[0]).predict_array(tiles(2))
    assert len(calls) == 1 and len(list(_graph_cache.glob("*.onnx"))) == 1
    EnsemblePredictor([model], backend=GRAPH_BACKENDS[0]).predict_array(tiles(2)[:, :64, :80])
    assert len(calls) == 2  # another tile size: another graph
    other = salt_model()
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert weights_digest(other) != weights_digest(model)
    meta = next(_graph_cache.glob("*.json"))
    assert json.loads(meta.read_text())["outputs"] == ["mask", "salt"]


def test_unknown_or_misplaced_backend() -> None:
    with pytest.raises(SaltsegError, match="unknown backend 'tensorrt'"):
        EnsemblePredictor([salt_model()], backend="tensorrt")  # type: ignore[arg-type]
    with pytest.raises(SaltsegError, match="runs on the CPU here"):
        candidates(GRAPH_BACKENDS[0], torch.device("cuda"))
    assert candidates("torch", torch.device("cuda")) == ["torch"]


def test_predict_command_names_its_backend(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_kaggle_layout(tmp_path / "data", n_train=4, n_test=6, seed=0)
    ckpt = save_weights(salt_model(), tmp_path / "m.safetensors")
    probs = {}
    for backend in ("torch", GRAPH_BACKENDS[0]):
        out = tmp_path / f"pred_{backend}"
        assert (
            main(["predict", str(ckpt), "--images", str(data), "--out", str(out), "--backend", backend]) == 0
        )
        assert f"on {backend}" in capsys.readouterr().out
        meta = json.loads((out / "meta.json").read_text())
        assert meta["backend"] == backend and (meta["backend_check"] is None) == (backend == "torch")
        probs[backend] = load_prediction_probs(out)["probs"]
    # the torch path runs bf16 autocast: the graph backends' tolerance holds against it too
    assert np.abs(probs["torch"] - probs[GRAPH_BACKENDS[0]]).max() <= TOLERANCE["max"]
    # two members as one graph: the same answer as the two apart
    ckpt2 = save_weights(salt_model(1), tmp_path / "m2.safetensors")
    pair = {}
    for fuse in ([], ["--fuse"]):
        out = tmp_path / f"pair{len(fuse)}"
        argv = ["predict", str(ckpt), str(ckpt2), "--images", str(data), "--out", str(out)]
        assert main([*argv, "--backend", GRAPH_BACKENDS[0], *fuse]) == 0
        pair[bool(fuse)] = load_prediction_probs(out)["probs"]
    assert np.abs(pair[True] - pair[False]).max() <= ATOL[GRAPH_BACKENDS[0]]
    assert np.abs(pair[True] - probs["torch"]).max() > 0.01  # the second member changes the answer
    code = main(
        ["predict", str(ckpt), "--images", str(data), "--out", str(tmp_path / "x"), "--backend", "nope"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("error: unknown backend 'nope'") and "\n" not in err


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_volume_sections_on_a_graph_backend(backend: str) -> None:
    """A section larger than a tile: the windows go through the graph, blended as with torch."""
    from saltseg.inference.sliding import predict_large

    model = salt_model()
    section = tiles(1, seed=3)[0]
    section = np.tile(section, (2, 3))[:180, :250]
    ens = EnsemblePredictor([model], backend=backend)
    got = predict_large(ens, section, tile=101, stride=50)
    want = predict_large(EnsemblePredictor([model], backend="torch", autocast=False), section)
    assert got.shape == section.shape and ens.backend == backend
    np.testing.assert_allclose(got, want, atol=ATOL[backend])


@pytest.mark.parametrize("backend", GRAPH_BACKENDS)
def test_int8_graph_calibrated_on_the_first_tiles(backend: str, _graph_cache: Path) -> None:
    import onnx

    model = salt_model()
    images = tiles(24, seed=5)
    ens = EnsemblePredictor([model], backend=backend, precision="int8")
    got = ens.predict_array(images)[0]
    want = fp32([model], images)[0]
    assert ens.backend == backend and ens.check is not None and ens.check.precision == "int8"
    assert "int8" in ens.check.describe()
    tol = backends.INT8_TOLERANCE
    assert np.abs(got - want).max() <= tol["max"] and np.abs(got - want).mean() <= tol["mean"]
    quantised = [p for p in _graph_cache.glob("*-int8-*.onnx")]
    assert len(quantised) == 1
    ops = {node.op_type for node in onnx.load(str(quantised[0])).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops


def test_int8_needs_a_graph_backend_and_known_precisions() -> None:
    with pytest.raises(SaltsegError, match="int8 needs a graph backend"):
        EnsemblePredictor([salt_model()], backend="torch", precision="int8")
    with pytest.raises(SaltsegError, match="unknown precision 'fp8'"):
        EnsemblePredictor([salt_model()], backend="auto", precision="fp8")


def test_int8_never_falls_back_to_torch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(backends.INT8_TOLERANCE, "max", -1.0)
    ens = EnsemblePredictor([salt_model()], backend="auto", precision="int8")
    with pytest.raises(SaltsegError, match="no graph backend could run the int8 model"):
        ens.predict_array(tiles(4))


def test_predict_calibrates_int8_on_more_than_one_batch(
    tmp_path: Path, monkeypatch, _graph_cache: Path
) -> None:
    """``predict --precision int8 --batch-size 4``: the graph is calibrated on up to 256 tiles."""
    data = write_kaggle_layout(tmp_path / "data", n_train=4, n_test=10, seed=1)
    ckpt = save_weights(salt_model(), tmp_path / "m.safetensors")
    seen: list[int] = []
    real = backends.quantize_graph
    monkeypatch.setattr(backends, "quantize_graph", lambda s, d, c: seen.append(len(c)) or real(s, d, c))
    argv = ["predict", str(ckpt), "--images", str(data), "--out", str(tmp_path / "p"), "--batch-size", "4"]
    assert main([*argv, "--backend", GRAPH_BACKENDS[0], "--precision", "int8"]) == 0
    assert seen == [10]  # every test tile, not the first batch of 4
    meta = json.loads((tmp_path / "p" / "meta.json").read_text())
    assert meta["backend"] == GRAPH_BACKENDS[0] and "int8" in meta["backend_check"]
