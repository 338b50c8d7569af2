"""End-to-end tests of the training engine on tiny synthetic data: run folder contents, multi-stage
snapshots, SWA, deep supervision, determinism, guards, the experiment queue, lr-find, lazy data.

Every run is a tiny U-Net (4 base channels, 2 levels) for 1-3 epochs of 2-3 batches of 8 tiles.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.artifacts import load_probs
from saltseg.checkpoints import load_model, read_metadata
from saltseg.cli import main
from saltseg.data.synth import write_kaggle_layout
from saltseg.training.config import load_config

pytestmark = pytest.mark.slow

TINY_MODEL = {
    "arch": "vanilla_unet",
    "base_channels": 4,
    "depth": 2,
    "input_size": 128,
    "attention": None,
    "hypercolumn": False,
}


def tiny_config(**changes: Any) -> dict:
    """A 1-stage, 2-epoch config of a tiny model; ``changes`` are deep-merged into it."""
    cfg: dict = {
        "name": "tiny",
        "seed": 0,
        "data": {"folds": 4},
        "model": dict(TINY_MODEL),
        "augment": {"hflip": 0.5, "brightness": 0.5},
        "stages": [
            {
                "name": "s0",
                "epochs": 2,
                "loss": {"name": "bce_dice"},
                "optimizer": {"name": "adam", "lr": 0.003},
                "schedule": {"name": "cosine"},
            }
        ],
        "train": {"batch_size": 8, "accelerator": "cpu", "devices": 1, "limit_train_batches": 3},
    }
    return _merge(cfg, changes)


def _merge(base: dict, changes: dict) -> dict:
    for k, v in changes.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v
    return base


def write_config(folder: Path, name: str, cfg: dict) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_kaggle_layout(tmp_path_factory.mktemp("synth") / "data", n_train=64, n_test=8, seed=0)


def train(config: Path, data: Path, out: Path, *extra: str) -> int:
    return main(
        ["train", str(config), "--data", str(data), "--fold", "0", "--out", str(out), "--no-progress", *extra]
    )


def metrics_rows(fold_dir: Path, stage: int = 0) -> list[dict[str, str]]:
    with open(fold_dir / "logs" / f"stage{stage}" / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def val_losses(fold_dir: Path, stage: int = 0) -> list[tuple[int, float]]:
    return [
        (int(r["epoch"]), float(r["val_loss"])) for r in metrics_rows(fold_dir, stage) if r.get("val_loss")
    ]


def test_train_writes_run_folder(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = write_config(tmp_path, "tiny", tiny_config())
    run = tmp_path / "run"
    assert train(cfg_path, data_dir, run) == 0
    out = capsys.readouterr().out
    assert "fold 0: done" in out and "oof score:" in out

    assert load_config(run / "config.yaml") == load_config(cfg_path)
    with open(run / "folds.csv") as f:
        folds = {r["id"]: int(r["fold"]) for r in csv.DictReader(f)}
    assert len(folds) == 64 and set(folds.values()) == {0, 1, 2, 3}

    fold = run / "fold0"
    model = load_model(fold / "best.safetensors")
    assert model.config.arch == "vanilla_unet"
    _, info = read_metadata(fold / "best.safetensors")
    assert info["stage"] == 0 and info["epoch"] in (0, 1)

    oof = load_probs(fold / "oof.npz")
    val_ids = sorted(i for i, k in folds.items() if k == 0)
    assert sorted(oof["ids"].tolist()) == val_ids
    assert oof["probs"].shape == (len(val_ids), 101, 101)
    with np.load(fold / "oof.npz") as raw:
        assert raw["probs"].dtype == np.uint8
    assert oof["truth"].shape == oof["probs"].shape

    summary = json.loads((fold / "summary.json").read_text())
    assert summary["status"] == "done" and summary["reason"] is None
    assert summary["n_val"] == len(val_ids) and summary["epochs"] == 2
    assert 0.0 <= summary["oof_score"] <= 1.0
    assert summary["members"] == ["best.safetensors"]
    run_summary = json.loads((run / "summary.json").read_text())
    assert run_summary["n_oof"] == len(val_ids)
    assert run_summary["oof_score"] == pytest.approx(summary["oof_score"])

    rows = metrics_rows(fold)
    epochs = sorted({int(r["epoch"]) for r in rows if r.get("val_score")})
    assert epochs == [0, 1]
    assert any(r.get("train_loss_epoch") for r in rows)
    assert any(k.startswith("lr-") for k in rows[0])
    assert list((fold / "logs" / "tensorboard" / "stage0").glob("events.out.tfevents*"))
    state = json.loads((fold / "state.json").read_text())
    assert state["completed"] == [0] and state["status"] == "done"


def test_two_stages_with_snapshots(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(
        stages=[
            {"name": "bce", "epochs": 1, "loss": {"name": "bce_dice"}, "optimizer": {"lr": 0.003}},
            {
                "name": "lovasz",
                "epochs": 2,
                "loss": {"name": "lovasz"},
                "optimizer": {"lr": 0.001},
                "schedule": {"name": "cosine_restarts", "cycles": 2},
                "snapshots": True,
            },
        ]
    )
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "two", cfg), data_dir, run) == 0
    fold = run / "fold0"
    snaps = sorted(p.name for p in (fold / "snapshots").glob("*.safetensors"))
    assert snaps == ["s1_c0.safetensors", "s1_c1.safetensors"]
    for i, name in enumerate(snaps):
        _, info = read_metadata(fold / "snapshots" / name)
        assert info["cycle"] == i and info["stage"] == 1 and info["epoch"] == i
    summary = json.loads((fold / "summary.json").read_text())
    assert summary["members"] == [f"snapshots/{n}" for n in snaps]
    assert set(summary["member_scores"]) == set(snaps)
    assert summary["epochs"] == 3
    assert json.loads((fold / "state.json").read_text())["completed"] == [0, 1]
    assert (fold / "stage0" / "end.safetensors").exists() and (fold / "stage1" / "end.safetensors").exists()
    # stage 1 logged its own epochs and the stage index
    rows = metrics_rows(fold, 1)
    assert {float(r["stage"]) for r in rows if r.get("stage")} == {1.0}


def test_swa_over_last_epochs(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(swa={"enabled": True, "members": "last", "k": 2})
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "swa", cfg), data_dir, run) == 0
    fold = run / "fold0"
    epochs = sorted(p.name for p in (fold / "swa").glob("*.safetensors"))
    assert epochs == ["epoch0000.safetensors", "epoch0001.safetensors"]
    swa = load_model(fold / "swa.safetensors")
    assert swa.info["swa_of"] == epochs
    x = torch.rand(2, 1, 101, 101)
    with torch.no_grad():
        assert torch.isfinite(swa(x)["mask"]).all()
    # the average really is the mean of the members (BatchNorm statistics aside)
    a, b = load_model(fold / "swa" / epochs[0]), load_model(fold / "swa" / epochs[1])
    name = next(k for k, v in swa.state_dict().items() if v.is_floating_point() and "running" not in k)
    mean = (a.state_dict()[name] + b.state_dict()[name]) / 2
    torch.testing.assert_close(swa.state_dict()[name], mean)
    summary = json.loads((fold / "summary.json").read_text())
    assert summary["members"] == ["swa.safetensors"]


def test_deep_supervision_model_trains(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(
        model={"deep_supervision": True},
        stages=[
            {"epochs": 1, "loss": {"name": "lovasz", "deep_supervision": {}}, "optimizer": {"lr": 0.003}}
        ],
    )
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "ds", cfg), data_dir, run) == 0
    fold = run / "fold0"
    assert load_model(fold / "best.safetensors").config.deep_supervision
    oof = load_probs(fold / "oof.npz")
    assert "salt" in oof and oof["salt"].shape == (len(oof["ids"]),)
    assert ((oof["salt"] >= 0) & (oof["salt"] <= 1)).all()
    assert np.isfinite([float(v) for _, v in val_losses(fold)]).all()


def test_same_seed_same_result(tmp_path: Path, data_dir: Path) -> None:
    """Two CPU runs with the same seed: the same losses, validation scores and OOF probabilities."""
    cfg = write_config(tmp_path, "det", tiny_config(augment={"hflip": 0.5, "rotate": 0.5, "brightness": 0.5}))
    assert train(cfg, data_dir, tmp_path / "a") == 0
    assert train(cfg, data_dir, tmp_path / "b") == 0
    a, b = tmp_path / "a" / "fold0", tmp_path / "b" / "fold0"

    def curve(fold: Path) -> list[tuple]:
        return [
            (r["epoch"], r["step"], r.get("train_loss_epoch"), r.get("val_loss"), r.get("val_score"))
            for r in metrics_rows(fold)
        ]

    assert curve(a) == curve(b)
    pa, pb = load_probs(a / "oof.npz"), load_probs(b / "oof.npz")
    assert pa["ids"].tolist() == pb["ids"].tolist()
    np.testing.assert_array_equal(pa["probs"], pb["probs"])
    assert pa["probs"].std() > 0  # not a degenerate constant output
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    assert sa["best_val_score"] == sb["best_val_score"] and sa["oof_score"] == sb["oof_score"]
    # and a different seed gives a different run
    assert train(cfg, data_dir, tmp_path / "c", "seed=1") == 0
    assert curve(tmp_path / "c" / "fold0") != curve(a)


NAN_OVERRIDES = [
    "model.batchnorm=false",
    "stages.0.optimizer.name=sgd",
    "stages.0.optimizer.lr=1e6",
    "train.precision=32",
]


def test_nan_loss_stops_run(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "nan", tiny_config())
    run = tmp_path / "run"
    code = train(cfg, data_dir, run, *NAN_OVERRIDES)
    captured = capsys.readouterr()
    assert code != 0
    errors = [ln for ln in captured.err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "NaN/inf" in errors[0] and "fold 0" in errors[0]
    assert "Traceback" not in captured.err
    summary = json.loads((run / "fold0" / "summary.json").read_text())
    assert summary["status"] == "failed" and "NaN/inf" in summary["reason"]
    assert summary["best_val_score"] is None
    assert not (run / "fold0" / "best.safetensors").exists(), "a diverged model must not be kept"
    assert json.loads((run / "summary.json").read_text())["folds"][0]["status"] == "failed"
    # stopped at once: no second epoch
    assert {int(r["epoch"]) for r in metrics_rows(run / "fold0") if r.get("epoch")} == {0}
    # a failed fold is not "resumed" into a finished one
    assert train(cfg, data_dir, run, "--resume", *NAN_OVERRIDES) == 2
    assert "cannot be resumed" in capsys.readouterr().err


def test_stall_guard_stops_and_records_reason(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # a learning rate so small that the validation score cannot change after the first epoch
    cfg = tiny_config(stages=[{"epochs": 4, "optimizer": {"lr": 1e-9}, "schedule": {"name": "constant"}}])
    cfg["train"]["stall_epochs"] = 1
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "stall", cfg), data_dir, run) == 0
    out = capsys.readouterr().out
    summary = json.loads((run / "fold0" / "summary.json").read_text())
    assert summary["status"] == "stopped"
    assert "stalled for 1 epochs" in summary["reason"]
    assert "stalled" in out
    epochs = {int(r["epoch"]) for r in metrics_rows(run / "fold0") if r.get("val_score")}
    assert epochs == {0, 1}, "stops after the first epoch without improvement"
    assert summary["epochs"] == 2 and summary["planned_epochs"] == 4, "the summary counts epochs trained"


def test_experiment_queue(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    one_epoch = {"stages": [{"epochs": 1}], "train": {"limit_train_batches": 2}}
    a_cfg = tiny_config(**one_epoch)
    del a_cfg["name"]  # named after its file: "a"
    a = write_config(tmp_path, "a", a_cfg)
    bad_cfg = tiny_config(**one_epoch)
    bad_cfg["model"]["encodr"] = "resnet18"
    bad = write_config(tmp_path, "bad", bad_cfg)
    nan = write_config(tmp_path, "nan", tiny_config(**one_epoch))
    c = write_config(tmp_path, "c", tiny_config(**one_epoch, name="a"))  # same name as a.yaml
    q = tmp_path / "q"
    code = main(
        ["experiments", str(a), str(bad), str(c), "--data", str(data_dir), "--out", str(q), "--fold", "0"]
    )
    out = capsys.readouterr().out
    assert code == 1
    rows = json.loads((q / "queue.json").read_text())
    assert [r["name"] for r in rows] == ["a", "bad", "a_c"]
    assert [r["status"] for r in rows] == ["done", "failed", "done"]
    assert "model.encodr" in rows[1]["error"]
    for name in ("a", "a_c"):
        assert json.loads((q / name / "fold0" / "summary.json").read_text())["status"] == "done"
    assert not (q / "bad").exists()
    assert rows[2]["oof_score"] is not None
    assert "experiments" in out and "failed" in out and "done" in out

    # a run that fails while training (NaN) is recorded too, and --set applies to every config
    q2 = tmp_path / "q2"
    args = ["experiments", str(nan), "--data", str(data_dir), "--out", str(q2), "--fold", "0"]
    for o in NAN_OVERRIDES:
        args += ["--set", o]
    assert main(args) == 1
    rows = json.loads((q2 / "queue.json").read_text())
    assert rows[0]["status"] == "failed" and "NaN/inf" in rows[0]["error"]


def test_lr_find(tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = write_config(tmp_path, "lr", tiny_config())
    out = tmp_path / "lr"
    code = main(["lr-find", str(cfg), "--data", str(data_dir), "--out", str(out), "--steps", "20"])
    text = capsys.readouterr().out
    assert code == 0
    assert (out / "lr_find.png").stat().st_size > 1000
    assert not list(out.glob("*.ckpt")), "the tuner's temporary checkpoint is removed"
    line = next(ln for ln in text.splitlines() if "lr" in ln)
    assert line.startswith("suggested lr: "), text
    lr = float(line.split()[2])
    assert 1e-6 <= lr <= 1.0


def test_lazy_data(tmp_path: Path, data_dir: Path) -> None:
    cfg = tiny_config(data={"cache": False}, stages=[{"epochs": 1}])
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "lazy", cfg), data_dir, run) == 0
    summary = json.loads((run / "fold0" / "summary.json").read_text())
    assert summary["status"] == "done" and summary["n_val"] == 16
    oof = load_probs(run / "fold0" / "oof.npz")
    assert oof["probs"].shape == (16, 101, 101) and oof["truth"].any()


def test_refuses_to_overwrite_a_run(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, "one", tiny_config(stages=[{"epochs": 1}], train={"limit_train_batches": 1}))
    run = tmp_path / "run"
    assert train(cfg, data_dir, run) == 0
    capsys.readouterr()
    assert train(cfg, data_dir, run) == 2
    assert "already holds a run" in capsys.readouterr().err
    # --resume on a finished fold returns its summary without training again
    before = (run / "fold0" / "best.safetensors").stat().st_mtime_ns
    assert train(cfg, data_dir, run, "--resume") == 0
    assert "fold 0: done" in capsys.readouterr().out
    assert (run / "fold0" / "best.safetensors").stat().st_mtime_ns == before


def test_fold_state_keeps_a_zero_best_score(tmp_path: Path) -> None:
    """A best validation score of exactly 0 is a score, not "no score" (resume must not forget it)."""
    from saltseg.artifacts import FoldDir, FoldState

    fold = FoldDir(tmp_path)
    fold.write_state(FoldState(completed=[0], best_score=0.0, status="running"))
    assert fold.read_state().best == 0.0
    fold.write_state(FoldState(completed=[]))
    assert fold.read_state().best == float("-inf")


def test_bad_fold_numbers_are_refused_before_anything_is_written(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one_epoch = {"stages": [{"epochs": 1}], "train": {"limit_train_batches": 1}}
    cfg = write_config(tmp_path, "one", tiny_config(**one_epoch))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--data", str(data_dir), "--fold", "7", "--out", str(run)]) == 2
    assert "fold 7 does not exist" in capsys.readouterr().err
    assert not run.exists()  # the corrected rerun is not refused as "already holds a run"
    assert train(cfg, data_dir, run) == 0
    many = write_config(tmp_path, "many", tiny_config(**one_epoch, data={"folds": 500}))
    assert train(many, data_dir, tmp_path / "r500") == 2
    assert "use at most 32 folds" in capsys.readouterr().err
    assert main(["data", "folds", str(data_dir), "--k", "1000", "--out", str(tmp_path / "f.csv")]) == 2
    assert "fewer than 2 tiles per validation fold" in capsys.readouterr().err
    assert main(["data", "folds", str(data_dir), "--k", "1", "--out", str(tmp_path / "f.csv")]) == 2
    assert not (tmp_path / "f.csv").exists()


def test_a_batch_larger_than_the_fold_is_an_error_not_an_untrained_model(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = write_config(tmp_path, "big", tiny_config(train={"batch_size": 100000}))
    assert train(cfg, data_dir, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert "train.batch_size 100000 is larger than the 48 training tiles of fold 0" in err
    assert not list((tmp_path / "run").rglob("*.safetensors"))
    # issue 12: `saltseg runs` listed such a run as "running"
    from saltseg.diagnostics.runs import open_run

    assert not (tmp_path / "run" / "fold0").exists()
    assert open_run(tmp_path / "run").status == "not started"


def test_a_tile_missing_its_mask_or_image_stops_training_unless_skipped(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    data = tmp_path / "data"
    shutil.copytree(data_dir, data)
    masks = sorted((data / "train" / "masks").glob("*.png"))
    masks[0].unlink()  # an image without its mask
    (data / "train" / "images" / masks[1].name).unlink()  # a mask without its image
    cfg = write_config(tmp_path, "one", tiny_config(stages=[{"epochs": 1}], train={"limit_train_batches": 1}))
    assert train(cfg, data, tmp_path / "run") == 2
    err = capsys.readouterr().err
    assert (
        "2 training tile(s) lack their image or mask" in err
        and masks[0].stem in err
        and "--skip-missing" in err
    )
    assert not (tmp_path / "run").exists()
    assert train(cfg, data, tmp_path / "run", "--skip-missing") == 0
    assert len((tmp_path / "run" / "folds.csv").read_text().splitlines()) == 1 + 62  # header + complete tiles


def test_resume_refuses_another_config_or_other_data(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    cfg = write_config(tmp_path, "one", tiny_config(stages=[{"epochs": 1}], train={"limit_train_batches": 1}))
    run = tmp_path / "run"
    assert train(cfg, data_dir, run) == 0
    config_before = (run / "config.yaml").read_text()
    capsys.readouterr()
    assert train(cfg, data_dir, run, "--resume", "stages.0.optimizer.lr=0.1", "seed=3") == 2
    err = capsys.readouterr().err
    assert "another config" in err and "seed" in err and "stages.0.optimizer.lr" in err
    other = tmp_path / "other"
    shutil.copytree(data_dir, other)
    assert train(cfg, other, run, "--resume") == 2
    assert "other data" in capsys.readouterr().err
    assert (run / "config.yaml").read_text() == config_before  # the run's record is untouched
    assert train(cfg, data_dir, run, "--resume") == 0


def test_ctrl_c_in_training_is_an_interrupt_that_resumes(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import lightning as L

    from saltseg.training.train import TrainingInterrupted, train_run

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    cfg = load_config(write_config(tmp_path, "two", tiny_config(train={"limit_train_batches": 2})))
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="--resume"):
        train_run(cfg, data_dir, run, folds_to_run=[0], progress=False, callbacks=[CtrlC()])
    assert not (run / "fold0" / "summary.json").exists()
    summary = train_run(cfg, data_dir, run, folds_to_run=[0], resume=True, progress=False)
    assert summary is not None and summary.folds[0].status == "done" and summary.folds[0].epochs == 2
    # the CLI's words for it
    from saltseg import cli

    def interrupted(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise TrainingInterrupted("continue with --resume (run folder X)")

    import saltseg.training.train as train_mod

    original = train_mod.train_run
    train_mod.train_run = interrupted
    try:
        assert (
            cli.main(["train", str(tmp_path / "two.yaml"), "--data", str(data_dir), "--out", str(run)]) == 130
        )
    finally:
        train_mod.train_run = original
    assert capsys.readouterr().err.strip() == "error: interrupted (continue with --resume (run folder X))"


def test_damaged_resume_files_are_one_error_naming_the_file(
    tmp_path: Path, data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A corrupt state.json or a truncated last.ckpt: exit 2, one line naming the file (issue 13 #17)."""
    import lightning as L

    from saltseg.training.train import TrainingInterrupted, train_run

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    path = write_config(tmp_path, "two", tiny_config(train={"limit_train_batches": 2}))
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(load_config(path), data_dir, run, folds_to_run=[0], progress=False, callbacks=[CtrlC()])
    ckpt = run / "fold0" / "stage0" / "last.ckpt"
    assert ckpt.exists()
    whole = ckpt.read_bytes()
    # a checkpoint of an earlier saltseg (its schedule a LambdaLR): refused, not a KeyError in Lightning
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    saved["lr_schedulers"] = [torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0).state_dict()]
    saved["lr_schedulers"][0]["lr_lambdas"] = [None]
    torch.save(saved, ckpt)
    capsys.readouterr()
    assert train(path, data_dir, run, "--resume") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(ckpt) in err[0] and "LR-schedule state is of another kind" in err[0], err
    ckpt.write_bytes(whole[:1000])  # truncated
    capsys.readouterr()
    assert train(path, data_dir, run, "--resume") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(ckpt) in err[0] and "damaged checkpoint" in err[0], err
    ckpt.unlink()
    state = run / "fold0" / "state.json"
    state.write_text('{"completed": [0')  # cut mid-write by something else
    assert train(path, data_dir, run, "--resume") == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(err) == 1 and str(state) in err[0] and "damaged" in err[0], err
    state.unlink()  # without state the fold starts again from its first stage, and finishes
    assert train(path, data_dir, run, "--resume") == 0


def test_train_compile_compiles_the_model_in_place() -> None:
    """``train.compile: true`` was read by nothing; now the model is compiled in place, so its weights
    keep their names (checkpoints of compiled and plain runs load alike)."""
    from saltseg.models import create_model
    from saltseg.training.config import parse_config
    from saltseg.training.module import SaltModule

    plain_cfg = parse_config(tiny_config())
    compiled_cfg = parse_config(tiny_config(train={"compile": True}))
    plain = SaltModule(create_model(plain_cfg.model), plain_cfg)
    compiled = SaltModule(create_model(compiled_cfg.model), compiled_cfg)
    assert getattr(plain.model, "_compiled_call_impl", None) is None
    assert compiled.model._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())


def test_sparse_validation_validates_only_the_planned_epochs_and_keeps_swa_weights(
    tmp_path: Path, data_dir: Path
) -> None:
    """``train.val_every: 3`` on 8 epochs with a dense tail of 0.25: validations after epochs 1 and 4
    (0-based: the second, then every third) and each of the last 2 (6, 7); the best model comes from one
    of them, and the SWA epochs of an unvalidated epoch are kept all the same."""
    cfg = tiny_config(
        stages=[
            {
                "name": "s0",
                "epochs": 8,
                "loss": {"name": "bce_dice"},
                "optimizer": {"name": "adam", "lr": 0.003},
                "schedule": {"name": "cosine"},
            }
        ],
        train={"val_every": 3, "val_dense_tail": 0.25, "limit_train_batches": 1},
        swa={"enabled": True, "members": "last", "k": 3, "replace": False},
    )
    run = tmp_path / "run"
    assert train(write_config(tmp_path, "sparse", cfg), data_dir, run) == 0
    fold = run / "fold0"
    validated = sorted({int(r["epoch"]) for r in metrics_rows(fold) if r.get("val_score")})
    assert validated == [1, 4, 6, 7]
    assert read_metadata(fold / "best.safetensors")[1]["epoch"] in {1, 4, 6, 7}
    swa = sorted(p.name for p in (fold / "swa").glob("*.safetensors"))
    assert swa == ["epoch0005.safetensors", "epoch0006.safetensors", "epoch0007.safetensors"]
    summary = json.loads((fold / "summary.json").read_text())
    assert summary["epochs"] == 8


def test_sparse_validation_rule_and_its_config_errors(tmp_path: Path) -> None:
    from saltseg.errors import ConfigError
    from saltseg.training.config import TrainConfig

    every = TrainConfig()
    assert all(every.validates(e, 10) for e in range(10))
    sparse = TrainConfig(val_every=4, val_dense_tail=0.3)
    # the second epoch, every fourth after it, the last ceil(0.3 * 20) = 6
    assert [e for e in range(20) if sparse.validates(e, 20)] == [1, 5, 9, 13, 14, 15, 16, 17, 18, 19]
    no_tail = TrainConfig(val_every=4, val_dense_tail=0.0)
    assert [e for e in range(10) if no_tail.validates(e, 10)] == [1, 5, 9]  # the last epoch always
    plateau = tiny_config(
        stages=[{"name": "s0", "epochs": 2, "schedule": {"name": "plateau"}}], train={"val_every": 2}
    )
    with pytest.raises(ConfigError, match=r"plateau.*train\.val_every"):
        load_config(write_config(tmp_path, "plateau", plateau))
    snaps = tiny_config(train={"val_every": 2})
    snaps["stages"][0]["snapshots"] = True
    with pytest.raises(ConfigError, match=r"snapshots.*train\.val_every"):
        load_config(write_config(tmp_path, "snaps", snaps))
    with pytest.raises(ConfigError, match="val_every"):
        load_config(write_config(tmp_path, "zero", tiny_config(train={"val_every": 0})))
