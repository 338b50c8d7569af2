"""The folder of a ``saltseg search``: its file names, and the study read back for display.

Written by :mod:`saltseg.training.search`; read by ``saltseg runs`` and ``saltseg report``. Light on
imports (Optuna only inside :func:`read_study`, no torch or Lightning).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from saltseg.artifacts import names
from saltseg.errors import SaltsegError

__all__ = ["SEARCH_FILE", "STUDY_FILE", "TRIAL_FILE", "StudyReport", "TrialRow", "is_study_dir", "read_study"]

STUDY_FILE, SEARCH_FILE, TRIAL_FILE = names.STUDY_FILE, names.SEARCH_FILE, names.TRIAL_FILE

STUDY_NAME = "saltseg"


@dataclass
class TrialRow:
    """One trial of a study, as shown by ``saltseg runs`` and ``saltseg report``."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    value: float | None  # fold score at threshold 0.5 (complete trials)
    last_score: float | None  # last reported validation score (pruned and running trials)
    epochs: int | None
    minutes: float | None
    params: dict[str, Any]
    run: str | None
    baseline: bool = False  # the base config's own values (trial 0 of a new study)

    def param_text(self, key: str, missing: str = "-") -> str:
        """The value of ``key`` for a table: 4 significant digits for floats, ``missing`` if absent."""
        if key not in self.params:
            return missing
        value = self.params[key]
        return f"{value:.4g}" if isinstance(value, float) else str(value)


@dataclass
class StudyReport:
    """A study read back from its folder: every trial, the best one and the parameters' importances."""

    out: Path
    trials: list[TrialRow]
    importances: dict[str, float]

    @property
    def best(self) -> TrialRow | None:
        """The complete trial with the highest score."""
        done = [t for t in self.trials if t.state == "COMPLETE" and t.value is not None]
        return max(done, key=lambda t: t.value or 0.0) if done else None

    @property
    def baseline(self) -> TrialRow | None:
        """The trial of the base config's own values, if the study ran one."""
        return next((t for t in self.trials if t.baseline), None)

    def ranked(self) -> list[TrialRow]:
        """Complete trials best first, then the others by their last validation score."""
        return sorted(
            self.trials,
            key=lambda t: (t.state != "COMPLETE", -(t.value if t.value is not None else t.last_score or 0.0)),
        )


def is_study_dir(path: str | Path) -> bool:
    """True when ``path`` is a ``saltseg search`` folder."""
    return (Path(path) / STUDY_FILE).is_file()


def read_study(out: str | Path) -> StudyReport:
    """Read the study of a search folder (no heartbeat: reading never fails a running trial)."""
    import optuna

    out = Path(out)
    if not is_study_dir(out):
        raise SaltsegError(f"no search study ({STUDY_FILE}) in this folder", out)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{(out / STUDY_FILE).resolve()}")
    study = optuna.load_study(study_name=STUDY_NAME, storage=storage)
    rows = []
    trials = study.get_trials(deepcopy=False)
    for t in trials:
        inter = t.intermediate_values
        rows.append(
            TrialRow(
                number=t.number,
                state=t.state.name,
                value=t.value,
                last_score=inter[max(inter)] if inter else None,
                epochs=t.user_attrs.get("epochs", (max(inter) + 1) if inter else None),
                minutes=t.user_attrs.get("minutes"),
                params=dict(t.params),
                run=t.user_attrs.get("run"),
                baseline=bool(t.user_attrs.get("baseline", False)),
            )
        )
    importances: dict[str, float] = {}
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    varied = {k for t in complete for k in t.params if len({str(c.params.get(k)) for c in complete}) > 1}
    if len(complete) >= 2 and varied:
        try:
            importances = dict(optuna.importance.get_param_importances(study, params=sorted(varied)))
        except (RuntimeError, ValueError):  # too few distinct values for the evaluator
            importances = {}
    return StudyReport(out, rows, importances)
