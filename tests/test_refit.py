"""Refit on every labelled tile: ``saltseg refit`` and ``saltseg pipeline --refit``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from saltseg.artifacts import FoldDir, RefitSummary, read_record
from saltseg.artifacts.records import PipelineSummary
from saltseg.checkpoints import read_metadata
from saltseg.cli import main

CFG = """\
name: refit
model: {arch: vanilla_unet, base_channels: 4, depth: 2, attention: null, hypercolumn: false}
data: {folds: 2}
stages:
  - {name: one, epochs: 2, loss: {name: bce_dice}, optimizer: {name: adam, lr: 0.003}}
train: {batch_size: 8, val_tta: false}
"""


@pytest.fixture(scope="module")
def tuned_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A 2-fold run on 40 synthetic tiles, tuned: (data, config, run)."""
    from saltseg.data.synth import write_kaggle_layout

    root = tmp_path_factory.mktemp("refit")
    data = write_kaggle_layout(root / "data", n_train=40, n_test=6, seed=3)
    cfg = root / "refit.yaml"
    cfg.write_text(CFG)
    run = root / "run"
    assert main(["train", str(cfg), "--data", str(data), "--out", str(run), "--no-progress"]) == 0
    assert main(["tune", str(run)]) == 0
    return data, cfg, run


def _training_steps(fold_dir: Path) -> int:
    """The last optimiser step logged by the stage's CSV logger (steps count from 0)."""
    rows = list(csv.DictReader((fold_dir / "logs" / "stage0" / "metrics.csv").open()))
    return max(int(r["step"]) for r in rows if r.get("step")) + 1


def test_refit_trains_every_tile_without_validation_and_predicts_with_the_runs_tuning(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, _, run = tuned_run
    out = tmp_path / "refit"
    assert main(["refit", str(run), "--out", str(out), "--no-progress"]) == 0
    assert "refit on all 40 labelled tiles: done, 2 of 2 epochs" in capsys.readouterr().out
    r = read_record(RefitSummary, out / "refit.json")
    assert r.n_tiles == 40 and r.source == str(run)
    assert len(r.cv_best_epochs) == 2 and all(1 <= e <= 2 for e in r.cv_best_epochs)
    t = r.training
    assert t.fold == -1 and t.n_val == 0 and t.oof_score is None and t.best_val_score is None
    assert t.members == ["stage0/end.safetensors"]  # no best epoch: the end of the schedule
    assert not (out / "oof.npz").exists() and not (out / "best.safetensors").exists()
    # 40 tiles in batches of 8 for 2 epochs: 10 steps, where a fold (20 tiles) takes 4
    assert _training_steps(out) == 10
    assert _training_steps(run / "fold0") == 4
    assert (out / "postprocess.json").read_text() == (run / "postprocess.json").read_text()
    assert FoldDir.looks_like(out)
    import saltseg

    assert saltseg.refit(run, out, resume=True) == r  # the Python API reads the finished refit back
    from saltseg.diagnostics.runs import list_runs

    (row,) = [r for r in list_runs(tmp_path) if r["kind"] == "refit"]
    assert row["run"] == "refit" and row["status"] == "done" and row["folds"] == "all tiles"
    assert row["epochs"] == 2 and row["oof_score"] is None and row["note"] == f"refit of {run}"
    pred = tmp_path / "pred"
    assert main(["predict", str(out), "--images", str(data), "--out", str(pred)]) == 0
    meta = json.loads((pred / "meta.json").read_text())
    assert len(meta["models"]) == 1 and meta["n_tiles"] == 6


def test_refit_resume_returns_the_finished_refit_and_a_foreign_folder_is_refused(
    tuned_run: tuple[Path, Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import saltseg.training.fold as fold

    _, _, run = tuned_run
    out = tmp_path / "refit"
    assert main(["refit", str(run), "--out", str(out), "--no-progress"]) == 0
    first = (out / "refit.json").read_text()

    def no_training(*a: object, **k: object) -> None:
        raise AssertionError("a finished refit trained again")

    monkeypatch.setattr(fold, "train_fold", no_training)
    assert main(["refit", str(run), "--out", str(out), "--resume", "--no-progress"]) == 0
    assert (out / "refit.json").read_text() == first
    capsys.readouterr()
    assert main(["refit", str(run), "--out", str(out), "--no-progress"]) == 2  # no --resume: not replaced
    assert "not empty; use --resume" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep")
    assert main(["refit", str(run), "--out", str(foreign), "--resume"]) == 2
    assert "not a refit folder" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep"


def test_refit_refuses_what_it_cannot_do(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.data.synth import write_kaggle_layout

    data, cfg, run = tuned_run
    assert main(["refit", str(data), "--out", str(tmp_path / "a")]) == 2
    assert "not a run folder" in capsys.readouterr().err
    other = write_kaggle_layout(tmp_path / "other", n_train=30, n_test=0, seed=9)
    assert main(["refit", str(run), "--data", str(other), "--out", str(tmp_path / "b")]) == 2
    assert "other tiles than the run was cross-validated on" in capsys.readouterr().err
    assert main(["refit", str(run), "--out", str(data / "refit")]) == 2
    assert "inside the dataset folder" in capsys.readouterr().err
    stopping = tmp_path / "stopping"
    args = ["train", str(cfg), "--data", str(data), "--out", str(stopping), "--fold", "0"]
    code = main([*args, "--no-progress", "train.early_stopping=2"])
    assert code == 0
    assert main(["refit", str(stopping), "--out", str(tmp_path / "c"), "--no-progress"]) == 2
    assert "cannot use train.early_stopping" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()


def test_unvalidated_snapshot_stage_keeps_the_last_epoch_of_each_cycle(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    from saltseg.training.config import load_config
    from saltseg.training.data import LabelledTiles
    from saltseg.training.fold import train_fold

    data, cfg_path, _ = tuned_run
    stage = ["epochs=4", "schedule.name=cosine_restarts", "schedule.cycles=2", "snapshots=true"]
    cfg = load_config(cfg_path, [*(f"stages.0.{s}" for s in stage), "train.limit_train_batches=1"])
    summary = train_fold(cfg, LabelledTiles.load(data), {}, None, tmp_path / "fold", progress=False)
    assert summary is not None
    assert summary.members == ["snapshots/s0_c0.safetensors", "snapshots/s0_c1.safetensors"]
    epochs = [int(read_metadata(tmp_path / "fold" / m)[1]["epoch"]) for m in summary.members]
    assert epochs == [1, 3]


def test_pipeline_refit_predicts_the_submission_with_the_refit_model(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, cfg, _ = tuned_run
    out = tmp_path / "pipe"
    args = ["pipeline", str(cfg), "--data", str(data), "--out", str(out), "--test", str(data)]
    assert main([*args, "--refit", "--no-progress"]) == 0
    assert "refit on all 40 labelled tiles" in capsys.readouterr().out
    r = read_record(PipelineSummary, out / "pipeline.json")
    assert r.refit is not None and r.refit.source == str(out / "round1")
    assert r.submission is not None and r.submission.members == 1  # the refit model alone
    assert (out / "refit" / "postprocess.json").exists()
    assert len((out / "submission.csv").read_text().splitlines()) == 7


def test_budget_with_a_refit_keeps_time_for_one_more_larger_fold(tuned_run: tuple[Path, Path, Path]) -> None:
    import saltseg.pipeline as pipeline
    from saltseg.training.config import load_config
    from saltseg.training.data import LabelledTiles

    data, cfg_path, _ = tuned_run
    cfg, tiles = load_config(cfg_path), LabelledTiles.load(data)
    _, plain = pipeline._fit_budget(cfg, data, 20.0, 1, 0, "best", tiles, 2)
    _, refit = pipeline._fit_budget(cfg, data, 20.0, 1, 0, "best", tiles, 2, refit=True)
    reserve = pipeline.RESERVE_PER_FOLD
    # 2 folds of 20 training tiles, and a refit on 40: 2 + 2 fold-sized trainings instead of 2
    assert refit.per_fold_minutes + reserve == pytest.approx((plain.per_fold_minutes + reserve) / 2, abs=0.01)


def test_refit_killed_in_its_second_epoch_resumes_to_the_uninterrupted_weights(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """Without validation the stage is checkpointed after each training epoch, so a refit resumes too."""
    import lightning as L
    import torch

    from saltseg.checkpoints import load_model
    from saltseg.training.config import load_config
    from saltseg.training.data import LabelledTiles
    from saltseg.training.fold import TrainingInterrupted, train_fold

    class CtrlC(L.Callback):
        def on_train_batch_end(self, trainer, *args) -> None:  # type: ignore[no-untyped-def]
            if trainer.current_epoch == 1:
                raise KeyboardInterrupt

    data, cfg_path, _ = tuned_run
    cfg = load_config(cfg_path, ["train.limit_train_batches=2"])
    tiles = LabelledTiles.load(data)
    killed = tmp_path / "killed"
    with pytest.raises(TrainingInterrupted):
        train_fold(cfg, tiles, {}, None, killed, progress=False, callbacks=[CtrlC()])
    assert torch.load(killed / "stage0" / "last.ckpt", weights_only=True)["epoch"] == 0  # the end of epoch 0
    assert not (killed / "state.json").exists()  # killed in its first stage
    from saltseg.training.refit import _claim

    half = killed / ".best.safetensors.k1ll3d_x.safetensors"  # a weights save the kill cut short
    half.write_text("half")
    _claim(killed, resume=True)  # `saltseg refit --resume` takes it up, without the killed write's file
    assert not half.exists()
    resumed = train_fold(cfg, tiles, {}, None, killed, resume=True, progress=False)
    straight = train_fold(cfg, tiles, {}, None, tmp_path / "straight", progress=False)
    assert resumed is not None and straight is not None and resumed.epochs == straight.epochs == 2
    a = load_model(killed / "stage0" / "end.safetensors").state_dict()
    b = load_model(tmp_path / "straight" / "stage0" / "end.safetensors").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)


def test_refit_trains_the_epochs_a_budget_refitted_the_folds_to(
    tuned_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    """With ``train.rescale_epochs`` the folds of one run can train different epochs: the refit trains
    the median fold's (the config's when no fold was re-fitted)."""
    import shutil

    from saltseg.artifacts import RunDir
    from saltseg.training.config import load_config
    from saltseg.training.refit import fold_epochs, refit_config

    _, _, run = tuned_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    cfg = load_config(copy / "config.yaml")
    assert fold_epochs(RunDir(copy), cfg) == [[2], [2]]  # no fold was re-fitted: the config's
    for k, epochs in ((0, [3]), (1, [5])):
        fold = RunDir(copy).fold(k)
        state = fold.read_state()
        state.epochs = epochs
        fold.write_state(state)
    assert fold_epochs(RunDir(copy), cfg) == [[3], [5]]
    assert refit_config(cfg, 20, 40, [[3], [5], [4]]).stages[0].epochs == 4
    assert refit_config(cfg, 20, 40, fold_epochs(RunDir(copy), cfg)).stages[0].epochs == 3
    assert refit_config(cfg, 20, 40).stages[0].epochs == 2
    # a budget-fitted config: the refit keeps the folds' epochs, its grown time cap only caps them
    budgeted = cfg.model_copy(
        update={"train": cfg.train.model_copy(update={"max_minutes": 5.0, "rescale_epochs": True})}
    )
    refit = refit_config(budgeted, 20, 40, [[3]])
    assert refit.train.max_minutes == 10.0 and not refit.train.rescale_epochs
    assert refit.stages[0].epochs == 3
