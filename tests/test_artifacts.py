"""The artifacts layer: typed records, the probability store, folder objects, the one predictor, and
classifier runs in an ensemble (they feed the empty gate, never the mask average)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from saltseg.artifacts import (
    EnsembleDir,
    FoldDir,
    FoldSummary,
    RunDir,
    load_probs,
    read_oof,
    read_record,
    resolve_models,
    save_probs,
)
from saltseg.errors import DataError
from saltseg.inference.ensemble import build_ensemble
from saltseg.inference.tune import load_oof, tune_postprocess
from saltseg.predictor import EnsemblePredictor

RNG = np.random.default_rng(0)


def test_probability_store_round_trip(tmp_path: Path) -> None:
    probs = RNG.random((3, 101, 101)).astype(np.float32)
    probs[0, 0, 0] = np.nan  # a diverged model
    truth = RNG.random((3, 101, 101)) > 0.5
    save_probs(tmp_path / "a.npz", ["x", "y", "z"], probs, np.array([0.1, 0.5, 0.9]), truth)
    d = load_probs(tmp_path / "a.npz")
    assert d["ids"].tolist() == ["x", "y", "z"] and d["probs"].dtype == np.float32
    assert d["probs"][0, 0, 0] == 0.0 and np.abs(d["probs"][1:] - probs[1:]).max() <= 0.5 / 255 + 1e-6
    assert (d["truth"] == truth).all() and d["salt"].tolist() == pytest.approx([0.1, 0.5, 0.9])
    save_probs(tmp_path / "c.npz", ["x"], None, np.array([0.7]), truth[:1])  # a classifier: no masks
    d = load_probs(tmp_path / "c.npz")
    assert "probs" not in d and d["truth"].shape == (1, 101, 101)


def test_an_oof_file_of_the_previous_version_loads(tmp_path: Path) -> None:
    """Before the artifacts layer, OOF files had no ``width``: the truth is unpacked to the probs' width."""
    truth = RNG.random((2, 101, 101)) > 0.5
    with open(tmp_path / "oof.npz", "wb") as f:
        np.savez_compressed(
            f,
            ids=np.array(["a", "b"]),
            probs=np.full((2, 101, 101), 128, np.uint8),
            truth=np.packbits(truth, axis=-1),
        )
    oof = read_oof([tmp_path / "oof.npz"], [3])
    assert (oof.truth == truth).all() and oof.fold is not None and oof.fold.tolist() == [3, 3]


def test_damaged_or_foreign_files_are_one_data_error_naming_them(tmp_path: Path) -> None:
    (tmp_path / "summary.json").write_text('{"fold": 0, "status": "do')
    with pytest.raises(DataError, match="damaged") as exc:
        read_record(FoldSummary, tmp_path / "summary.json")
    assert str(tmp_path / "summary.json") in str(exc.value)
    (tmp_path / "summary.json").write_text('{"fold": "zero", "status": "done"}')
    with pytest.raises(DataError, match=r"not a saltseg FoldSummary \(fold"):
        read_record(FoldSummary, tmp_path / "summary.json")
    (tmp_path / "oof.npz").write_bytes(b"PK\x03\x04 not a zip")
    with pytest.raises(DataError, match="unreadable probability file"):
        load_probs(tmp_path / "oof.npz")


def test_a_fold_summary_of_an_older_version_loads_with_defaults(tmp_path: Path) -> None:
    fold = FoldDir(tmp_path / "fold0")
    fold.path.mkdir()
    old = {"fold": 0, "status": "done", "members": ["best.safetensors"], "unknown_new_key": 1}
    fold.summary_file.write_text(json.dumps(old))
    s = fold.read_summary()
    assert s is not None and s.member_scores == {} and s.best_member() == "best.safetensors"
    assert fold.members() == [fold.path / "best.safetensors"]
    assert FoldDir.looks_like(fold.path) and not RunDir.looks_like(fold.path)


def _fake_run(
    path: Path, ids: list[str], truth: np.ndarray, probs: np.ndarray | None, salt: np.ndarray | None
):
    fold = RunDir(path).fold(0)
    fold.path.mkdir(parents=True)
    save_probs(fold.oof_file, ids, probs, salt, truth)
    return path


def test_a_classifier_run_feeds_the_empty_gate_not_the_mask_average(tmp_path: Path) -> None:
    """Issue 12: a separate classifier's all-zero masks used to dilute the ensemble's OOF probabilities,
    so tuning picked a threshold prediction never met, and its salt probability never reached the gate."""
    n = 40
    ids = [f"t{k:02d}" for k in range(n)]
    truth = np.zeros((n, 101, 101), bool)
    truth[: n // 2, 20:60, 20:60] = True  # half the tiles hold salt
    seg = np.where(truth, 0.8, 0.0).astype(np.float32)
    seg[n // 2 :, 60:90, 60:90] = 0.9  # false positives on every empty tile, too large for min_area
    salt = np.r_[np.full(n // 2, 0.95), np.full(n - n // 2, 0.05)].astype(np.float32)
    a = _fake_run(tmp_path / "seg", ids, truth, seg, None)
    c = _fake_run(tmp_path / "cls", ids, truth, None, salt)
    summary = build_ensemble([a, c], tmp_path / "ens", how="equal")
    oof = EnsembleDir(tmp_path / "ens").load_oof()
    assert oof.probs is not None and np.abs(oof.probs - seg).max() <= 0.5 / 255 + 1e-6  # not diluted
    assert oof.salt is not None and oof.salt == pytest.approx(salt)
    kinds = {Path(m.run).name: (m.has_mask, m.weight, m.cv_score) for m in summary.members}
    assert kinds["cls"][0] is False and kinds["cls"][2] is None and kinds["seg"][0] is True
    assert kinds["cls"][1] == pytest.approx(kinds["seg"][1])  # as much weight as all segmentation runs
    _, log = tune_postprocess(load_oof(tmp_path / "ens"))
    gate = [s for s, _ in log if s.startswith("empty-head gate")]
    assert gate and gate[0] != "empty-head gate None" and log[-1][1] == pytest.approx(1.0)


class _Mask(torch.nn.Module):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = torch.nn.Parameter(torch.tensor(value))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"mask": torch.zeros_like(x) + self.value}


class _Salt(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(2.0))
        self.calls = 0

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls += 1
        return {"salt": x.mean(dim=(1, 2, 3)) * 0 + self.w}


def test_one_predictor_members_once_and_classifiers_only_in_the_gate() -> None:
    a, b, cls = _Mask(2.0), _Mask(-2.0), _Salt()
    predictor = EnsemblePredictor([a, b, cls], [0.25, 0.25, 0.5], channels_last=False, autocast=False)
    images = RNG.integers(0, 256, (10, 16, 16)).astype(np.uint8)
    pred = predictor.predict_tiles(images, batch_size=4, with_members=True)
    assert a.calls == b.calls == cls.calls == 3 * 2  # 3 batches x flip TTA: each member once per tile
    sig = torch.sigmoid(torch.tensor([2.0, -2.0])).tolist()
    assert pred.probs is not None and pred.probs == pytest.approx(
        np.full((10, 16, 16), np.mean(sig)), abs=1e-6
    )
    assert pred.salt is not None and pred.salt == pytest.approx(
        np.full(10, torch.sigmoid(torch.tensor(2.0)).item())
    )
    assert pred.member_probs is not None and pred.member_probs[2] is None
    assert pred.member_probs[0] == pytest.approx(np.full((10, 16, 16), sig[0]), abs=1e-6)


def test_resolve_models_of_an_ensemble_folder(tmp_path: Path) -> None:
    for name in ("r1", "r2"):
        fold = RunDir(tmp_path / name).fold(0)
        fold.path.mkdir(parents=True)
        fold.best_file.write_bytes(b"x")
    ens = tmp_path / "ens"
    ens.mkdir()
    spec = {
        "weighting": "cv",
        "members": [
            {"run": str(tmp_path / "r1"), "weight": 0.75},
            {"run": str(tmp_path / "r2"), "weight": 0.25},
        ],
    }
    (ens / "ensemble.json").write_text(json.dumps(spec))
    members = resolve_models([ens])
    assert [(m.path.parent.parent.name, m.weight) for m in members] == [("r1", 0.75), ("r2", 0.25)]
