"""Typed records of what the stages hand each other through their folders (fold state and summaries,
run and ensemble summaries, prediction metadata, pseudo-label datasets), each read and written in one
place.

Records ignore keys they do not know (a newer saltseg may add some) and fill keys an older one did not
write with their defaults; a file that is not such a record at all is one :class:`DataError` naming it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, computed_field, model_validator

from saltseg.errors import DataError
from saltseg.utils.io import write_json

FoldStatus = Literal["running", "done", "stopped", "failed"]


class Record(BaseModel):
    """A JSON file of a saltseg folder."""

    model_config = ConfigDict(extra="ignore")

    def write(self, path: Path) -> None:
        """Write the record atomically."""
        write_json(path, self.model_dump(mode="json"))


R = TypeVar("R", bound=Record)


def read_record(cls: type[R], path: Path) -> R:
    """Read ``path`` as a ``cls`` record (one clear error for a damaged or foreign file)."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"missing {path.name}", path) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise DataError(f"unreadable {path.name} ({why}); the file is damaged", path) from None
    try:
        return cls.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or path.name
        raise DataError(
            f"not a saltseg {cls.__name__} ({where}: {first['msg']}); damaged, or written by an "
            "incompatible saltseg version",
            path,
        ) from None


class FoldState(Record):
    """What a fold has done (``state.json``), so that ``--resume`` continues it."""

    completed: list[int] = []
    best_score: float | None = None
    status: FoldStatus = "running"
    reason: str | None = None
    seconds: float = 0.0
    epochs: list[int] | None = None  # stage epochs of a fold re-fitted to its budget (train.rescale_epochs)

    @property
    def best(self) -> float:
        """The best validation score so far, -inf before the first validation."""
        return -math.inf if self.best_score is None else self.best_score


class FoldSummary(Record):
    """A finished fold (``fold{k}/summary.json``)."""

    name: str = ""
    fold: int = -1
    status: FoldStatus = "done"  # a fold writes its summary when it ends
    reason: str | None = None
    epochs: int = 0
    planned_epochs: int = 0
    minutes: float = 0.0
    best_val_score: float | None = None
    oof_score: float | None = None
    n_val: int = 0
    members: list[str] = []
    member_scores: dict[str, float] = {}

    def best_member(self) -> str | None:
        """The member that scored best on the fold's validation tiles (the first on ties)."""
        if not self.members:
            return None
        return max(self.members, key=lambda m: self.member_scores.get(Path(m).name, -1.0))


class RefitSummary(Record):
    """A model refit on every labelled tile (``saltseg refit``; ``OUT/refit/refit.json``): the
    cross-validated run it follows, the best epoch of each of that run's folds, and its own training."""

    source: str
    n_tiles: int
    cv_best_epochs: list[int] = []
    cv_oof_score: float | None = None
    training: FoldSummary


class RunSummary(Record):
    """A run's folds and its out-of-fold score at threshold 0.5 (``RUN/summary.json``)."""

    run: str
    folds: list[FoldSummary] = []
    oof_score: float | None = None
    n_oof: int | None = None


class EnsembleMember(Record):
    """One run of an ensemble and its weight."""

    run: str
    weight: float
    cv_score: float | None = None
    has_mask: bool = True


class EnsembleSummary(Record):
    """An ensemble (``ensemble.json`` and ``summary.json`` of an ensemble folder)."""

    weighting: str = "given"
    members: list[EnsembleMember]
    n_oof: int | None = None
    oof_score: float | None = None


class ModelWeight(Record):
    """A checkpoint and its weight in a prediction."""

    path: str
    weight: float


class PredictionMeta(Record):
    """What a prediction folder holds (``meta.json``)."""

    models: list[ModelWeight]
    images: str
    split: str
    n_tiles: int
    n_empty: int
    n_chunks: int
    hflip_tta: bool
    postprocess: dict
    seconds: float
    tiles_per_second: float
    backend: str = "torch"  # the inference backend that ran the models (older folders: torch)
    backend_check: str | None = None  # how a graph backend compared with torch fp32 on the first tiles


class PseudoSummary(Record):
    """What a pseudo-label (or distillation target) dataset holds (``pseudo.json``): how many unlabelled
    tiles passed the confidence rule, and how many were kept, per coverage class."""

    source: str  # the prediction folder
    candidates: int  # unlabelled tiles among the predictions
    selected: int
    min_confidence: float
    balanced: bool
    threshold: float
    temperature: float = 1.0
    soft: bool = False
    passed: int = 0
    passed_per_coverage_class: dict[str, int] = {}
    per_coverage_class: dict[str, int] = {}


class StepState(Record):
    """The JSON state of a multi-step command (``pipeline.json``, ``recipe.json``): what its finished
    steps gave, so that ``--resume`` skips them, and the minutes spent over every start."""

    minutes: float = 0.0


S = TypeVar("S", bound=StepState)


def start_step_state(
    cls: type[S],
    out: Path,
    file_name: str,
    resume: bool,
    fresh: Callable[[], S],
    kind: str,
    first_files: tuple[str, ...] = (),
) -> tuple[S, bool]:
    """The state of the step folder ``out``: read back from ``out/file_name`` when resuming one, else
    ``fresh()`` in a new (or empty) folder, which is created. Returns the state and whether it was read.
    A resumed folder that holds only ``first_files`` (what the command writes before its state: it was
    killed in between) starts afresh.

    Raises:
        DataError: ``out`` holds files but is not being resumed (or has no state to resume).
    """
    state_file = out / file_name
    if resume and state_file.exists():
        return read_record(cls, state_file), True
    held = list(out.iterdir()) if out.is_dir() else []
    if resume and all(p.name in first_files for p in held):
        for p in held:
            p.unlink()
        held = []
    if out.exists() and (held or not out.is_dir()):
        raise DataError(f"{kind} folder exists and is not empty; use --resume or another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    return fresh(), False


class FoldLine(Record):
    """One fold of a round, as the pipeline reports it."""

    fold: int
    status: FoldStatus = "done"
    epochs: int = 0
    planned_epochs: int = 0
    minutes: float = 0.0
    best_val_score: float | None = None
    oof_score: float | None = None


class TuningStep(Record):
    """One post-processing step of ``tune`` and the OOF score it reached."""

    step: str
    oof_score: float


class RoundSummary(Record):
    """One training round of the pipeline (all its folds, tuned on their OOF predictions)."""

    run: str
    train_minutes: float = 0.0
    tune_minutes: float = 0.0
    report_minutes: float = 0.0
    folds: list[FoldLine] = []
    n_oof: int
    oof_score_thr05: float | None = None
    oof_score_tuned: float
    tuning: list[TuningStep] = []
    postprocess: dict = {}


class StudentSummary(RoundSummary):
    """The distilled student (fold 0) and the teacher's fold-0 model on the same validation tiles."""

    teacher_fold0_oof_thr05: float | None = None
    student_fold0_oof_thr05: float | None = None


class TeacherLabels(PseudoSummary):
    """A pseudo-label (or soft-target) dataset the pipeline made from a round's test predictions."""

    teacher: str


class TestPrediction(Record):
    """A round's prediction of every test tile."""

    seconds: float
    tiles: int


class SubmissionRecord(Record):
    """The submission CSV a pipeline or recipe wrote."""

    csv: str
    tiles: int
    members: int | None = None
    seconds: float | None = None
    step: str | None = None  # the recipe step whose models made it


class PipelineBudget(Record):
    """How ``--minutes`` was split: the test prediction kept back, each fold's share and the epochs the
    timing step chose for it."""

    minutes: float
    test_prediction_minutes_estimate: float = 0.0
    test_prediction_s_per_tile_and_model: float = 0.0
    per_fold_minutes: float
    step_s: list[float] = []
    augment_s_per_tile: float = 0.0
    epoch_s: list[float] = []
    epochs: list[int] = []
    infer_s_per_tile: float = 0.0


_ROUND_KEY = re.compile(r"^(round|pseudo|test_round)(\d+)$")


class PipelineSummary(StepState):
    """What ``saltseg pipeline`` did (``pipeline.json``): the budget, every round, the pseudo-label
    datasets between rounds (``pseudo[k]`` trained round ``k + 1``), the test predictions of the rounds
    that made them, the distilled student, the refit and the submission. ``final_round`` is the round with
    the best tuned OOF score, the one the submission comes from (from its refit model, when refit)."""

    config: str
    data: str
    budget: PipelineBudget | None = None
    rounds: dict[int, RoundSummary] = {}
    pseudo: dict[int, TeacherLabels] = {}
    test_predictions: dict[int, TestPrediction] = {}
    distill_targets: TeacherLabels | None = None
    student: StudentSummary | None = None
    refit: RefitSummary | None = None
    submission: SubmissionRecord | None = None
    final_round: int | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_flat_keys(cls, raw: object) -> object:
        """Read the layout of saltseg 0.x pipelines (``round1``, ``pseudo1``, ``test_round1`` keys)."""
        if not isinstance(raw, dict) or not any(_ROUND_KEY.match(k) for k in raw):
            return raw
        out: dict = {"rounds": {}, "pseudo": {}, "test_predictions": {}}
        for key, value in raw.items():
            m = _ROUND_KEY.match(key)
            if m is None:
                out[key] = value
            else:
                field = {"round": "rounds", "pseudo": "pseudo", "test_round": "test_predictions"}[m[1]]
                out[field][int(m[2])] = value
        final = raw.get("final_run")
        if isinstance(final, str) and Path(final).name.startswith("round"):
            out["final_round"] = int(Path(final).name[5:])
        return out

    @property
    def final(self) -> RoundSummary:
        """The final round (the best so far while the pipeline runs)."""
        if self.final_round is not None:
            return self.rounds[self.final_round]
        return self.rounds[self.best_round()]

    def best_round(self) -> int:
        """The finished round with the best tuned OOF score (the earliest on ties)."""
        return max(sorted(self.rounds), key=lambda k: (self.rounds[k].oof_score_tuned, -k))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def oof_score(self) -> float | None:
        """The final round's tuned OOF score."""
        return self.final.oof_score_tuned if self.rounds else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def n_oof(self) -> int | None:
        """Tiles in the final round's OOF score."""
        return self.final.n_oof if self.rounds else None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def final_run(self) -> str | None:
        """The final round's run folder."""
        return self.final.run if self.rounds else None


class RecipeStepRecord(Record):
    """What one recipe step did: a training (config, folds, epochs), an ensemble (members) or a pseudo
    step (teacher, temperature, tiles); the tuned OOF score of the steps that have models."""

    kind: Literal["train", "ensemble", "pseudo"]
    minutes: float = 0.0
    config: str | None = None
    folds: list[int] = []
    epochs: list[int] = []
    members: list[str] = []
    oof_tuned: float | None = None
    teacher: str | None = None
    temperature: float | None = None
    selected: int | None = None
    passed: int | None = None


class RecipeSummary(StepState):
    """What ``saltseg recipe`` did (``recipe.json``): the recipe and scale it ran (a resume must match
    them), each finished step, the submission."""

    recipe: dict
    scale: float
    folds: list[int] | None = None  # every training step limited to these folds (None: its own)
    steps: dict[str, RecipeStepRecord] = {}
    submission: SubmissionRecord | None = None
