"""Typed records of what the stages hand each other through their folders (fold state and summaries,
run and ensemble summaries, prediction metadata, pseudo-label datasets), each read and written in one
place.

Records ignore keys they do not know (a newer saltseg may add some) and fill keys an older one did not
write with their defaults; a file that is not such a record at all is one :class:`DataError` naming it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

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
