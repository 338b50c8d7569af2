"""The one-command pipeline (folds -> OOF tuning -> report -> submission) and the budget fit."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from saltseg.artifacts.records import PipelineSummary, read_record
from saltseg.cli import main
from saltseg.data.rle import rle_decode
from saltseg.errors import ConfigError, DataError
from saltseg.training.config import load_config

PIPE = """\
name: pipe
model: {arch: vanilla_unet, base_channels: 4, depth: 2, attention: null, hypercolumn: false}
data: {folds: 2}
stages:
  - {name: warm, epochs: 1, loss: {name: bce_dice}, optimizer: {name: adam, lr: 0.003}}
  - {name: lovasz, epochs: 1, loss: {name: lovasz}, optimizer: {name: adam, lr: 0.001}}
train: {batch_size: 16, val_tta: false}
"""


@pytest.fixture(scope="module")
def pipe_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from saltseg.data.synth import write_kaggle_layout

    root = tmp_path_factory.mktemp("pipe")
    data = write_kaggle_layout(root / "data", n_train=40, n_test=6, seed=5)
    cfg = root / "pipe.yaml"
    cfg.write_text(PIPE)
    return data, cfg


def run_pseudo_pipeline(pipe_data: tuple[Path, Path], out: Path, rounds: int = 1) -> PipelineSummary:
    """The pipeline with pseudo-label rounds on the synthetic test tiles (every tile confident enough)."""
    import saltseg.pipeline as pipeline

    data, cfg_path = pipe_data
    return pipeline.run_pipeline(
        load_config(cfg_path),
        data,
        out,
        test_images=data,
        pseudo_rounds=rounds,
        pseudo_confidence=0.0,
        progress=False,
    )


def test_pipeline_command_scores_every_labelled_tile_and_writes_a_submission(
    pipe_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, cfg = pipe_data
    out = tmp_path / "full"
    code = main(
        ["pipeline", str(cfg), "--data", str(data), "--out", str(out), "--test", str(data), "--no-progress"]
    )
    assert code == 0
    r = read_record(PipelineSummary, out / "pipeline.json")
    assert r.n_oof == 40  # every labelled tile, each predicted by the fold that did not train on it
    assert [f.fold for f in r.rounds[1].folds] == [0, 1]
    assert r.oof_score == r.rounds[1].oof_score_tuned >= r.rounds[1].oof_score_thr05  # type: ignore[operator]
    assert (out / "round1" / "report.html").stat().st_size > 1000
    assert (out / "round1" / "postprocess.json").exists()
    lines = (out / "submission.csv").read_text().splitlines()
    assert lines[0] == "id,rle_mask" and len(lines) == 7
    for line in lines[1:]:
        rle_decode(line.split(",", 1)[1], (101, 101))
    assert r.submission is not None and r.submission.members == 2  # one model per fold (its best member)
    assert "out-of-fold score" in capsys.readouterr().out


def test_pipeline_resume_skips_finished_steps(pipe_data: tuple[Path, Path], tmp_path: Path) -> None:
    from saltseg.pipeline import run_pipeline

    data, cfg_path = pipe_data
    out = tmp_path / "p"
    first = run_pipeline(load_config(cfg_path), data, out, progress=False)
    stamp = (out / "round1" / "fold0" / "summary.json").stat().st_mtime_ns
    again = run_pipeline(load_config(cfg_path), data, out, resume=True, progress=False)
    assert again.oof_score == first.oof_score and again.rounds == first.rounds
    assert (out / "round1" / "fold0" / "summary.json").stat().st_mtime_ns == stamp  # not retrained
    with pytest.raises(DataError, match="not empty"):
        run_pipeline(load_config(cfg_path), data, out, progress=False)


def test_pipeline_pseudo_round_trains_a_second_round(pipe_data: tuple[Path, Path], tmp_path: Path) -> None:
    from saltseg.pipeline import run_pipeline

    data, cfg_path = pipe_data
    out = tmp_path / "ps"
    r = run_pseudo_pipeline(pipe_data, out)
    assert r.pseudo[1].selected > 0 and r.pseudo[1].teacher == str(out / "round1")
    assert r.pseudo[1].temperature > 0 and r.pseudo[1].passed >= r.pseudo[1].selected
    assert r.rounds[2].n_oof == 40  # pseudo tiles never enter the out-of-fold score
    assert load_config(out / "round2" / "config.yaml").data.pseudo_labels == str(out / "pseudo1")
    assert r.final_run in (str(out / "round1"), str(out / "round2"))
    assert r.oof_score == max(r.rounds[1].oof_score_tuned, r.rounds[2].oof_score_tuned)
    assert len((out / "submission.csv").read_text().splitlines()) == 7  # header + 6 test tiles
    with pytest.raises(DataError, match="pseudo-label round needs"):
        run_pipeline(load_config(cfg_path), data, tmp_path / "x", pseudo_rounds=1)


def test_best_member_takes_each_folds_best_scoring_snapshot(tmp_path: Path) -> None:
    from saltseg.inference.predict import resolve_models

    run = tmp_path / "run"
    (run / "config.yaml").parent.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    for k, scores in enumerate(({"a.safetensors": 0.5, "b.safetensors": 0.7}, {"a.safetensors": 0.9})):
        d = run / f"fold{k}"
        (d / "snapshots").mkdir(parents=True)
        members = [f"snapshots/{n}" for n in scores]
        (d / "summary.json").write_text(
            json.dumps({"status": "done", "members": members, "member_scores": scores})
        )
    failed = run / "fold2"
    failed.mkdir()
    (failed / "summary.json").write_text(json.dumps({"status": "failed", "members": ["x"]}))
    best = resolve_models([run], best_only=True)
    assert [m.path for m in best] == [
        run / "fold0/snapshots/b.safetensors",
        run / "fold1/snapshots/a.safetensors",
    ]
    assert [m.weight for m in best] == [0.5, 0.5]
    assert len(resolve_models([run])) == 3  # all members: two of fold 0, one of fold 1


def test_budget_fit_scales_stage_epochs_to_the_minutes(pipe_data: tuple[Path, Path]) -> None:
    from saltseg.training.budget import fit_epochs_to_budget
    from saltseg.training.data import LabelledTiles

    data, cfg_path = pipe_data
    cfg = load_config(cfg_path)
    tiles = LabelledTiles.load(data)
    _, fit_short = fit_epochs_to_budget(cfg, tiles, 0.05, 20, 20)
    long, fit_long = fit_epochs_to_budget(cfg, tiles, 5.0, 20, 20)
    assert sum(fit_long.epochs) > sum(fit_short.epochs) >= 2  # every stage keeps an epoch
    assert [s.epochs for s in long.stages] == fit_long.epochs
    assert long.train.max_minutes == 5.0
    assert [s.epochs for s in cfg.stages] == [1, 1]  # the input config is untouched
    assert len(fit_long.step_s) == 2 and all(s > 0 for s in fit_long.step_s)
    assert fit_long.infer_s_per_tile > 0


def test_measured_speed_rescales_the_epochs_of_a_budget_in_proportion() -> None:
    from saltseg.artifacts import FoldSummary
    from saltseg.training.budget import FILL, epochs_for_measured_speed
    from saltseg.training.config import ExperimentConfig

    cfg = ExperimentConfig.model_validate(
        {"stages": [{"epochs": 40}, {"epochs": 20}], "train": {"max_minutes": 10}}
    )
    slow = FoldSummary(fold=0, epochs=10, minutes=5.0)  # 30 s per epoch: 600 * FILL / 30 = 18.6 epochs
    assert epochs_for_measured_speed(cfg, [slow]) == [
        round(40 * 600 * FILL / 1800),
        round(20 * 600 * FILL / 1800),
    ]
    fast = FoldSummary(fold=1, epochs=30, minutes=2.5)  # with slow: 7.5 min / 40 epochs = 11.25 s per epoch
    assert sum(epochs_for_measured_speed(cfg, [slow, fast]) or []) == round(60 * 600 * FILL / 675)
    failed = FoldSummary(fold=2, status="failed", epochs=1, minutes=9.0)
    assert epochs_for_measured_speed(cfg, [slow, failed]) == epochs_for_measured_speed(cfg, [slow])
    assert epochs_for_measured_speed(cfg, []) is None  # the first fold keeps the config's epochs
    no_budget = ExperimentConfig.model_validate({"stages": [{"epochs": 40}]})
    assert epochs_for_measured_speed(no_budget, [slow]) is None


def test_later_folds_train_the_epochs_the_first_fold_measured_and_a_resume_keeps_them(
    pipe_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """A machine that slows down mid-run: the one timing step's epochs no longer fit a fold's budget,
    the cap cut the later folds' cosine schedules short (2026-12-03 pipeline). ``train.rescale_epochs``
    fits each later fold again to the seconds per epoch the finished folds measured."""
    from saltseg.artifacts import RunDir
    from saltseg.training.budget import epochs_for_measured_speed
    from saltseg.training.train import fold_config, train_run

    data, cfg_path = pipe_data
    cfg = load_config(cfg_path, ["train.max_minutes=0.05", "train.rescale_epochs=true"])
    run = tmp_path / "run"
    train_run(cfg, data, run, folds_to_run=[0], progress=False)
    fold0 = RunDir(run).fold(0)
    assert fold0.read_state().epochs == [1, 1]  # the first fold: the config's 1 + 1 epochs
    measured = fold0.read_summary()
    assert measured is not None and measured.planned_epochs == 2
    # the speed fold 0 measured, made exact: 0.7 s per epoch fits 2 + 2 epochs into 0.93 of 3 s
    measured.epochs, measured.minutes = 2, 2 * 0.699 / 60
    measured.write(fold0.summary_file)
    summary = train_run(cfg, data, run, folds_to_run=[1], resume=True, progress=False)
    assert summary is not None
    want = epochs_for_measured_speed(cfg, [measured])
    assert want == [2, 2]
    assert RunDir(run).fold(1).read_state().epochs == want
    assert summary.folds[1].planned_epochs == 4
    # a resume of fold 1 trains what its state recorded, whatever the finished folds say now
    (run / "fold0" / "summary.json").write_text(json.dumps({"fold": 0, "epochs": 1, "minutes": 10.0}))
    assert [s.epochs for s in fold_config(cfg, run, 1, resume=True).stages] == want
    assert fold_config(cfg, run, 1, resume=False).stages[0].epochs != want[0]
    # without the flag (a run that was not fitted to a budget) every fold trains the config's epochs
    plain = load_config(cfg_path, ["train.max_minutes=0.05"])
    assert fold_config(plain, run, 1, resume=False) is plain


def test_epochs_to_fill_counts_whole_epochs_into_the_budget_share() -> None:
    from saltseg.training.budget import FILL, epochs_to_fill

    # 0.93 of 100 s, 30 s spent on 2 epochs, 10 s each from now: 6 more
    assert epochs_to_fill(100, 30, 10, 2) == 2 + int((100 * FILL - 30) // 10) == 8
    assert epochs_to_fill(100, 95, 10, 2) == 3  # out of time already: one more epoch, the cap ends it
    assert epochs_to_fill(100, 20, 0.0, 2) > 2  # a zero epoch time does not divide by zero


@pytest.mark.parametrize(("minutes", "planned", "want"), [(2.577, 4, 10), (0.9, 12, 3)])
def test_a_stage_refits_its_epochs_to_the_speed_its_second_epoch_measured(
    pipe_data: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    minutes: float,
    planned: int,
    want: int,
) -> None:
    """The budget fit's few timed steps missed the real speed by 16-22% (2026-12-05: 35 epochs filled 23
    of 30 minutes). With ``train.rescale_epochs`` a stage re-fits its epochs at the start of its third
    epoch from the wall time of its second, both ways, and its cosine schedule ends at the new end; the
    fold's state records the new count for a resume. The clock is a fake one: 10 s per reading."""
    import csv
    import itertools

    from saltseg.artifacts import RunDir
    from saltseg.training.callbacks import StageBudgetRefit
    from saltseg.training.train import train_run

    ticks = itertools.count(0, 10.0)
    monkeypatch.setattr(StageBudgetRefit, "clock", staticmethod(lambda: float(next(ticks))))
    data, cfg_path = pipe_data
    cfg = load_config(
        cfg_path,
        [
            f"train.max_minutes={minutes}",
            "train.rescale_epochs=true",
            f"stages.0.epochs={planned}",
            "stages.0.schedule.min_lr=0.00001",
        ],
    )
    run = tmp_path / "run"
    summary = train_run(cfg, data, run, folds_to_run=[0], progress=False)
    assert summary is not None
    # stage 0 has 4/5 (or 12/13) of the budget; it spent 30 fake seconds on its first 2 epochs, each
    # further one takes 10: 2 + floor((0.93 * share - 30) / 10) epochs in all
    fold = RunDir(run).fold(0)
    assert fold.read_state().epochs == [want, 1]
    assert summary.folds[0].epochs == summary.folds[0].planned_epochs == want + 1
    with (fold.path / "logs" / "stage0" / "metrics.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert max(int(float(r["epoch"])) for r in rows if r.get("epoch")) == want - 1  # the re-fitted count
    lr_key = next(k for k in rows[0] if k.startswith("lr"))
    lrs = [float(r[lr_key]) for r in rows if r.get(lr_key)]
    assert len(lrs) == want  # one per epoch
    assert lrs[-1] < 0.35 * 0.003  # the cosine of the new length got near its floor, not cut midway
    assert cfg.stages[0].epochs == planned  # the caller's config is untouched


def test_epochs_to_fill_counts_a_validation_only_where_one_runs() -> None:
    from saltseg.training.budget import epochs_to_fill

    def odd_and_last(epoch: int, epochs: int) -> bool:
        return epoch % 2 == 1 or epoch == epochs - 1

    # 93 s, 10 s of training per epoch and 5 s per validation: 7 epochs validate 1, 3, 5, 6 (90 s);
    # 8 would validate 1, 3, 5, 7 (100 s). Validating every epoch, only 6 fit.
    assert epochs_to_fill(100, 0, 10, 0, val_s=5, validates=odd_and_last) == 7
    assert epochs_to_fill(100, 0, 15, 0) == epochs_to_fill(100, 0, 10, 0, val_s=5) == 6
    assert epochs_to_fill(100, 95, 10, 2, val_s=5, validates=odd_and_last) == 3  # out of time: one more


def test_a_stage_with_sparse_validation_refits_to_its_training_and_validation_times(
    pipe_data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``train.val_every: 2`` the re-fit times the second epoch's validation apart from its
    training and counts it only for the epochs that validate. Fake clock, 10 s per reading: training
    starts at 0, epoch 0 at 10, epoch 1 at 20, its validation from 30 to 40, epoch 2 at 50: 20 s of
    training and 10 s of validation per epoch. Stage 0 has 4/5 of 5 minutes: 0.93 * 240 - 50 = 173.2 s
    left, which 6 more epochs fill (3, 5, 6, 7 validate: 160 s), where 5 would fill at 30 s each."""
    import itertools

    from saltseg.artifacts import RunDir
    from saltseg.training.callbacks import StageBudgetRefit
    from saltseg.training.train import train_run

    ticks = itertools.count(0, 10.0)
    monkeypatch.setattr(StageBudgetRefit, "clock", staticmethod(lambda: float(next(ticks))))
    data, cfg_path = pipe_data
    cfg = load_config(
        cfg_path,
        ["train.max_minutes=5", "train.rescale_epochs=true", "stages.0.epochs=4", "train.val_every=2"],
    )
    run = tmp_path / "run"
    assert train_run(cfg, data, run, folds_to_run=[0], progress=False) is not None
    assert RunDir(run).fold(0).read_state().epochs == [8, 1]


def test_budget_fit_reads_tiles_from_disk_with_the_cache_off(pipe_data: tuple[Path, Path]) -> None:
    """Issue 12: ``data.cache: false`` crashed ``pipeline --minutes`` with a TypeError in the budget fit."""
    from saltseg.training.budget import fit_epochs_to_budget
    from saltseg.training.data import LabelledTiles

    data, cfg_path = pipe_data
    cfg = load_config(cfg_path, ["data.cache=false"])
    tiles = LabelledTiles.load(data, cache=False)
    assert tiles.images is None
    _, fit = fit_epochs_to_budget(cfg, tiles, 1.0, 20, 20)
    assert sum(fit.epochs) >= 2 and all(s > 0 for s in fit.step_s)
    cached = LabelledTiles.load(data)
    idx = np.array([3, 0, 7])
    for lazy, kept in zip(tiles.arrays(idx), cached.arrays(idx), strict=True):
        assert (lazy == kept).all()


def test_budget_that_fits_few_of_the_configs_epochs_warns(
    pipe_data: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A slow machine (measured here: an AVX2 CPU fit 5 of cpu_pipeline's 40 epochs) is said at once."""
    import saltseg.pipeline as pipeline
    import saltseg.training.budget as budget
    from saltseg.training.data import LabelledTiles

    data, cfg_path = pipe_data
    cfg = load_config(cfg_path, ["stages.0.epochs=30", "stages.1.epochs=10"])
    tiles = LabelledTiles.load(data)
    slow = budget.BudgetFit([1.0, 1.0], 0.0, [60.0, 60.0], [30, 10], 0.001)
    monkeypatch.setattr(budget, "measure_epoch_seconds", lambda *a, **k: slow)
    with caplog.at_level(logging.WARNING, logger="saltseg.pipeline"):
        fitted, plan = pipeline._fit_budget(cfg, data, 20.0, 1, 0, "best", tiles, 2)
    assert sum(plan.epochs) < 20 and [s.epochs for s in fitted.stages] == plan.epochs
    assert "fits 8 of the config's 40 epochs per fold" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="saltseg.pipeline"):
        pipeline._fit_budget(cfg, data, 100.0, 1, 0, "best", tiles, 2)
    assert "epochs per fold" not in caplog.text  # 40 minutes per fold fit the schedule


def test_pipeline_budget_too_small_is_one_clear_error(
    pipe_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, cfg = pipe_data
    code = main(["pipeline", str(cfg), "--data", str(data), "--out", str(tmp_path / "o"), "--minutes", "1"])
    assert code == 2
    assert "per fold" in capsys.readouterr().err


def test_pipeline_reuses_round1_test_predictions_when_the_pseudo_rounds_lose(
    pipe_data: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import saltseg.pipeline as pipeline

    original = pipeline._round

    def losing_pseudo_rounds(cfg, data_dir, out, *args, **kwargs):  # type: ignore[no-untyped-def]
        summary = original(cfg, data_dir, out, *args, **kwargs)
        if out.name != "round1":
            summary.oof_score_tuned = -1.0
        return summary

    monkeypatch.setattr(pipeline, "_round", losing_pseudo_rounds)
    out = tmp_path / "lost"
    r = run_pseudo_pipeline(pipe_data, out, rounds=2)
    # round 2 lost, so round 3 learns from round 1's predictions again
    assert r.pseudo[1].teacher == r.pseudo[2].teacher == str(out / "round1")
    assert load_config(out / "round3" / "config.yaml").data.pseudo_labels == str(out / "pseudo2")
    assert r.final_run == str(out / "round1")
    assert r.oof_score == r.rounds[1].oof_score_tuned
    assert (out / "submission.csv").read_text() == (out / "round1" / "test_pred" / "masks.csv").read_text()
    assert not (out / "test_pred").exists()  # no second prediction with the same models


def test_pipeline_distills_the_fold_ensemble_into_one_student(
    pipe_data: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from saltseg.training.data import load_pseudo_labels

    data, cfg = pipe_data
    out = tmp_path / "distill"
    argv = ["pipeline", str(cfg), "--data", str(data), "--out", str(out), "--test", str(data), "--distill"]
    assert main([*argv, "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "student (one model, 6 soft test tiles): fold 0" in printed
    r = read_record(PipelineSummary, out / "pipeline.json")
    targets = r.distill_targets
    assert targets is not None
    assert targets.soft and targets.selected == 6 and targets.teacher == str(out / "round1")
    images, soft = load_pseudo_labels(out / "distill_targets")
    assert soft.dtype == np.uint8 and len(images) == 6
    assert ((soft > 0) & (soft < 255)).any()  # probabilities, not 0/255 masks
    student = r.student
    assert student is not None
    assert [f.fold for f in student.folds] == [0] and student.n_oof == 20
    assert load_config(out / "student" / "config.yaml").data.pseudo_labels == str(out / "distill_targets")
    assert student.student_fold0_oof_thr05 == student.folds[0].oof_score


def test_rounds_with_more_tiles_keep_the_planned_training_steps(pipe_data: tuple[Path, Path]) -> None:
    """A pseudo round or a student trains on more tiles: fewer epochs of it fill the same minutes."""
    from saltseg.pipeline import scaled_to_more_tiles

    _, cfg_path = pipe_data
    cfg = load_config(cfg_path, ["stages.0.epochs=40", "stages.1.epochs=20", "train.max_minutes=10"])
    pseudo = scaled_to_more_tiles(cfg, 2560, 7680)  # 4x the tiles per epoch
    assert [s.epochs for s in pseudo.stages] == [10, 5] and pseudo.train.max_minutes == 10
    student = scaled_to_more_tiles(cfg, 2560, 7680, folds=5)  # one student in the time of five folds
    assert [s.epochs for s in student.stages] == [50, 25] and student.train.max_minutes == 50
    pretrain = load_config(
        cfg_path, ["stages.0.epochs=40", "stages.1.epochs=20", "data.pseudo_mode=pretrain"]
    )
    assert [s.epochs for s in scaled_to_more_tiles(pretrain, 2560, 7680).stages] == [10, 20]
    assert [s.epochs for s in cfg.stages] == [40, 20]  # the input config is untouched


def test_test_prediction_is_timed_on_the_backend_predict_uses(pipe_data: tuple[Path, Path]) -> None:
    from saltseg.pipeline import measure_predict_seconds
    from saltseg.training.data import LabelledTiles

    data, cfg_path = pipe_data
    seconds = measure_predict_seconds(load_config(cfg_path), LabelledTiles.load(data), batch=8)
    assert 0 < seconds < 10


def test_a_pipeline_folder_of_the_flat_layout_loads_and_resumes(
    pipe_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """``pipeline.json`` of saltseg before the typed summary kept ``round1`` / ``pseudo1`` /
    ``test_round1`` at the top level: such a folder reads as the same record and resumes without
    retraining."""
    from saltseg.pipeline import run_pipeline

    data, cfg_path = pipe_data
    out = tmp_path / "old"
    first = run_pipeline(load_config(cfg_path), data, out, progress=False)
    flat = {"config": first.config, "data": first.data, "minutes": first.minutes}
    flat["round1"] = first.rounds[1].model_dump(mode="json")
    flat.update(final_run=str(out / "round1"), oof_score=first.oof_score, n_oof=first.n_oof)
    (out / "pipeline.json").write_text(json.dumps(flat))
    old = read_record(PipelineSummary, out / "pipeline.json")
    assert old.rounds == first.rounds and old.final_round == 1 and old.oof_score == first.oof_score
    stamp = (out / "round1" / "fold0" / "summary.json").stat().st_mtime_ns
    again = run_pipeline(load_config(cfg_path), data, out, resume=True, progress=False)
    assert again.rounds == first.rounds
    assert (out / "round1" / "fold0" / "summary.json").stat().st_mtime_ns == stamp
    assert "rounds" in json.loads((out / "pipeline.json").read_text())  # rewritten in the new layout


def test_pipeline_killed_at_a_random_point_resumes_to_the_uninterrupted_result(
    pipe_data: tuple[Path, Path], tmp_path: Path
) -> None:
    """Issue 13, fault injection: SIGKILL ``saltseg pipeline`` at a random moment of its run (seeded);
    ``--resume`` then finishes with the uninterrupted pipeline's OOF score and submission, and no
    temporary file is left anywhere in the folder."""
    from test_resume_ddp import resume, run_then_kill_midway, saltseg_cmd

    data, cfg = pipe_data
    argv = [*saltseg_cmd(), "pipeline", str(cfg), "--data", str(data), "--test", str(data), "--no-progress"]
    ref, out = tmp_path / "ref", tmp_path / "killed"
    if run_then_kill_midway(argv, ref, out, (0.3, 0.9), seed=13):  # (one that beat the signal is done)
        resume(argv, out)
    done, want = (read_record(PipelineSummary, d / "pipeline.json") for d in (out, ref))
    assert done.oof_score == want.oof_score and done.rounds[1].tuning == want.rounds[1].tuning
    assert (out / "submission.csv").read_text() == (ref / "submission.csv").read_text()
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp") or ".tmp" in p.suffixes]


def test_resume_removes_only_the_temporaries_of_killed_atomic_writes(tmp_path: Path) -> None:
    """A SIGKILL inside ``atomic_write`` leaves ``.NAME.xxxxxxxx.tmp``; the resumed run removes it (the
    fault-injection test above found one beside a round's config.yaml), and nothing else."""
    from saltseg.artifacts import FoldDir
    from saltseg.utils.io import atomic_write, remove_stale_temporaries_in

    run = tmp_path / "run" / "fold0"
    run.mkdir(parents=True)
    with pytest.raises(KeyboardInterrupt), atomic_write(run / "state.json") as f:
        f.write("{")
        stale = run / ".state.json.ab3_x9zq.tmp"
        stale.write_text("{")  # what a SIGKILL (no cleanup) leaves, named as mkstemp names it
        raise KeyboardInterrupt
    # atomic_path (weights, ONNX graphs, figures) keeps the target's suffix: a killed snapshot save
    # left a hidden file that the snapshot listing took for a member
    snapshots = run / "snapshots"
    snapshots.mkdir()
    member = snapshots / "s0_c0.safetensors"
    member.write_text("weights")
    half = snapshots / ".s0_c1.safetensors.q7_k2m0z.safetensors"
    half.write_text("half")
    assert FoldDir(run).snapshots() == [member]
    keep = [
        run / "notes.tmp",
        run / ".x.tmp",
        run / ".config.yaml.TOO-LONG-123.tmp",
        run / "a.state.json.abcdefgh.tmp",
        snapshots / ".mine.safetensors",
        snapshots / ".a.npz.abcdefgh.safetensors",  # another suffix than its name's
    ]
    for k in keep:
        k.write_text("mine")
    assert remove_stale_temporaries_in(tmp_path / "run") == sorted([stale, half])
    assert all(k.read_text() == "mine" for k in keep) and not stale.exists() and not half.exists()
    assert member.exists()


def test_pipeline_section_of_the_config_is_the_default_and_arguments_override_it(
    pipe_data: tuple[Path, Path], tmp_path: Path
) -> None:
    from saltseg.pipeline import run_pipeline
    from saltseg.training.config import parse_config

    data, cfg_path = pipe_data
    cfg = load_config(cfg_path, ["pipeline.pseudo_rounds=1", "pipeline.test_members=all"])
    assert cfg.pipeline.pseudo_rounds == 1 and cfg.pipeline.minutes is None
    with pytest.raises(DataError, match="pseudo-label round needs"):  # the config's round, no test tiles
        run_pipeline(cfg, data, tmp_path / "x")
    too_high = "pipeline: 'pseudo_confidence': Input should be less than or equal to 1"
    with pytest.raises(DataError, match=too_high):
        run_pipeline(cfg, data, tmp_path / "y", pseudo_rounds=0, pseudo_confidence=1.5)
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    with pytest.raises(ConfigError, match=r"pipeline\.minutes"):
        parse_config({"pipeline": {"minutes": -5}})


def test_shipped_pipeline_config_carries_its_budget() -> None:
    cfg = load_config("cpu_pipeline")
    fast = load_config("cpu_fast")
    assert cfg.pipeline.minutes is not None and 100 <= cfg.pipeline.minutes <= 150
    assert cfg.model == fast.model and cfg.stages == fast.stages  # the 30-minute winner's recipe


def test_multi_process_launches_are_told_apart(monkeypatch: pytest.MonkeyPatch) -> None:
    """The epochs re-fit reads other folds' files: only a one-process run may use it."""
    from saltseg.training.config import ExperimentConfig
    from saltseg.training.runtime import is_multi_process

    for var in ("RANK", "LOCAL_RANK", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    one = ExperimentConfig.model_validate({"train": {"accelerator": "cpu"}})
    assert not is_multi_process(one)
    for devices in (2, "2", [0, 1], "0,1"):
        assert is_multi_process(ExperimentConfig.model_validate({"train": {"devices": devices}}))
    assert is_multi_process(ExperimentConfig.model_validate({"train": {"num_nodes": 2}}))
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert is_multi_process(one)
