"""Tests of saltseg.inference.export and ``saltseg export``: one ONNX graph of ensemble probabilities."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import onnx
import onnxruntime as ort

from saltseg.checkpoints import load_model, save_weights
from saltseg.cli import main
from saltseg.errors import CheckpointError
from saltseg.inference.export import EnsembleProbabilities, export_onnx
from saltseg.models import ModelConfig, create_model
from saltseg.predictor import predict_batch


def tiny(seed: int, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    fields = {"arch": "vanilla_unet", "depth": 2, "base_channels": 4, "attention": None, "input_size": 128}
    fields.update(overrides)
    return create_model(ModelConfig(**fields)).eval()


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run folder with two folds: fold0 has two snapshots (deep supervision), fold1 one model."""
    root = tmp_path_factory.mktemp("run")
    for k, members in enumerate(
        [["snapshots/a.safetensors", "snapshots/b.safetensors"], ["best.safetensors"]]
    ):
        for j, m in enumerate(members):
            save_weights(tiny(10 * k + j, deep_supervision=True, hypercolumn=True), root / f"fold{k}" / m)
        (root / f"fold{k}" / "summary.json").write_text(json.dumps({"members": members}))
    return root


def run_onnx(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(None, {"image": x}), strict=True))


def test_dynamo_export_with_dynamic_batch(tmp_path: Path, run: Path) -> None:
    ckpt = run / "fold1" / "best.safetensors"
    out = tmp_path / "model.onnx"
    report = export_onnx([ckpt], out)  # the default exporter: torch.export (dynamo)
    assert report.exporter == "dynamo" and report.outputs == ["mask", "salt"] and report.opset >= 18
    assert report.max_abs_diff is not None and report.max_abs_diff < 1e-4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]  # one file, no temporary
    x = torch.rand(3, 1, 101, 101, generator=torch.Generator().manual_seed(7))  # batch 3 != export's 2
    got = run_onnx(out, x.numpy())
    expected = predict_batch(load_model(ckpt), x, hflip=True)
    assert got["mask"].shape == (3, 1, 101, 101) and got["salt"].shape == (3,)
    np.testing.assert_allclose(got["mask"], expected["mask"].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["salt"], expected["salt"].numpy(), atol=1e-4)


def test_ensemble_export_matches_torch(tmp_path: Path, run: Path) -> None:
    out = tmp_path / "ensemble.onnx"
    report = export_onnx([run], out, exporter="torchscript")  # fast; dynamo is tested above
    assert report.exporter == "torchscript" and report.outputs == ["mask", "salt"]
    assert [p.name for p in report.members] == ["a.safetensors", "b.safetensors", "best.safetensors"]

    x = torch.rand(3, 1, 101, 101, generator=torch.Generator().manual_seed(7))
    got = run_onnx(out, x.numpy())
    # Reference: fold-weighted average of each member's flip-TTA probabilities (tta.predict_batch).
    members = [run / "fold0/snapshots/a.safetensors", run / "fold0/snapshots/b.safetensors"]
    members.append(run / "fold1/best.safetensors")
    weights = [0.25, 0.25, 0.5]
    preds = [predict_batch(load_model(p), x, hflip=True) for p in members]
    mask = sum(w * p["mask"] for w, p in zip(weights, preds, strict=True))
    salt = sum(w * p["salt"] for w, p in zip(weights, preds, strict=True))
    np.testing.assert_allclose(got["mask"], mask.numpy(), atol=1e-4)
    np.testing.assert_allclose(got["salt"], salt.numpy(), atol=1e-4)

    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["saltseg_hflip"] == "true" and len(json.loads(meta["saltseg_members"])) == 3


def test_export_command(tmp_path: Path, run: Path, capsys) -> None:
    ckpt = run / "fold1" / "best.safetensors"
    out = tmp_path / "sub" / "model.onnx"
    argv = ["export", str(ckpt), "--onnx", str(out), "--no-tta", "--opset", "17"]
    assert main(argv) == 0  # opset < 18 goes through the TorchScript exporter
    line = capsys.readouterr().out
    assert "wrote" in line and "opset 17" in line and "torchscript" in line
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    x = torch.rand(5, 1, 101, 101, generator=torch.Generator().manual_seed(3))
    got = run_onnx(out, x.numpy())
    expected = predict_batch(load_model(ckpt), x, hflip=False)
    np.testing.assert_allclose(got["mask"], expected["mask"].numpy(), atol=1e-4)
    np.testing.assert_allclose(got["salt"], expected["salt"].numpy(), atol=1e-4)


def test_corrupt_checkpoint_is_a_one_line_error(tmp_path: Path, run: Path, capsys) -> None:
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(CheckpointError):
        export_onnx([bad], tmp_path / "x.onnx")
    assert main(["export", str(bad), "--onnx", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {bad}:") and "\n" not in err
    assert main(["export", str(tmp_path / "missing"), "--onnx", str(tmp_path / "x.onnx")]) == 2
    assert "model not found" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_wrapper_averages_members_with_weights() -> None:
    class Const(torch.nn.Module):
        def __init__(self, logit: float, salt: bool) -> None:
            super().__init__()
            self.logit, self.salt = logit, salt

        def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
            out = {"mask": torch.full_like(x, self.logit)}
            if self.salt:
                out["salt"] = torch.full((x.shape[0],), self.logit)
            return out

    module = EnsembleProbabilities([Const(0.0, True), Const(2.0, False)], [1, 3], outputs=["mask", "salt"])
    mask, salt = module(torch.rand(2, 1, 8, 8))
    expected = 0.25 * 0.5 + 0.75 * torch.sigmoid(torch.tensor(2.0))
    assert torch.allclose(mask, torch.full((2, 1, 8, 8), float(expected)))
    assert torch.allclose(salt, torch.full((2,), 0.5))  # only the member with a salt head
