"""Run, fold, ensemble and prediction folders as objects: where each file lives, and typed reads and
writes of what the stages leave there. The rest of saltseg goes through these instead of joining file
names itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from saltseg.artifacts import names
from saltseg.artifacts.postprocess import PostprocessConfig, load_postprocess
from saltseg.artifacts.probs import OutOfFold, load_probs, read_oof
from saltseg.artifacts.records import (
    EnsembleSummary,
    FoldState,
    FoldSummary,
    PredictionMeta,
    RunSummary,
    read_record,
)
from saltseg.errors import CheckpointError, DataError, SaltsegError
from saltseg.utils.io import write_json


def _fold_index(path: Path) -> int:
    m = re.fullmatch(r"fold(\d+)", path.name)
    return int(m.group(1)) if m else -1


def _summary_members(folder: Path) -> object:
    """The ``members`` entry of ``folder/summary.json`` (None when missing or unreadable): paths for a
    fold, objects for an (older) ensemble folder."""
    try:
        return json.loads((folder / names.SUMMARY_FILE).read_text()).get("members")
    except (OSError, ValueError, AttributeError):
        return None


def read_data_dir(folder: Path) -> Path | None:
    """The data folder recorded in ``folder/data.json`` (None when there is none or it is unreadable)."""
    try:
        d = json.loads((folder / names.DATA_FILE).read_text())
        return Path(d["data_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_data_dir(folder: Path, data_dir: str | Path) -> None:
    """Record the (resolved) data folder a run or ensemble was made from."""
    write_json(folder / names.DATA_FILE, {"data_dir": str(Path(data_dir).resolve())})


@dataclass(frozen=True)
class FoldDir:
    """One ``fold{k}`` folder of a run."""

    path: Path

    @property
    def index(self) -> int:
        return _fold_index(self.path)

    @property
    def state_file(self) -> Path:
        return self.path / names.STATE_FILE

    @property
    def summary_file(self) -> Path:
        return self.path / names.SUMMARY_FILE

    @property
    def oof_file(self) -> Path:
        return self.path / names.OOF_FILE

    @property
    def best_file(self) -> Path:
        return self.path / names.BEST_FILE

    @property
    def snapshot_dir(self) -> Path:
        return self.path / names.SNAPSHOT_DIR

    @property
    def swa_dir(self) -> Path:
        return self.path / names.SWA_DIR

    @property
    def swa_file(self) -> Path:
        return self.path / names.SWA_FILE

    @property
    def logs_dir(self) -> Path:
        return self.path / names.LOGS_DIR

    def stage_dir(self, stage: int) -> Path:
        return self.path / names.stage_dir_name(stage)

    def stage_end(self, stage: int) -> Path:
        """The model at the end of stage ``stage``."""
        return self.stage_dir(stage) / names.END_FILE

    def stage_checkpoint(self, stage: int) -> Path:
        """Lightning's checkpoint of stage ``stage`` while it runs (for ``--resume``)."""
        return self.stage_dir(stage) / names.LAST_CKPT_FILE

    def snapshots(self) -> list[Path]:
        # not the hidden temporaries of a write that was killed (``.s0_c1.safetensors.xxxxxxxx.safetensors``)
        return sorted(p for p in self.snapshot_dir.glob("*.safetensors") if not p.name.startswith("."))

    def read_state(self) -> FoldState:
        """The fold's state (a fresh one when it has none yet)."""
        return read_record(FoldState, self.state_file) if self.state_file.exists() else FoldState()

    def write_state(self, state: FoldState) -> None:
        state.write(self.state_file)

    def read_summary(self) -> FoldSummary | None:
        """The finished fold's summary, None while it has none."""
        return read_record(FoldSummary, self.summary_file) if self.summary_file.exists() else None

    def write_summary(self, summary: FoldSummary) -> None:
        summary.write(self.summary_file)

    @staticmethod
    def looks_like(path: Path) -> bool:
        """A folder that holds one fold's models."""
        if (path / names.BEST_FILE).is_file() or (path / names.SNAPSHOT_DIR).is_dir():
            return True
        members = _summary_members(path)  # a fold's are paths, an ensemble's objects; a run has none
        return isinstance(members, list) and all(isinstance(m, str) for m in members)

    @staticmethod
    def is_refit(path: Path) -> bool:
        """A fold folder trained on every tile (``saltseg refit``): its ``refit.json``, or while it trains
        a ``state.json`` outside any run folder."""
        if (path / names.REFIT_FILE).is_file():
            return True
        return (path / names.STATE_FILE).is_file() and not RunDir.looks_like(path.parent)

    def members(self, best_only: bool = False) -> list[Path]:
        """The fold's models (none for a fold that failed: its weights diverged); with ``best_only`` the
        member that scored best on the fold's validation tiles."""
        summary = self.read_summary()
        if summary is not None:
            if summary.status == "failed":
                return []
            if summary.members:
                chosen = [summary.best_member()] if best_only else summary.members
                return [self.path / str(m) for m in chosen]
        if self.best_file.exists():
            return [self.best_file]
        return self.snapshots()


@dataclass(frozen=True)
class _TunedFolder:
    """What run and ensemble folders share: a summary, the data folder they came from, out-of-fold
    predictions and, once tuned, their post-processing."""

    path: Path

    @property
    def summary_file(self) -> Path:
        return self.path / names.SUMMARY_FILE

    @property
    def postprocess_file(self) -> Path:
        return self.path / names.POSTPROCESS_FILE

    def data_dir(self) -> Path | None:
        return read_data_dir(self.path)

    def write_data_dir(self, data_dir: str | Path) -> None:
        write_data_dir(self.path, data_dir)

    def postprocess(self) -> PostprocessConfig | None:
        """The tuned post-processing, None when the folder is not tuned."""
        return load_postprocess(self.postprocess_file) if self.postprocess_file.exists() else None


@dataclass(frozen=True)
class RunDir(_TunedFolder):
    """A training run folder (``saltseg train``)."""

    @property
    def config_file(self) -> Path:
        return self.path / names.CONFIG_FILE

    @property
    def folds_file(self) -> Path:
        return self.path / names.FOLDS_FILE

    @property
    def report_file(self) -> Path:
        return self.path / names.REPORT_FILE

    @staticmethod
    def looks_like(path: Path) -> bool:
        """``config.yaml`` beside ``fold*/`` folders, ``data.json``, ``folds.csv`` or ``summary.json``."""
        return (path / names.CONFIG_FILE).is_file() and (
            any((path / f).is_file() for f in (names.SUMMARY_FILE, names.DATA_FILE, names.FOLDS_FILE))
            or any(p.is_dir() for p in path.glob("fold*"))
        )

    def fold(self, k: int) -> FoldDir:
        return FoldDir(self.path / f"fold{k}")

    def folds(self) -> list[FoldDir]:
        """The fold folders present, by index."""
        found = [FoldDir(p) for p in self.path.glob("fold*") if p.is_dir() and _fold_index(p) >= 0]
        return sorted(found, key=lambda f: f.index)

    def read_summary(self) -> RunSummary | None:
        return read_record(RunSummary, self.summary_file) if self.summary_file.exists() else None

    def fold_summaries(self) -> list[FoldSummary]:
        """Summaries of the finished folds, by index."""
        return [s for s in (f.read_summary() for f in self.folds()) if s is not None]

    def oof_files(self) -> list[Path]:
        return [f.oof_file for f in self.folds() if f.oof_file.exists()]

    def load_oof(self) -> OutOfFold:
        """Out-of-fold predictions of every finished fold, with the fold of each tile."""
        files = [f for f in self.folds() if f.oof_file.exists()]
        if not files:
            raise DataError("no out-of-fold predictions (fold*/oof.npz); train the folds first", self.path)
        return read_oof([f.oof_file for f in files], [f.index for f in files])

    def members(self, best_only: bool = False) -> list[tuple[Path, float]]:
        """Every trained fold's members, each fold weighing the same (failed folds are skipped)."""
        per_fold = [m for m in (f.members(best_only) for f in self.folds()) if m]
        return [(p, 1.0 / (len(per_fold) * len(files))) for files in per_fold for p in files]


@dataclass(frozen=True)
class EnsembleDir(_TunedFolder):
    """An ensemble folder (``saltseg ensemble``)."""

    @property
    def spec_file(self) -> Path:
        return self.path / names.ENSEMBLE_FILE

    @property
    def oof_file(self) -> Path:
        return self.path / names.OOF_FILE

    @staticmethod
    def looks_like(path: Path) -> bool:
        """``ensemble.json``, or (older folders) ``summary.json`` with a list of member runs."""
        if (path / names.CONFIG_FILE).exists():
            return False
        if (path / names.ENSEMBLE_FILE).is_file():
            return True
        members = _summary_members(path)
        return bool(members) and isinstance(members, list) and all(isinstance(m, dict) for m in members)

    def read_spec(self) -> EnsembleSummary:
        """Members and weights (from ``ensemble.json``, else ``summary.json``)."""
        spec = self.spec_file if self.spec_file.exists() else self.summary_file
        try:
            return read_record(EnsembleSummary, spec)
        except DataError as exc:
            raise CheckpointError(exc.message, spec) from None

    def write(self, summary: EnsembleSummary) -> None:
        summary.write(self.spec_file)
        summary.write(self.summary_file)

    def load_oof(self) -> OutOfFold:
        if not self.oof_file.exists():
            raise DataError("no out-of-fold predictions (oof.npz)", self.path)
        return read_oof([self.oof_file])


def open_oof_source(path: str | Path) -> RunDir | EnsembleDir:
    """The run or ensemble folder at ``path`` (one clear error for anything else)."""
    path = Path(path)
    lone_oof = (path / names.OOF_FILE).is_file() and not RunDir.looks_like(path)
    if EnsembleDir.looks_like(path) or lone_oof:
        return EnsembleDir(path)
    if RunDir.looks_like(path) or any(path.glob("fold*/" + names.OOF_FILE)):
        return RunDir(path)
    raise DataError("no out-of-fold predictions (fold*/oof.npz or oof.npz); train the folds first", path)


@dataclass(frozen=True)
class PredictionDir:
    """A prediction folder (``saltseg predict``)."""

    path: Path

    @property
    def masks_file(self) -> Path:
        return self.path / names.PRED_MASKS_FILE

    @property
    def meta_file(self) -> Path:
        return self.path / names.META_FILE

    @property
    def probs_dir(self) -> Path:
        return self.path / names.PROBS_DIR

    def chunk_files(self) -> list[Path]:
        return sorted(self.probs_dir.glob(names.CHUNK_PATTERN))

    def refuse_foreign(self) -> None:
        """Refuse a folder whose ``masks.csv``, ``meta.json`` or ``probs/`` saltseg predict did not write
        (an earlier prediction, even one killed before its ``meta.json``, may be replaced)."""
        from saltseg.submission import is_submission_csv

        if not self.path.is_dir():
            return  # missing (created), or a file (refused by the caller)
        foreign = []
        if self.meta_file.exists():
            try:
                self.read_meta()
            except SaltsegError:
                foreign.append(self.meta_file.name)
        if self.masks_file.exists() and not is_submission_csv(self.masks_file):
            foreign.append(self.masks_file.name)
        probs = self.probs_dir
        if probs.exists() and (
            not probs.is_dir() or any(not p.match(names.CHUNK_PATTERN) for p in probs.iterdir())
        ):
            foreign.append(probs.name)
        if foreign:
            raise DataError(
                f"holds {', '.join(foreign)} that saltseg predict did not write; it is left untouched: "
                "choose a new or empty --out",
                self.path,
            )

    def read_meta(self) -> PredictionMeta:
        return read_record(PredictionMeta, self.meta_file)

    def load_probs(self) -> dict:
        """All probabilities: ``ids``, ``probs`` (float32 in [0, 1]) and ``salt`` when present."""
        import numpy as np

        files = self.chunk_files()
        if not files:
            raise DataError(
                f"no probabilities ({names.PROBS_DIR}/{names.CHUNK_PATTERN}); predict without --no-probs",
                self.path,
            )
        parts = [load_probs(f) for f in files]
        out = {
            "ids": np.concatenate([p["ids"] for p in parts]),
            "probs": np.concatenate([p["probs"] for p in parts]),
        }
        if all("salt" in p for p in parts):
            out["salt"] = np.concatenate([p["salt"] for p in parts])
        return out


@dataclass
class Member:
    """One model of an ensemble and its weight."""

    path: Path
    weight: float


def resolve_models(paths: list[str | Path], best_only: bool = False) -> list[Member]:
    """Expand MODEL arguments into weighted members.

    A ``.safetensors`` file is one model; a fold folder gives its members (snapshots or best; with
    ``best_only`` the one that scored best on its validation tiles); a run folder gives every trained
    fold's members, each fold weighing the same (failed folds are skipped); an ensemble folder gives its
    runs with their ensemble weights (runs of weight 0 are left out). Weights are normalised to sum to 1.
    """
    if not paths:
        raise CheckpointError("no model given")
    members: list[Member] = []
    for raw in paths:
        p = Path(raw)
        if p.is_file():
            members.append(Member(p, 1.0))
        elif EnsembleDir.looks_like(p):
            for m in EnsembleDir(p).read_spec().members:
                if m.weight > 0:
                    runs = resolve_models([m.run], best_only)
                    members += [Member(x.path, x.weight * m.weight) for x in runs]
        elif p.is_dir():
            if FoldDir.looks_like(p):
                files = FoldDir(p).members(best_only)
                found = [(f, 1.0 / len(files)) for f in files]
            else:
                found = RunDir(p).members(best_only)
            if not found:
                raise CheckpointError(
                    "no trained model found (expected fold*/summary.json or .safetensors; "
                    "failed folds are skipped)",
                    p,
                )
            members += [Member(f, w) for f, w in found]
        else:
            raise CheckpointError("model not found", p)
    total = sum(m.weight for m in members)
    if not members or total <= 0:
        raise CheckpointError("no model with a positive weight", paths[0])
    return [Member(m.path, m.weight / total) for m in members]


def init_checkpoint(source: str | Path, fold: int) -> Path:
    """The one checkpoint ``train.init_from: SOURCE`` starts fold ``fold`` from: a ``.safetensors`` file
    itself; a fold folder's best member; a run folder's fold of the same index, or its only fold."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise DataError("train.init_from: no such file or folder", path)
    if RunDir.looks_like(path) and not FoldDir.looks_like(path):
        folds = [f for f in RunDir(path).folds() if f.members()]
        same = [f for f in folds if f.index == fold]
        if not same and len(folds) != 1:
            have = ", ".join(str(f.index) for f in folds) or "none"
            raise DataError(
                f"train.init_from: the run has no trained fold {fold} to start fold {fold} from "
                f"(trained folds: {have}); give a fold folder or a .safetensors file",
                path,
            )
        path = (same or folds)[0].path
    members = FoldDir(path).members(best_only=True)
    if not members:
        raise DataError("train.init_from: the folder holds no trained model", path)
    return members[0]


def postprocess_folders(model: Path) -> list[Path]:
    """Folders whose ``postprocess.json`` applies to MODEL ``model``: the folder itself (or the file's)
    and its parents up to the run or ensemble folder it belongs to (nothing above that)."""
    start = model if model.is_dir() else model.parent
    chain = [start, *list(start.parents)[:3]]
    for k, d in enumerate(chain):
        if (d / names.CONFIG_FILE).is_file() or (d / names.ENSEMBLE_FILE).is_file():
            return chain[: k + 1]
    return [start]


def find_postprocess(models: list[str | Path]) -> PostprocessConfig | None:
    """The tuned settings saved with the first MODEL that has some (in its run or ensemble folder, or
    beside a checkpoint file), else None."""
    for raw in models:
        for folder in postprocess_folders(Path(raw)):
            if (folder / names.POSTPROCESS_FILE).exists():
                return load_postprocess(folder / names.POSTPROCESS_FILE)
    return None
