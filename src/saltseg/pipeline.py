"""The whole competition pipeline in one call: K folds -> OOF tuning -> report -> test submission.

Optionally with a wall-clock budget (each fold's epochs fitted to its share, see
:mod:`saltseg.training.budget`) and pseudo-label rounds (confident test predictions of the best round so
far, calibrated by a temperature fitted on its out-of-fold predictions, are added to the next round's
training folds, never to its validation folds).
Every step writes into the run folder, and ``resume=True`` continues a killed pipeline where it stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from saltseg.artifacts import PredictionDir, RunDir, names
from saltseg.artifacts.records import (
    FoldLine,
    PipelineBudget,
    PipelineSummary,
    RoundSummary,
    StudentSummary,
    SubmissionRecord,
    TeacherLabels,
    TestPrediction,
    TuningStep,
    start_step_state,
)
from saltseg.errors import DataError
from saltseg.inference.calibrate import fit_run_temperature
from saltseg.training.config import (
    ExperimentConfig,
    PipelineConfig,
    dump_config,
    format_validation_error,
    load_config,
)
from saltseg.training.data import LabelledTiles
from saltseg.utils.io import atomic_write, remove_stale_temporaries_in

log = logging.getLogger(__name__)

#: Minutes kept back from a budget for each fold's OOF prediction and for tuning and the report.
RESERVE_PER_FOLD = 0.4
RESERVE_FIXED = 1.5


def _members_per_fold(cfg: ExperimentConfig) -> int:
    """Models one fold leaves: one per snapshot cycle (plus SWA), else its best epoch."""
    n = sum(
        s.schedule.cycles if s.snapshots and s.schedule.name == "cosine_restarts" else int(s.snapshots)
        for s in cfg.stages
    )
    return max(n, 1) + int(cfg.swa.enabled and not cfg.swa.replace)


def _fit_budget(
    cfg: ExperimentConfig,
    data_dir: Path,
    minutes: float,
    rounds: int,
    n_test: int,
    test_members: str,
    tiles: LabelledTiles,
    n_folds: int,
    refit: bool = False,
) -> tuple[ExperimentConfig, PipelineBudget]:
    """Fit each fold's epochs to its share of ``minutes``, after the test predictions' estimated time.

    A ``refit`` on every tile counts as ``n / (n - n_val)`` folds (its epochs see that many more tiles)
    and predicts the submission alone."""
    from saltseg.training.budget import fit_epochs_to_budget, measure_epoch_seconds

    n = len(tiles.ids)
    n_val = n // cfg.data.folds
    measured = measure_epoch_seconds(cfg, tiles, n - n_val, n_val)
    members = n_folds * (1 if test_members == "best" else _members_per_fold(cfg))
    predict_s = measure_predict_seconds(cfg, tiles) if n_test else 0.0
    # every round but the last predicts the test tiles for the next one's labels, the last (or its
    # refit model) the submission; reading tiles, post-processing and RLE add about 15%
    predictions = (rounds - 1) * members + (1 if refit else members)
    predict_min = n_test * predictions * predict_s * 1.15 / 60
    trainings = rounds * n_folds + (n / (n - n_val) if refit else 0.0)
    per_fold = (minutes - predict_min - rounds * RESERVE_FIXED) / trainings - RESERVE_PER_FOLD
    if per_fold < 0.5:
        raise DataError(
            f"a {minutes}-minute budget leaves {per_fold:.2f} min per fold for {n_folds} folds "
            f"and {rounds} round(s) after {predict_min:.1f} min of test prediction; give more --minutes "
            "or fewer folds (data.folds=...)"
        )
    fitted, fit = fit_epochs_to_budget(cfg, tiles, per_fold, n - n_val, n_val, measured)
    planned = sum(s.epochs for s in cfg.stages)
    if sum(fit.epochs) < planned / 2:  # a slow machine: say so now, not after the run's low score
        log.warning(
            "the %g-minute budget fits %d of the config's %d epochs per fold on this machine "
            "(%s s per epoch); expect a lower score than the full schedule's: give more --minutes or "
            "fewer folds (data.folds=...)",
            minutes,
            sum(fit.epochs),
            planned,
            "/".join(f"{e:.0f}" for e in fit.epoch_s),
        )
    return fitted, PipelineBudget(
        minutes=minutes,
        test_prediction_minutes_estimate=round(predict_min, 2),
        test_prediction_s_per_tile_and_model=round(predict_s, 6),
        per_fold_minutes=round(per_fold, 2),
        **fit.as_dict(),
    )


def measure_predict_seconds(cfg: ExperimentConfig, tiles: LabelledTiles, batch: int = 128) -> float:
    """Seconds per tile and model of the test prediction (flip TTA) on the backend ``saltseg predict``
    chooses (``auto``: a graph backend where one passes its check), timed on one batch after a first."""
    from saltseg.models import create_model
    from saltseg.predictor import EnsemblePredictor

    images, _ = tiles.arrays(np.arange(min(batch, len(tiles.ids))))
    predictor = EnsemblePredictor([create_model(cfg.model).eval()], backend="auto")
    predictor(images)  # exports, checks and warms the backend
    t0 = time.perf_counter()
    predictor(images)
    return (time.perf_counter() - t0) / len(images)


def scaled_to_more_tiles(
    cfg: ExperimentConfig, n_train: int, n_extra: int, folds: int = 1
) -> ExperimentConfig:
    """A copy of ``cfg`` whose stages that see ``n_extra`` more tiles (pseudo-labels or soft targets)
    keep the training steps of ``folds`` folds of ``n_train`` tiles: their epochs shrink as the
    training set grows, so that a round fits the time its budget planned."""
    out = cfg.model_copy(deep=True)
    scale = folds * n_train / (n_train + n_extra)
    seeing = len(out.stages) if out.data.pseudo_mode == "mix" else out.data.pretrain_stages
    for stage in out.stages[:seeing]:
        stage.epochs = max(1, round(stage.epochs * scale))
    for stage in out.stages[seeing:]:
        stage.epochs = max(1, round(stage.epochs * folds))
    if out.train.max_minutes is not None:
        out.train.max_minutes = out.train.max_minutes * folds
    return out


def _load_tiles(cfg: ExperimentConfig, data_dir: Path) -> LabelledTiles:
    return LabelledTiles.load(data_dir, cache=cfg.data.cache, skip_missing=cfg.data.skip_missing)


def _round(
    cfg: ExperimentConfig,
    data_dir: Path,
    out: Path,
    resume: bool,
    progress: bool,
    tiles: LabelledTiles,
    folds: list[int] | None = None,
) -> RoundSummary:
    """Train the folds (default every fold) of ``cfg`` into ``out``, tune on their OOF predictions and
    write the report."""
    from saltseg.diagnostics.report import write_report
    from saltseg.inference.tune import tune_run
    from saltseg.training.train import train_run

    t0 = time.time()
    run = RunDir(out)
    resume = resume and run.config_file.exists()
    summary = train_run(cfg, data_dir, out, folds_to_run=folds, resume=resume, progress=progress, tiles=tiles)
    assert summary is not None and summary.n_oof is not None  # the pipeline runs in one process
    train_minutes = round((time.time() - t0) / 60, 2)
    t0 = time.time()
    pp, steps = tune_run(out)
    tune_minutes = round((time.time() - t0) / 60, 2)
    t0 = time.time()
    write_report([out], run.report_file)
    return RoundSummary(
        run=str(out),
        train_minutes=train_minutes,
        tune_minutes=tune_minutes,
        report_minutes=round((time.time() - t0) / 60, 2),
        folds=[FoldLine.model_validate(f.model_dump()) for f in summary.folds],
        n_oof=summary.n_oof,
        oof_score_thr05=summary.oof_score,
        oof_score_tuned=steps[-1][1],
        tuning=[TuningStep(step=name, oof_score=v) for name, v in steps],
        postprocess=pp.model_dump(),
    )


def run_pipeline(
    cfg: ExperimentConfig,
    data_dir: str | Path,
    out: str | Path,
    minutes: float | None = None,
    test_images: str | Path | None = None,
    pseudo_rounds: int | None = None,
    pseudo_confidence: float | None = None,
    calibrate: bool | None = None,
    distill: bool | None = None,
    refit: bool | None = None,
    resume: bool = False,
    progress: bool = True,
    predict_batch_size: int = 128,
    test_members: str | None = None,
    folds: list[int] | None = None,
    test_split: str = "test",
) -> PipelineSummary:
    """Run the pipeline into ``out``; returns (and writes to ``out/pipeline.json``) what each step gave.

    ``minutes``, ``pseudo_rounds``, ``pseudo_confidence``, ``calibrate``, ``distill``, ``refit`` and
    ``test_members`` default to the config's ``pipeline`` section; an argument given overrides it.

    ``minutes`` budgets everything: the test predictions' time is estimated from a timed pass and kept
    back, the rest is split evenly over rounds and folds. ``test_members``: ``best`` predicts the test
    tiles with one model per fold (its best member), ``all`` with every member (snapshots too).
    ``pseudo_rounds`` rounds follow the first, each trained on the labelled tiles plus the confident
    test predictions of the best round so far (its probabilities first calibrated by a temperature
    fitted on its out-of-fold predictions when ``calibrate``); they need ``test_images``. The final
    run is the round with the best tuned OOF score.

    ``distill`` then trains one student (fold 0 held out) on the labelled tiles plus every test tile with
    the best round's calibrated probabilities as soft targets, so that one model can predict what the
    fold ensemble did; its fold-0 score is recorded beside the teacher's. The submission stays the best
    round's (``saltseg predict OUT/student`` uses the student).

    ``refit`` then trains the final round's config on every labelled tile into ``OUT/refit``
    (:func:`saltseg.training.refit.refit_run`); the submission is that one model's, with the round's tuned
    post-processing (``saltseg predict OUT/round<k>`` still predicts with the fold ensemble).

    ``folds`` trains only those folds (default every fold; the OOF score then covers their validation
    tiles). ``test_split`` picks the tiles of ``test_images`` to predict: ``test`` (a Kaggle test split or
    a folder of tiles) or ``train`` (labelled tiles held out elsewhere, as the demo scores them).
    """
    from saltseg.inference.predict import predict_folder, tile_ids

    data_dir, out = Path(data_dir), Path(out)
    given = {
        "minutes": minutes,
        "pseudo_rounds": pseudo_rounds,
        "pseudo_confidence": pseudo_confidence,
        "calibrate": calibrate,
        "distill": distill,
        "refit": refit,
        "test_members": test_members,
    }
    plan = _pipeline_plan(cfg, {k: v for k, v in given.items() if v is not None})
    cfg = cfg.model_copy(update={"pipeline": plan})
    minutes, pseudo_rounds, pseudo_confidence = plan.minutes, plan.pseudo_rounds, plan.pseudo_confidence
    calibrate, distill, test_members = plan.calibrate, plan.distill, plan.test_members
    refit = plan.refit
    if (pseudo_rounds or distill) and test_images is None:
        raise DataError("a pseudo-label round needs unlabelled tiles: give the test images too")
    best_only = test_members == "best"
    started = time.time()
    loaded: list[LabelledTiles] = []  # the labelled tiles, read once for the budget fit and every round

    def tiles() -> LabelledTiles:
        if not loaded:
            loaded.append(_load_tiles(cfg, data_dir))
        return loaded[0]

    cfg_file = out / names.CONFIG_FILE
    state, resumed = start_step_state(
        PipelineSummary,
        out,
        names.PIPELINE_FILE,
        resume,
        lambda: PipelineSummary(config=cfg.name, data=str(data_dir.resolve())),
        "pipeline",
        first_files=(names.CONFIG_FILE, names.PIPELINE_FILE),
    )
    if resumed:
        remove_stale_temporaries_in(out)  # of files the killed pipeline was writing
        cfg = load_config(cfg_file)  # the budget-fitted config of the first start
        cfg = cfg.model_copy(update={"pipeline": plan})
    else:
        if minutes is not None:
            n_test = len(tile_ids(test_images, test_split)[0]) if test_images is not None else 0
            rounds = 1 + pseudo_rounds + int(distill)
            n_folds = len(folds) if folds else cfg.data.folds
            cfg, state.budget = _fit_budget(
                cfg, data_dir, minutes, rounds, n_test, test_members, tiles(), n_folds, refit
            )
        with atomic_write(cfg_file) as f:
            f.write(dump_config(cfg))
    earlier = state.minutes

    def save() -> None:
        state.minutes = round(earlier + (time.time() - started) / 60, 2)
        state.write(out / names.PIPELINE_FILE)

    save()
    if 1 not in state.rounds:
        state.rounds[1] = _round(cfg, data_dir, out / "round1", resume, progress, tiles(), folds)
        save()
    best = 1  # the round with the best tuned OOF score so far
    for k in range(2, pseudo_rounds + 2):
        assert test_images is not None
        pred = _teacher_predictions(
            state, save, out, best, Path(test_images), predict_batch_size, best_only, test_split
        )
        pseudo_dir = out / f"pseudo{k - 1}"
        if k - 1 not in state.pseudo:
            from saltseg.inference.pseudo import write_pseudo_dataset

            teacher = out / f"round{best}"
            temperature = fit_run_temperature(teacher)[0] if calibrate else 1.0
            written = write_pseudo_dataset(
                pred,
                test_images,
                pseudo_dir,
                pseudo_confidence,
                exclude=data_dir,
                temperature=temperature,
            )
            state.pseudo[k - 1] = TeacherLabels(teacher=str(teacher), **written.model_dump())
            save()
        if k not in state.rounds:
            cfg_k = cfg.model_copy(deep=True)
            n_pseudo = state.pseudo[k - 1].selected
            if n_pseudo:
                cfg_k.data.pseudo_labels = str(pseudo_dir)
                n_oof = state.rounds[1].n_oof
                cfg_k = scaled_to_more_tiles(cfg_k, n_oof - n_oof // cfg.data.folds, n_pseudo)
            state.rounds[k] = _round(cfg_k, data_dir, out / f"round{k}", resume, progress, tiles(), folds)
            save()
        if state.rounds[k].oof_score_tuned >= state.rounds[best].oof_score_tuned:
            best = k
    state.final_round = best
    final_run = out / f"round{best}"
    if distill:
        assert test_images is not None
        _distill(
            cfg,
            data_dir,
            Path(test_images),
            out,
            state,
            save,
            calibrate,
            resume,
            progress,
            predict_batch_size,
            best_only,
            tiles(),
        )
    final_model = out / names.REFIT_DIR if refit else final_run  # the submission's model
    if refit and state.refit is None:
        from saltseg.training.refit import refit_run

        state.refit = refit_run(final_run, final_model, data_dir, tiles(), resume, progress)
        save()
    if test_images is not None:
        csv_path = out / names.SUBMISSION_FILE
        if state.submission is None or not csv_path.exists():
            pred = PredictionDir(final_run / "test_pred")
            if not refit and best in state.test_predictions:
                # the best round already predicted every test tile (for the next round's pseudo-labels)
                with atomic_write(csv_path) as f:
                    f.write(pred.masks_file.read_text())
                meta = pred.read_meta()
            else:
                meta = predict_folder(
                    [final_model],
                    test_images,
                    out / "test_pred",
                    csv_path=csv_path,
                    split=test_split,
                    batch_size=predict_batch_size,
                    best_only=best_only,
                )
            state.submission = SubmissionRecord(
                csv=str(csv_path), tiles=meta.n_tiles, members=len(meta.models), seconds=meta.seconds
            )
    save()
    return state


def _pipeline_plan(cfg: ExperimentConfig, given: dict[str, object]) -> PipelineConfig:
    """The config's ``pipeline`` section with the arguments given on top, validated."""
    try:
        return PipelineConfig.model_validate({**cfg.pipeline.model_dump(), **given})
    except ValidationError as exc:
        raise DataError(f"pipeline: {format_validation_error(exc)}") from None


def _teacher_predictions(
    state: PipelineSummary,
    save: Callable[[], None],
    out: Path,
    teacher_round: int,
    test_images: Path,
    batch_size: int,
    best_only: bool,
    split: str = "test",
) -> Path:
    """The teacher round's test predictions (``OUT/round<k>/test_pred``), predicted once and recorded in
    ``state.test_predictions``."""
    from saltseg.inference.predict import predict_folder

    teacher = out / f"round{teacher_round}"
    pred = teacher / "test_pred"
    if teacher_round not in state.test_predictions:
        meta = predict_folder(
            [teacher], test_images, pred, split=split, batch_size=batch_size, best_only=best_only
        )
        state.test_predictions[teacher_round] = TestPrediction(seconds=meta.seconds, tiles=meta.n_tiles)
        save()
    return pred


def _distill(
    cfg: ExperimentConfig,
    data_dir: Path,
    test_images: Path,
    out: Path,
    state: PipelineSummary,
    save: Callable[[], None],
    calibrate: bool,
    resume: bool,
    progress: bool,
    batch_size: int,
    best_only: bool,
    tiles: LabelledTiles,
) -> None:
    """Train the student of the final round into ``out/student`` (fold 0) on labelled + soft test
    targets."""
    from saltseg.inference.pseudo import write_pseudo_dataset

    assert state.final_round is not None
    teacher = out / f"round{state.final_round}"
    pred = _teacher_predictions(state, save, out, state.final_round, test_images, batch_size, best_only)
    targets = out / "distill_targets"
    if state.distill_targets is None:
        temperature = fit_run_temperature(teacher)[0] if calibrate else 1.0
        written = write_pseudo_dataset(
            pred,
            test_images,
            targets,
            0.0,
            balance=False,
            exclude=data_dir,
            temperature=temperature,
            soft=True,
        )
        state.distill_targets = TeacherLabels(teacher=str(teacher), **written.model_dump())
        save()
    if state.student is not None:
        return
    cfg_s = cfg.model_copy(deep=True)
    cfg_s.data.pseudo_labels, cfg_s.data.pseudo_mode = str(targets), "mix"
    # one student in the time of a round (all its folds): its epochs shrink as its training set grows
    n_oof = state.rounds[1].n_oof
    n_soft = state.distill_targets.selected
    cfg_s = scaled_to_more_tiles(cfg_s, n_oof - n_oof // cfg.data.folds, n_soft, folds=cfg.data.folds)
    student = _round(cfg_s, data_dir, out / "student", resume, progress, tiles, folds=[0])
    teacher_fold0 = RunDir(teacher).fold(0).read_summary()
    state.student = StudentSummary(
        **student.model_dump(),
        teacher_fold0_oof_thr05=teacher_fold0.oof_score if teacher_fold0 else None,
        student_fold0_oof_thr05=student.folds[0].oof_score,
    )
    save()
