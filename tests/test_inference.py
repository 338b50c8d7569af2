"""The inference stage end to end on tiny synthetic runs: ``predict`` (streaming, TTA, model arguments,
clear errors), post-processing, ``tune``, ``ensemble``, ``pseudo`` (and training on pseudo-labels) and
``evaluate``.

Two tiny 2-fold runs (a 4-channel, 2-level U-Net, one short epoch) on 80 labelled + 30 test synthetic
tiles are trained once per module; everything else reuses them (copies where a test writes into a run).
"""

from __future__ import annotations

import csv
import itertools
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file, save_file

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.artifacts import load_probs
from saltseg.cli import main
from saltseg.data.synth import write_kaggle_layout
from saltseg.data.tiles import load_masks, open_dataset, read_mask
from saltseg.errors import ConfigError, DataError
from saltseg.inference import predict as predict_mod
from saltseg.inference.ensemble import ensemble_weights
from saltseg.inference.postprocess import (
    PostprocessConfig,
    apply_postprocess,
    load_postprocess,
)
from saltseg.inference.predict import load_prediction_probs, predict_folder, resolve_models
from saltseg.inference.pseudo import select_pseudo_labels
from saltseg.inference.tune import OOF, tune_postprocess
from saltseg.metrics.kaggle import coverage_class, iou_scores, kaggle_scores
from saltseg.submission import read_submission
from saltseg.training.config import parse_config
from saltseg.training.train import train_run

pytestmark = pytest.mark.slow

TINY_MODEL = {"arch": "vanilla_unet", "base_channels": 4, "depth": 2, "attention": None, "hypercolumn": False}


def tiny_config(**changes: Any) -> dict:
    cfg: dict = {
        "name": "tiny",
        "seed": 0,
        "data": {"folds": 2},
        "model": dict(TINY_MODEL),
        "stages": [{"name": "s0", "epochs": 2, "loss": {"name": "bce_dice"}, "optimizer": {"lr": 0.03}}],
        "train": {"batch_size": 8, "accelerator": "cpu", "devices": 1, "limit_train_batches": 5},
    }
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(cfg.get(k), dict):
            cfg[k].update(v)
        else:
            cfg[k] = v
    return cfg


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("infer")


@pytest.fixture(scope="module")
def data(root: Path) -> Path:
    return write_kaggle_layout(root / "data", n_train=80, n_test=30, seed=0)


@pytest.fixture(scope="module")
def run_a(root: Path, data: Path, _one_torch_thread: None) -> Path:
    train_run(parse_config(tiny_config()), data, root / "run_a", progress=False)
    return root / "run_a"


@pytest.fixture(scope="module")
def run_b(root: Path, data: Path, _one_torch_thread: None) -> Path:
    """A second run, with an image-level salt head (deep supervision) and another seed."""
    cfg = tiny_config(
        seed=1,
        model={"deep_supervision": True},
        stages=[{"epochs": 1, "loss": {"name": "lovasz", "deep_supervision": {}}, "optimizer": {"lr": 0.01}}],
    )
    train_run(parse_config(cfg), data, root / "run_b", progress=False)
    return root / "run_b"


@pytest.fixture(scope="module")
def prediction(root: Path, run_a: Path, data: Path) -> dict[str, Path]:
    """``saltseg predict RUN --images DATA --out PRED --csv SUB`` (default TTA, default post-processing)."""
    pred, sub = root / "pred", root / "sub.csv"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred), "--csv", str(sub)]) == 0
    return {"pred": pred, "sub": sub}


def sample_ids(data: Path) -> list[str]:
    with open(data / "sample_submission.csv", newline="") as f:
        return [r["id"] for r in csv.DictReader(f)]


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def one_error(argv: list[str], capsys: pytest.CaptureFixture[str], *must: str) -> str:
    """Run the CLI, expect exit 2 and exactly one ``error:`` line (no traceback) containing ``must``."""
    code, _, err = cli(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for text in must:
        assert text in lines[0], lines[0]
    return lines[0]


def write_gray(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------------------------- predict


def test_predict_writes_prediction_folder_and_valid_submission(
    prediction: dict[str, Path], data: Path, run_a: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred, sub = prediction["pred"], prediction["sub"]
    assert (pred / "masks.csv").read_text() == sub.read_text()
    chunks = sorted(pred.glob("probs/chunk-*.npz"))
    assert len(chunks) == 1
    with np.load(chunks[0]) as z:
        assert z["probs"].dtype == np.uint8 and z["probs"].shape == (30, 101, 101)
        assert z["ids"].astype(str).tolist() == sample_ids(data)  # sample-submission order
    assert not (pred / ".probs.tmp").exists()

    meta = json.loads((pred / "meta.json").read_text())
    assert meta["n_tiles"] == 30 and meta["hflip_tta"] is True and meta["split"] == "test"
    assert meta["postprocess"] == PostprocessConfig().model_dump()
    weights = [m["weight"] for m in meta["models"]]
    assert len(weights) == 2 and weights == pytest.approx([0.5, 0.5])
    assert {Path(m["path"]).parent.name for m in meta["models"]} == {"fold0", "fold1"}

    # the masks are the default post-processing of the saved probabilities (up to uint8 rounding)
    probs = load_prediction_probs(pred)
    src = open_dataset(data)
    images = np.stack([np.asarray(Image.open(src.image_path(i)).convert("L")) for i in probs["ids"]])
    expected = apply_postprocess(probs["probs"], PostprocessConfig(), images)
    masks = read_submission(pred / "masks.csv")
    got = np.stack([masks[i] for i in probs["ids"]])
    assert (got != expected).mean() < 1e-3
    assert meta["n_empty"] == int((~got.reshape(30, -1).any(axis=1)).sum())

    code, out, _ = cli(["submission", "check", sub, data], capsys)
    assert code == 0 and "valid submission" in out


def test_predict_streams_probabilities_in_chunks(
    prediction: dict[str, Path], run_a: Path, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(predict_mod, "CHUNK", 8)
    pred = tmp_path / "pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred), "--batch-size", "4"]) == 0
    chunks = sorted(pred.glob("probs/chunk-*.npz"))
    sizes = []
    for f in chunks:
        with np.load(f) as z:
            sizes.append(len(z["ids"]))
    assert sizes == [8, 8, 8, 6]
    streamed, whole = load_prediction_probs(pred), load_prediction_probs(prediction["pred"])
    assert streamed["ids"].tolist() == whole["ids"].tolist() == sample_ids(data)
    np.testing.assert_allclose(streamed["probs"], whole["probs"], atol=2.5 / 255)
    assert (pred / "masks.csv").read_text().splitlines()[0] == "id,rle_mask"
    assert json.loads((pred / "meta.json").read_text())["n_chunks"] == 4


def test_predict_without_tta_differs(
    prediction: dict[str, Path], run_a: Path, data: Path, tmp_path: Path
) -> None:
    pred = tmp_path / "pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred), "--no-tta"]) == 0
    assert json.loads((pred / "meta.json").read_text())["hflip_tta"] is False
    a, b = load_prediction_probs(pred), load_prediction_probs(prediction["pred"])
    assert a["ids"].tolist() == b["ids"].tolist()
    assert np.abs(a["probs"] - b["probs"]).max() > 2 / 255


def test_predict_device_option(
    prediction: dict[str, Path], run_a: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["predict", run_a, "--images", data, "--out", tmp_path / "p"]
    one_error([*base, "--device", "tpu9"], capsys, "--device tpu9")
    if not torch.cuda.is_available():
        one_error([*base, "--device", "cuda"], capsys, "--device cuda")
    assert not (tmp_path / "p").exists(), "nothing is written when the device is unusable"
    code, out, _ = cli([*base, "--device", "cpu"], capsys)
    assert code == 0 and "predicted 30 tiles" in out
    if not torch.cuda.is_available():  # the default prediction ran on the CPU too
        assert (tmp_path / "p" / "masks.csv").read_text() == prediction["sub"].read_text()


def test_predict_with_a_checkpoint_file_or_a_fold_folder(run_a: Path, data: Path, tmp_path: Path) -> None:
    best = run_a / "fold0" / "best.safetensors"
    assert main(["predict", str(best), "--images", str(data), "--out", str(tmp_path / "file")]) == 0
    assert (
        main(["predict", str(run_a / "fold0"), "--images", str(data), "--out", str(tmp_path / "fold")]) == 0
    )
    meta = json.loads((tmp_path / "file" / "meta.json").read_text())
    assert meta["models"] == [{"path": str(best), "weight": 1.0}]
    fold_meta = json.loads((tmp_path / "fold" / "meta.json").read_text())
    assert [Path(m["path"]) for m in fold_meta["models"]] == [best]
    np.testing.assert_array_equal(
        load_prediction_probs(tmp_path / "file")["probs"], load_prediction_probs(tmp_path / "fold")["probs"]
    )
    # no probabilities kept with --no-probs, and an earlier prediction's are not left behind
    assert (
        main(["predict", str(best), "--images", str(data), "--out", str(tmp_path / "file"), "--no-probs"])
        == 0
    )
    assert not list((tmp_path / "file").glob("probs/*.npz"))
    assert (tmp_path / "file" / "masks.csv").exists()


def test_resolve_models_weights(tmp_path: Path, run_a: Path) -> None:
    members = resolve_models([run_a])
    assert [m.path.parent.name for m in members] == ["fold0", "fold1"]
    assert sum(m.weight for m in members) == pytest.approx(1.0)
    assert members[0].weight == pytest.approx(members[1].weight)

    # a run whose folds have snapshots: each fold weighs the same whatever its number of members
    run = tmp_path / "run"
    (run / "fold0" / "snapshots").mkdir(parents=True)
    (run / "fold1").mkdir()
    (run / "fold2").mkdir()
    for name in ("a", "b", "c"):
        (run / "fold0" / "snapshots" / f"{name}.safetensors").write_bytes(b"x")
    (run / "fold0" / "summary.json").write_text(
        json.dumps(
            {
                "members": ["snapshots/a.safetensors", "snapshots/b.safetensors", "snapshots/c.safetensors"],
                "status": "done",
            }
        )
    )
    (run / "fold1" / "best.safetensors").write_bytes(b"x")
    (run / "fold1" / "summary.json").write_text(
        json.dumps({"members": ["best.safetensors"], "status": "done"})
    )
    (run / "fold2" / "summary.json").write_text(
        json.dumps({"members": ["stage0/end.safetensors"], "status": "failed"})
    )
    (run / "summary.json").write_text(json.dumps({"run": str(run), "folds": []}))
    members = resolve_models([run])
    by_fold: dict[str, float] = {}
    for m in members:
        fold = m.path.parent.name if m.path.parent.name.startswith("fold") else m.path.parent.parent.name
        by_fold[fold] = by_fold.get(fold, 0.0) + m.weight
    assert by_fold == pytest.approx({"fold0": 0.5, "fold1": 0.5}), "a failed fold is left out"
    assert sum(m.weight for m in members) == pytest.approx(1.0)
    # a fold folder alone, even one whose name does not start with "fold"
    shutil.copytree(run / "fold0", tmp_path / "my_model")
    assert [m.path.name for m in resolve_models([tmp_path / "my_model"])] == [
        "a.safetensors",
        "b.safetensors",
        "c.safetensors",
    ]


# ---------------------------------------------------------------------------------------------- errors


def test_corrupt_checkpoint(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "garbage.safetensors"
    bad.write_bytes(os.urandom(2000))
    one_error(["predict", bad, "--images", data, "--out", tmp_path / "p"], capsys, str(bad), "safetensors")


def test_truncated_checkpoint(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (run_a / "fold0" / "best.safetensors").read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(raw[: len(raw) // 2])
    one_error(["predict", bad, "--images", data, "--out", tmp_path / "p"], capsys, str(bad))


def test_foreign_safetensors(tmp_path: Path, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    foreign = tmp_path / "foreign.safetensors"
    save_file({"weight": torch.zeros(3, 3)}, str(foreign))
    one_error(
        ["predict", foreign, "--images", data, "--out", tmp_path / "p"], capsys, str(foreign), "not a saltseg"
    )


def _rewrite_metadata(src: Path, dst: Path, edit: Any) -> Path:
    with safe_open(str(src), framework="pt") as f:
        meta = dict(f.metadata())
    tensors = load_file(str(src))
    edit(meta)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_checkpoint_config_not_matching_weights(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def wider(meta: dict) -> None:
        cfg = json.loads(meta["model_config"])
        cfg["base_channels"] = 8
        meta["model_config"] = json.dumps(cfg)

    bad = _rewrite_metadata(run_a / "fold0" / "best.safetensors", tmp_path / "wider.safetensors", wider)
    one_error(["predict", bad, "--images", data, "--out", tmp_path / "p"], capsys, str(bad), "do not match")

    def broken(meta: dict) -> None:
        meta["model_config"] = '{"arch": "vanilla_unet", "depth": "deep"}'

    bad = _rewrite_metadata(run_a / "fold0" / "best.safetensors", tmp_path / "broken.safetensors", broken)
    one_error(["predict", bad, "--images", data, "--out", tmp_path / "p"], capsys, str(bad), "model config")


class _Payload:
    """Unpickling this creates a file: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (Path.touch, (self.marker,))


def test_checkpoints_never_unpickle(
    tmp_path: Path,
    run_a: Path,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(pickle.dumps({"state_dict": _Payload(marker)}))
    pt = tmp_path / "model.pt"
    torch.save({"weight": torch.zeros(2)}, pt)
    one_error(["predict", evil, "--images", data, "--out", tmp_path / "p"], capsys, str(evil))
    one_error(["predict", pt, "--images", data, "--out", tmp_path / "p"], capsys, str(pt))
    assert not marker.exists()

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("prediction must not unpickle anything")

    import saltseg.checkpoints as ckpt

    loaded: list[str] = []
    real_load_file = ckpt.load_file

    def spy(path: str, *args: Any, **kwargs: Any) -> dict:
        loaded.append(Path(path).name)
        return real_load_file(path, *args, **kwargs)

    monkeypatch.setattr(ckpt, "load_file", spy)
    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    meta = predict_folder([run_a], data, tmp_path / "ok")
    assert meta.n_tiles == 30
    assert loaded == ["best.safetensors", "best.safetensors"]  # both folds, through safetensors


def test_image_errors(tmp_path: Path, run_a: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rng = np.random.default_rng(0)
    empty = tmp_path / "empty"
    empty.mkdir()
    one_error(["predict", run_a, "--images", empty, "--out", tmp_path / "p"], capsys, str(empty), "no PNG")

    bad = tmp_path / "bad"
    write_gray(bad / "a.png", rng.integers(0, 255, (101, 101)))
    (bad / "b.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really a png")
    one_error(["predict", run_a, "--images", bad, "--out", tmp_path / "p"], capsys, str(bad / "b.png"))

    big = tmp_path / "big"
    for k in range(3):
        write_gray(big / f"t{k}.png", rng.integers(0, 255, (200, 200)))
    msg = one_error(["predict", run_a, "--images", big, "--out", tmp_path / "p"], capsys, "saltseg volume")
    assert "big/t0.png" in msg and "200x200" in msg and "128" in msg

    mixed = tmp_path / "mixed"
    write_gray(mixed / "a.png", rng.integers(0, 255, (101, 101)))
    write_gray(mixed / "b.png", rng.integers(0, 255, (96, 96)))
    one_error(
        ["predict", run_a, "--images", mixed, "--out", tmp_path / "p", "--batch-size", "1"],
        capsys,
        str(mixed / "b.png"),
    )

    one_error(
        ["predict", tmp_path / "nope", "--images", big, "--out", tmp_path / "p"], capsys, "model not found"
    )


def test_failed_prediction_keeps_the_earlier_one(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tmp_path / "pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred)]) == 0
    before = {p.name: p.read_bytes() for p in [pred / "masks.csv", *pred.glob("probs/*.npz")]}
    bad = tmp_path / "bad"
    write_gray(bad / "a.png", np.zeros((101, 101)))
    (bad / "b.png").write_bytes(b"garbage")
    one_error(["predict", run_a, "--images", bad, "--out", pred, "--batch-size", "1"], capsys, "b.png")
    after = {p.name: p.read_bytes() for p in [pred / "masks.csv", *pred.glob("probs/*.npz")]}
    assert after == before
    assert not (pred / ".probs.tmp").exists()


def test_bad_postprocess_arguments(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_error(
        ["predict", run_a, "--images", data, "--out", tmp_path / "p", "--threshold", "1.5"],
        capsys,
        "threshold",
    )
    with pytest.raises(SystemExit) as exc:
        main(
            ["predict", str(run_a), "--images", str(data), "--out", str(tmp_path / "p"), "--batch-size", "0"]
        )
    assert exc.value.code == 2 and "at least 1" in capsys.readouterr().err
    pp = tmp_path / "pp.json"
    pp.write_text(json.dumps({"threshold": 0.4, "thresold": 0.3}))
    one_error(
        ["predict", run_a, "--images", data, "--out", tmp_path / "p", "--postprocess", pp],
        capsys,
        str(pp),
        "thresold",
        "unknown key",
    )


# -------------------------------------------------------------------------------------- post-processing


def test_postprocess_threshold_flat_area_and_gate() -> None:
    rng = np.random.default_rng(0)
    probs = np.full((4, 101, 101), 0.1, dtype=np.float32)
    probs[0, :50] = 0.6  # a big region at 0.6
    probs[1, :50] = 0.9  # same on a flat tile
    probs[2, :2, :3] = 0.9  # 6 salt pixels
    probs[3, :50] = 0.9
    images = rng.integers(0, 256, (4, 101, 101)).astype(np.uint8)
    images[1] = 117
    salt = np.array([0.9, 0.9, 0.9, 0.2])

    m = apply_postprocess(probs, PostprocessConfig(threshold=0.5, flat_empty=False))
    assert m.dtype == bool and m.shape == probs.shape
    assert m.reshape(4, -1).sum(1).tolist() == [5050, 5050, 6, 5050]
    m = apply_postprocess(probs, PostprocessConfig(threshold=0.7, flat_empty=False))
    assert m.reshape(4, -1).sum(1).tolist() == [0, 5050, 6, 5050]
    # flat tiles are forced empty (only when the images are given)
    m = apply_postprocess(probs, PostprocessConfig(), images)
    assert m.reshape(4, -1).sum(1).tolist() == [5050, 0, 6, 5050]
    assert apply_postprocess(probs, PostprocessConfig())[1].sum() == 5050
    # minimum area
    assert apply_postprocess(probs, PostprocessConfig(min_area=7))[2].sum() == 0
    assert apply_postprocess(probs, PostprocessConfig(min_area=6))[2].sum() == 6
    # empty-head gate with salt probabilities; ignored without them
    m = apply_postprocess(probs, PostprocessConfig(empty_threshold=0.5), images, salt)
    assert m.reshape(4, -1).sum(1).tolist() == [5050, 0, 6, 0]
    assert apply_postprocess(probs, PostprocessConfig(empty_threshold=0.5), images)[3].sum() == 5050


def test_dense_crf_cleans_a_noisy_map() -> None:
    pytest.importorskip("pydensecrf", reason="pydensecrf2 not installed (the crf extra)")
    rng = np.random.default_rng(0)
    truth = np.zeros((1, 101, 101), bool)
    truth[0, 20:80, 30:90] = True
    image = (np.where(truth[0], 200, 60) + rng.integers(0, 10, (101, 101))).astype(np.uint8)
    probs = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.25, truth.shape), 0.01, 0.99).astype(
        np.float32
    )
    plain = apply_postprocess(probs, PostprocessConfig(), image[None])
    crf = apply_postprocess(probs, PostprocessConfig(crf=True), image[None])
    assert crf.shape == (1, 101, 101) and crf.dtype == bool
    assert (crf != plain).sum() > 100
    assert iou_scores(crf, truth)[0] > iou_scores(plain, truth)[0] + 0.2
    with pytest.raises(ValueError, match="images"):
        apply_postprocess(probs, PostprocessConfig(crf=True))


def test_load_postprocess(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"threshold": 0.42, "min_area": 10, "notes": {"tuning": []}}))
    cfg = load_postprocess(good)
    assert cfg.threshold == 0.42 and cfg.min_area == 10 and cfg.flat_empty
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"threshold": 0.42, "min_aera": 10}))
    with pytest.raises(ConfigError, match=r"min_aera: unknown key") as err:
        load_postprocess(bad)
    assert str(bad) in str(err.value)
    bad.write_text(json.dumps({"threshold": 2}))
    with pytest.raises(ConfigError, match="threshold"):
        load_postprocess(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_postprocess(bad)
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_postprocess(bad)
    with pytest.raises(ConfigError, match="not found"):
        load_postprocess(tmp_path / "missing.json")


# ------------------------------------------------------------------------------------------------ tune


def constructed_oof(n: int = 40, seed: int = 0) -> OOF:
    """OOF probabilities right only above a threshold of 0.7, with small false spots on empty tiles
    (removed only by a minimum area)."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 101, 101), bool)
    probs = np.full((n, 101, 101), 0.65, np.float32)
    for k in range(n):
        if k % 2 == 0:
            r, c = rng.integers(0, 60, 2)
            truth[k, r : r + 30, c : c + 30] = True
            probs[k][truth[k]] = 0.75
        else:
            r, c = rng.integers(0, 95, 2)
            probs[k, r : r + 2, c : c + 3] = 0.9
    probs = np.round(probs * 255) / 255  # as saved (uint8)
    images = rng.integers(0, 256, (n, 101, 101)).astype(np.uint8)
    return OOF([f"t{k}" for k in range(n)], probs, truth, None, images)


def test_tune_postprocess_finds_threshold_and_area() -> None:
    oof = constructed_oof()
    cfg, log = tune_postprocess(oof)
    assert 0.65 < cfg.threshold < 0.75
    assert 6 < cfg.min_area <= 900
    scores = [s for _, s in log]
    assert scores[0] < 0.1 and scores[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(scores))
    assert float(kaggle_scores(apply_postprocess(oof.probs, cfg, oof.images), oof.truth).mean()) == scores[-1]
    assert [s.split()[0] for s, _ in log] == ["threshold", "threshold", "seeded", "flat", "min"]
    assert cfg.seed_threshold is None  # the false spots are the brightest pixels: seeds cannot help


def seeded_oof(n: int = 40, seed: int = 1) -> OOF:
    """Salt whose confident core (0.8) is ringed by faint true salt (0.45), and faint false blobs (0.45, no
    confident pixel) on the empty tiles: only a low threshold kept to seeded regions gets both right."""
    rng = np.random.default_rng(seed)
    truth = np.zeros((n, 101, 101), bool)
    probs = np.full((n, 101, 101), 0.1, np.float32)
    for k in range(n):
        r, c = rng.integers(10, 60, 2)
        if k % 2 == 0:
            truth[k, r : r + 30, c : c + 30] = True
            probs[k, r : r + 30, c : c + 30] = 0.45
            probs[k, r + 10 : r + 20, c + 10 : c + 20] = 0.8
        else:
            probs[k, r : r + 20, c : c + 20] = 0.45
    return OOF([f"t{k}" for k in range(n)], np.round(probs * 255) / 255, truth, None, None)


def test_keep_seeded_regions_keeps_only_regions_with_a_confident_pixel_in_their_own_tile() -> None:
    from saltseg.inference.postprocess import keep_seeded_regions

    probs = np.zeros((2, 101, 101), np.float32)
    probs[0, 10:20, 10:20] = 0.45
    probs[0, 14, 14] = 0.9  # a seed: the whole region stays
    probs[0, 50:60, 50:60] = 0.45  # no seed: removed
    probs[0, 20, 20] = 0.45  # touches the seeded region diagonally: 8-connected, kept
    probs[1, 50:60, 50:60] = 0.45  # under tile 0's seedless region; tile 0's seed must not reach it
    probs[1, 10:20, 10:20] = 0.45  # under tile 0's seeded region: no seed in its own tile
    masks = keep_seeded_regions(probs > 0.4, probs, 0.6)
    assert masks[0, 10:20, 10:20].all() and masks[0, 20, 20]
    assert not masks[0, 50:60, 50:60].any() and not masks[1].any()
    assert masks.sum() == 101
    cfg = PostprocessConfig(threshold=0.4, seed_threshold=0.6)
    assert (apply_postprocess(probs, cfg) == masks).all()


def test_tune_postprocess_lowers_the_threshold_inside_seeded_regions_when_it_helps() -> None:
    oof = seeded_oof()
    cfg, log = tune_postprocess(oof)
    assert cfg.seed_threshold is not None and cfg.threshold < 0.45 < cfg.seed_threshold < 0.8
    step = f"seeded regions: threshold {cfg.threshold:.2f} where a pixel > {cfg.seed_threshold:.2f}"
    assert log[0][1] < 0.6 and dict(log)[step] == pytest.approx(1.0) and log[-1][1] == pytest.approx(1.0)


def test_tune_cli_and_predict_uses_tuned_settings(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    shutil.copytree(run_a, run)
    code, out, _ = cli(["tune", run], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    steps = [ln for ln in lines if "oof score" in ln]
    assert steps[0].startswith("threshold 0.50 (untuned)")
    assert len(steps) >= 4
    scores = [float(ln.split("oof score")[1].split()[0]) for ln in steps]
    assert all(b >= a - 1e-9 for a, b in itertools.pairwise(scores))
    assert lines[-1] == f"saved {run / 'postprocess.json'}"
    tuned = load_postprocess(run / "postprocess.json")
    notes = json.loads((run / "postprocess.json").read_text())["notes"]
    assert [t["oof_score"] for t in notes["tuning"]] == pytest.approx(scores, abs=1e-4)
    assert notes["n_oof"] == 80

    assert main(["predict", str(run), "--images", str(data), "--out", str(tmp_path / "p1")]) == 0
    assert json.loads((tmp_path / "p1" / "meta.json").read_text())["postprocess"] == tuned.model_dump()
    # a fold folder or checkpoint of the run uses the run's tuned settings too
    best = run / "fold0" / "best.safetensors"
    assert main(["predict", str(best), "--images", str(data), "--out", str(tmp_path / "p2")]) == 0
    assert json.loads((tmp_path / "p2" / "meta.json").read_text())["postprocess"] == tuned.model_dump()
    # --threshold overrides only the threshold; --postprocess replaces everything
    assert (
        main(
            ["predict", str(run), "--images", str(data), "--out", str(tmp_path / "p3"), "--threshold", "0.33"]
        )
        == 0
    )
    assert json.loads((tmp_path / "p3" / "meta.json").read_text())["postprocess"] == {
        **tuned.model_dump(),
        "threshold": 0.33,
    }
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"threshold": 0.6, "min_area": 42}))
    assert (
        main(
            [
                "predict",
                str(run),
                "--images",
                str(data),
                "--out",
                str(tmp_path / "p4"),
                "--postprocess",
                str(other),
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "p4" / "meta.json").read_text())["postprocess"]
        == load_postprocess(other).model_dump()
    )


# -------------------------------------------------------------------------------------------- ensemble


def test_ensemble_weights_on_constructed_oofs() -> None:
    good = constructed_oof(seed=1)
    truth = good.truth
    perfect = OOF(good.ids, truth.astype(np.float32) * 0.9 + 0.05, truth, None, None)
    inverted = OOF(good.ids, 1.0 - perfect.probs, truth, None, None)
    noisy_probs = np.clip(perfect.probs + np.random.default_rng(0).normal(0, 0.5, truth.shape), 0, 1)
    noisy = OOF(good.ids, noisy_probs.astype(np.float32), truth, None, None)
    oofs = [inverted, noisy, perfect]

    def score(w: np.ndarray) -> float:
        p = np.tensordot(w, np.stack([o.probs for o in oofs]), axes=1)
        return float(kaggle_scores(p > 0.5, truth).mean())

    w_eq, cv = ensemble_weights(oofs, "equal")
    assert w_eq == pytest.approx([1 / 3] * 3) and cv[2] == 1.0 and cv[0] < 0.6
    w_cv, _ = ensemble_weights(oofs, "cv")
    assert w_cv.sum() == pytest.approx(1.0) and w_cv == pytest.approx(np.array(cv) / sum(cv))
    w_opt, _ = ensemble_weights(oofs, "optimize")
    assert w_opt.sum() == pytest.approx(1.0) and (w_opt >= 0).all()
    assert score(w_opt) >= max(cv) - 1e-9
    assert score(w_opt) >= score(w_eq) - 1e-9 and score(w_eq) < max(cv)
    # all members scoring 0: cv weighting falls back to equal weights
    w, _ = ensemble_weights([inverted, inverted], "cv")
    assert w == pytest.approx([0.5, 0.5])


def test_ensemble_with_the_users_weights(
    tmp_path: Path, run_a: Path, run_b: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--weights 0.3,0.7``: the talk weighted its models by leaderboard score."""
    ens = tmp_path / "ens_given"
    code, _, _ = cli(["ensemble", run_a, run_b, "--out", ens, "--weights", "1,3"], capsys)
    assert code == 0
    info = json.loads((ens / "ensemble.json").read_text())
    assert info["weighting"] == "given"
    assert [m["weight"] for m in info["members"]] == pytest.approx([0.25, 0.75])
    assert all(m["cv_score"] is not None for m in info["members"])
    one_error(["ensemble", run_a, run_b, "--out", tmp_path / "e2", "--weights", "1"], capsys, "2 runs")
    one_error(
        ["ensemble", run_a, run_b, "--out", tmp_path / "e3", "--weights", "1,-2"], capsys, "non-negative"
    )
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        cli(["ensemble", run_a, run_b, "--out", tmp_path / "e4", "--weights", "a,b"], capsys)
    assert exit_info.value.code == 2 and "comma-separated numbers" in capsys.readouterr().err


def test_ensemble_cli_predict_and_tune(
    tmp_path: Path, run_a: Path, run_b: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    oof_scores = {}
    for how in ("equal", "cv", "optimize"):
        ens = tmp_path / f"ens_{how}"
        code, out, _ = cli(["ensemble", run_a, run_b, "--out", ens, "--weights", how], capsys)
        assert code == 0 and out.strip().splitlines()[-1].startswith("ensemble oof score: ")
        info = json.loads((ens / "ensemble.json").read_text())
        weights = [m["weight"] for m in info["members"]]
        assert info["weighting"] == how and sum(weights) == pytest.approx(1.0)
        summary = json.loads((ens / "summary.json").read_text())
        assert summary["n_oof"] == 80
        oof_scores[how] = summary["oof_score"]
        cv = [m["cv_score"] for m in info["members"]]
        if how == "equal":
            assert weights == pytest.approx([0.5, 0.5])
        if how == "cv":
            assert weights == pytest.approx(np.array(cv) / sum(cv))
        if how == "optimize":
            assert summary["oof_score"] >= max(cv) - 1e-9
    assert oof_scores["optimize"] >= oof_scores["equal"] - 1e-9
    one_error(["ensemble", run_a, run_b, "--out", run_a], capsys, "not be a run folder")
    assert not (run_a / "oof.npz").exists() and not (run_a / "ensemble.json").exists()

    ens = tmp_path / "ens_cv"
    oof = load_probs(ens / "oof.npz")
    assert sorted(oof["ids"].tolist()) == sorted(open_dataset(data).labelled_ids)

    pred = tmp_path / "pred"
    assert main(["predict", str(ens), "--images", str(data), "--out", str(pred)]) == 0
    meta = json.loads((pred / "meta.json").read_text())
    ens_w = [m["weight"] for m in json.loads((ens / "ensemble.json").read_text())["members"]]
    assert len(meta["models"]) == 4
    assert sum(m["weight"] for m in meta["models"]) == pytest.approx(1.0)
    run_of = {str(m["path"]): (0 if "run_a" in m["path"] else 1) for m in meta["models"]}
    for k in (0, 1):
        assert sum(m["weight"] for m in meta["models"] if run_of[m["path"]] == k) == pytest.approx(ens_w[k])
    # run_b has a salt head: its image-level probabilities come through
    assert "salt" in load_prediction_probs(pred)

    code, out, _ = cli(["tune", ens], capsys)
    assert code == 0 and (ens / "postprocess.json").exists()
    assert "oof score" in out
    assert main(["predict", str(ens), "--images", str(data), "--out", str(tmp_path / "pred2")]) == 0
    assert (
        json.loads((tmp_path / "pred2" / "meta.json").read_text())["postprocess"]
        == load_postprocess(ens / "postprocess.json").model_dump()
    )


# ---------------------------------------------------------------------------------------------- pseudo


def test_select_pseudo_labels() -> None:
    probs = np.full((17, 101, 101), 0.01, np.float32)  # 0-9: confident and empty
    probs[10:12, :5] = 0.99  # 10, 11: confident, coverage 5% (class 1)
    probs[12:14, :60] = 0.99  # 12, 13: confident, coverage ~59% (class 4)
    probs[14:17] = 0.5  # 14-16: not confident
    probs[16, :70] = 0.05  # 16: 69% confident pixels
    assert coverage_class(probs[[10, 12]] > 0.5).tolist() == [1, 4]

    plain = select_pseudo_labels(probs, 0.97, balance=False)
    assert plain.tolist() == list(range(14))
    balanced = select_pseudo_labels(probs, 0.97, balance=True)
    assert set(balanced) >= {10, 11, 12, 13}
    assert len(balanced) == 6 and len(set(balanced) & set(range(10))) == 2  # empties capped at 2
    assert 16 in select_pseudo_labels(probs, 0.6, balance=False)
    assert 16 not in select_pseudo_labels(probs, 0.7, balance=False)
    assert select_pseudo_labels(probs[14:16], 0.97).size == 0


def _recording_datamodule(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[int]]:
    from saltseg.training.data import SaltDataModule

    seen: dict[str, list[int]] = {"train": [], "val": []}
    train_ds, val_ds = SaltDataModule.train_dataset, SaltDataModule.val_dataset

    def train_dataset(self: SaltDataModule) -> Any:
        ds = train_ds(self)
        seen["train"].append(len(ds))
        return ds

    def val_dataset(self: SaltDataModule) -> Any:
        ds = val_ds(self)
        seen["val"].append(len(ds))
        return ds

    monkeypatch.setattr(SaltDataModule, "train_dataset", train_dataset)
    monkeypatch.setattr(SaltDataModule, "val_dataset", val_dataset)
    return seen


def test_pseudo_labels_end_to_end(
    tmp_path: Path,
    run_a: Path,
    data: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src = open_dataset(data)
    labelled, test_ids = set(src.labelled_ids), set(src.test_ids)
    # predictions on every tile, labelled ones included: those must never become pseudo-labels
    pred = tmp_path / "pred_all"
    args = ["predict", run_a, "--images", data, "--out", pred, "--split", "all", "--threshold", "0.4"]
    assert main([str(a) for a in args]) == 0
    assert len(load_prediction_probs(pred)["ids"]) == 110
    # a labelled dataset to exclude, holding 3 of the test ids
    other = tmp_path / "other"
    excluded = sorted(test_ids)[:3]
    for i in excluded:
        write_gray(other / "images" / f"{i}.png", np.zeros((101, 101)))
        write_gray(other / "masks" / f"{i}.png", np.zeros((101, 101)))
    pseudo = tmp_path / "pseudo"
    code, out, _ = cli(
        ["pseudo", pred, "--images", data, "--out", pseudo, "--confidence", "0", "--exclude", other], capsys
    )
    assert code == 0 and "use it with: data.pseudo_labels=" in out
    info = json.loads((pseudo / "pseudo.json").read_text())
    assert info["candidates"] == 27 and 0 < info["selected"] <= 27
    assert info["threshold"] == 0.4  # the prediction's threshold
    ps = open_dataset(pseudo)
    ids = set(ps.labelled_ids)
    assert len(ids) == info["selected"] and ids <= test_ids - set(excluded) and not ids & labelled
    masks = load_masks([ps.mask_path(i) for i in sorted(ids)])
    probs = load_prediction_probs(pred)
    pos = {i: k for k, i in enumerate(probs["ids"])}
    for i, m in zip(sorted(ids), masks, strict=True):
        np.testing.assert_array_equal(m, probs["probs"][pos[i]] > 0.4)
    assert read_mask(ps.mask_path(sorted(ids)[0])).shape == (101, 101)
    assert sum(info["per_coverage_class"].values()) == info["selected"]

    # a non-empty output folder is refused
    one_error(["pseudo", pred, "--images", data, "--out", pseudo], capsys, str(pseudo), "not empty")
    # predictions of labelled tiles only: nothing to pseudo-label
    pred_train = tmp_path / "pred_train"
    assert (
        main(["predict", str(run_a), "--images", str(data), "--out", str(pred_train), "--split", "train"])
        == 0
    )
    one_error(["pseudo", pred_train, "--images", data, "--out", tmp_path / "p2"], capsys, "no unlabelled")

    # training with the pseudo-labels: in every stage (mix), or in the first stage only (pretrain)
    n_val = json.loads((run_a / "fold0" / "summary.json").read_text())["n_val"]
    n_train = 80 - n_val
    two_stages = [
        {"epochs": 1, "loss": {"name": "bce_dice"}, "optimizer": {"lr": 0.01}},
        {"epochs": 1, "loss": {"name": "lovasz"}, "optimizer": {"lr": 0.001}},
    ]
    for mode, expected in (("mix", [n_train + len(ids)] * 2), ("pretrain", [n_train + len(ids), n_train])):
        seen = _recording_datamodule(monkeypatch)
        cfg = tiny_config(
            data={"folds": 2, "pseudo_labels": str(pseudo), "pseudo_mode": mode, "pretrain_stages": 1},
            stages=two_stages,
        )
        out_dir = tmp_path / f"run_{mode}"
        train_run(parse_config(cfg), data, out_dir, folds_to_run=[0], progress=False)
        assert seen["train"] == expected, mode
        assert set(seen["val"]) == {n_val}
        oof = load_probs(out_dir / "fold0" / "oof.npz")
        assert set(oof["ids"].tolist()) <= labelled and len(oof["ids"]) == n_val
        assert sorted(oof["ids"].tolist()) == sorted(load_probs(run_a / "fold0" / "oof.npz")["ids"].tolist())
        assert json.loads((out_dir / "fold0" / "summary.json").read_text())["n_val"] == n_val
        monkeypatch.undo()


# -------------------------------------------------------------------------------------------- evaluate


def test_evaluate_a_prediction_folder(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pred = tmp_path / "pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred), "--split", "train"]) == 0
    capsys.readouterr()
    code, out, _ = cli(["evaluate", pred, data], capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].startswith("scored 80 labelled tiles")
    assert any(ln.startswith("by coverage") for ln in lines)
    assert any(ln.startswith("by depth") for ln in lines)
    assert lines[-1].startswith("score: ")
    src = open_dataset(data)
    masks = read_submission(pred / "masks.csv")
    ids = src.labelled_ids
    truth = load_masks([src.mask_path(i) for i in ids])
    expected = kaggle_scores(np.stack([masks[i] for i in ids]), truth).mean()
    assert float(lines[-1].split()[1]) == pytest.approx(expected, abs=6e-5)
    # the same through the submission CSV; a folder without masks.csv is a clear error
    code, out2, _ = cli(["evaluate", pred / "masks.csv", data], capsys)
    assert code == 0 and out2.strip().splitlines()[-1] == lines[-1]
    (tmp_path / "nothing").mkdir()
    one_error(["evaluate", tmp_path / "nothing", data], capsys, "masks.csv")
    # a prediction of the test tiles has nothing to score
    test_pred = tmp_path / "test_pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(test_pred)]) == 0
    one_error(["evaluate", test_pred, data], capsys, "no id")


def test_temperature_recovers_an_overconfidence_factor() -> None:
    from saltseg.inference.calibrate import apply_temperature, fit_temperature

    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, size=(64, 32, 32))
    truth = rng.random(z.shape) < 1 / (1 + np.exp(-2 * z))  # the truth follows sigmoid(2 z)
    probs = 1 / (1 + np.exp(-z))  # an under-confident model (a hinge loss keeps logits small)
    t = fit_temperature(probs, truth)
    assert 0.4 < t < 0.6
    sharper = apply_temperature(probs, t)
    assert np.array_equal(sharper > 0.5, probs > 0.5)  # monotonic: masks at 0.5 unchanged
    assert (np.abs(sharper - 0.5) >= np.abs(probs - 0.5) - 1e-6).all()
    assert np.array_equal(apply_temperature(probs, 1.0), probs.astype(np.float32))
    with pytest.raises(ValueError, match="positive"):
        apply_temperature(probs, 0.0)


def test_calibration_lets_hinge_like_probabilities_pass_the_confidence_rule() -> None:
    from saltseg.inference.calibrate import apply_temperature, fit_temperature

    rng = np.random.default_rng(1)
    truth = np.zeros((20, 16, 16), dtype=bool)
    truth[10:, 4:12, 4:12] = True
    # Lovasz-like: right on every pixel, but only 0.27 / 0.73
    probs = np.where(truth, 0.73, 0.27) + rng.normal(0, 0.01, truth.shape)
    assert select_pseudo_labels(probs, 0.97, balance=False).size == 0
    t = fit_temperature(probs, truth)
    assert t < 0.5
    assert select_pseudo_labels(apply_temperature(probs, t), 0.97, balance=False).size == 20


def test_predict_never_writes_the_submission_into_the_dataset_or_over_a_model(
    run_a: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    sample = data / "sample_submission.csv"
    before = sample.read_bytes()
    weights = next(run_a.rglob("*.safetensors"))
    weights_before = weights.read_bytes()
    pred = tmp_path / "pred"
    one_error(
        ["predict", run_a, "--images", data, "--out", pred, "--csv", sample], capsys, "inside the dataset"
    )
    one_error(
        ["predict", weights, "--images", data, "--out", pred, "--csv", weights], capsys, "overwrite the input"
    )
    one_error(["predict", run_a, "--images", data, "--out", pred, "--csv", tmp_path], capsys, "is a folder")
    folds = run_a / "folds.csv"  # a run's own file is an input too
    one_error(
        ["predict", run_a, "--images", data, "--out", pred, "--csv", folds], capsys, "overwrite the input"
    )
    assert sample.read_bytes() == before and weights.read_bytes() == weights_before
    assert not pred.exists()  # refused before anything was written


def test_predict_refuses_a_sample_submission_id_without_an_image(
    run_a: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    gone = sample_ids(copy)[3]
    (copy / "test" / "images" / f"{gone}.png").unlink()
    sub = tmp_path / "sub.csv"
    one_error(
        ["predict", run_a, "--images", copy, "--out", tmp_path / "pred", "--csv", sub],
        capsys,
        "sample_submission.csv",
        gone,
    )
    assert not sub.exists()


def test_damaged_or_diverged_weights_are_refused(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.checkpoints import load_model, save_weights

    good = run_a / "fold0" / "best.safetensors"
    raw = bytearray(good.read_bytes())
    raw[-10] ^= 0x01  # one flipped bit in the last tensor's bytes: still a readable safetensors file
    flipped = tmp_path / "flipped.safetensors"
    flipped.write_bytes(bytes(raw))
    one_error(
        ["predict", flipped, "--images", data, "--out", tmp_path / "p"], capsys, str(flipped), "checksum"
    )
    model = load_model(good)
    with torch.no_grad():
        next(p for p in model.parameters() if p.ndim > 1).view(-1)[0] = float("nan")
    nan = save_weights(model, tmp_path / "nan.safetensors")
    one_error(["predict", nan, "--images", data, "--out", tmp_path / "p"], capsys, str(nan), "NaN or Inf")
    assert not (tmp_path / "p" / "masks.csv").exists()
    broken_info = _rewrite_metadata(good, tmp_path / "info.safetensors", lambda m: m.update(info="{not json"))
    one_error(
        ["predict", broken_info, "--images", data, "--out", tmp_path / "p"],
        capsys,
        "'info' is not valid JSON",
    )


def test_pseudo_calibrate_fits_the_runs_temperature_and_keeps_the_masks(
    tmp_path: Path, run_a: Path, data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.inference.calibrate import fit_run_temperature

    pred = tmp_path / "pred"
    assert main(["predict", str(run_a), "--images", str(data), "--out", str(pred)]) == 0
    temperature, n_tiles = fit_run_temperature(run_a)
    code, out, _ = cli(
        ["pseudo", pred, "--images", data, "--out", tmp_path / "cal", "--calibrate", run_a], capsys
    )
    assert code == 0 and f"temperature {temperature:.3f} fitted on {n_tiles} out-of-fold tiles" in out
    info = json.loads((tmp_path / "cal" / "pseudo.json").read_text())
    assert info["temperature"] == pytest.approx(temperature) and info["passed"] >= info["selected"]
    assert sum(info["passed_per_coverage_class"].values()) == info["passed"]
    code, _, _ = cli(
        ["pseudo", pred, "--images", data, "--out", tmp_path / "t", "--temperature", "0"], capsys
    )
    assert code == 2


def test_a_killed_predict_leaves_no_temporary_file_behind(run_a: Path, data: Path, tmp_path: Path) -> None:
    """Issue 13 #14: a SIGKILLed predict left ``.masks.csv.*.tmp``; the next predict into the folder
    removes it (and nothing else)."""
    out = tmp_path / "pred"
    out.mkdir()
    stale = out / ".masks.csv.k1ll3d_x.tmp"  # named as mkstemp names it
    stale.write_text("id,rle_mask\nhalf")
    keep = out / "notes.txt"
    keep.write_text("mine")
    predict_folder([run_a], data, out)
    assert not stale.exists() and keep.read_text() == "mine"
    assert not list(out.glob(".*.tmp")) and (out / "masks.csv").exists()


def test_predict_killed_at_a_random_point_then_rerun_gives_the_uninterrupted_result(
    run_a: Path, data: Path, tmp_path: Path
) -> None:
    """Issue 13, fault injection: SIGKILL ``saltseg predict`` anywhere between start-up and the end; the
    CSV is then absent or whole, and a rerun into the same folder gives the uninterrupted result."""
    import random
    import signal
    import subprocess
    import sys
    import time

    out, csv_path = tmp_path / "killed", tmp_path / "killed.csv"
    cmd = [sys.executable, "-m", "saltseg.cli", "predict", str(run_a), "--images", str(data)]
    proc = subprocess.Popen(
        [*cmd, "--out", str(out), "--csv", str(csv_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    delay = random.uniform(0.5, 8.0)  # start-up alone takes seconds: the kill lands anywhere
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    straight = predict_folder([run_a], data, tmp_path / "straight", csv_path=tmp_path / "straight.csv")
    expected = (tmp_path / "straight.csv").read_text()
    if csv_path.exists():  # finished before the kill, or not: never half a file
        assert csv_path.read_text() == expected, f"killed after {delay:.1f} s"
    predict_folder([run_a], data, out, csv_path=csv_path)
    assert csv_path.read_text() == expected and (out / "masks.csv").read_text() == expected
    left = [p for d in (out, tmp_path) for p in d.rglob(".*") if p.name.endswith(".tmp")]
    assert not left, f"killed after {delay:.1f} s: {left}"
    a, b = load_prediction_probs(out), load_prediction_probs(tmp_path / "straight")
    assert a["ids"].tolist() == b["ids"].tolist() and (a["probs"] == b["probs"]).all()
    assert straight.n_tiles == 30


# ------------------------------------------------------------------------------------------- init_from


def test_init_from_starts_every_fold_from_a_whole_model(
    run_a: Path, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``train.init_from``: a run (same fold), a fold folder or a file; a different model is refused."""
    from saltseg.artifacts import RunDir, init_checkpoint
    from saltseg.checkpoints import load_model
    from saltseg.training.data import LabelledTiles
    from saltseg.training.fold import prepare_fold_split

    cfg = parse_config(tiny_config(train={**tiny_config()["train"], "init_from": str(run_a)}))
    tiles = LabelledTiles.load(data)
    for fold in (0, 1):
        model, _, _ = prepare_fold_split(cfg, tiles, fold)
        source = load_model(RunDir(run_a).fold(fold).members(best_only=True)[0]).state_dict()
        assert all(torch.equal(v, source[k]) for k, v in model.state_dict().items())
    fold1 = RunDir(run_a).fold(1)
    assert init_checkpoint(fold1.path, 0) == fold1.members(best_only=True)[0]  # a fold folder: its best
    assert init_checkpoint(fold1.members()[0], 0) == fold1.members()[0]
    # a run without that fold
    three = tiny_config(data={"folds": 3}, train={**tiny_config()["train"], "init_from": str(run_a)})
    bad = parse_config(three)
    with pytest.raises(DataError, match="no trained fold 2"):
        train_run(bad, data, tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()  # refused before anything is written
    # another model config: one line listing what differs
    wider = tiny_config(train={**tiny_config()["train"], "init_from": str(run_a)})
    wider["model"]["base_channels"] = 8
    cfg_path = tmp_path / "wider.yaml"
    cfg_path.write_text(json.dumps(wider))
    err = one_error(["train", cfg_path, "--data", data, "--out", tmp_path / "y", "--no-progress"], capsys)
    assert "of another shape" in err and "train.init_from" in err
    assert not (tmp_path / "y").exists()
