"""A multi-stage recipe in one command: the winners' whole path (several models, pseudo-label pretraining,
fine-tuning every fold from it, the weighted blend, the submission) as one YAML file of steps.

A recipe (``recipes/*.yaml`` in the package, or any file) is a list of named steps, run in order into
``OUT/<step name>``:

* ``train: CONFIG`` (a shipped name or a file) with optional ``folds`` (default all), ``overrides``
  (``key=value`` strings), ``pseudo_labels: STEP`` (the pseudo-labels of an earlier ``pseudo`` step) and
  ``init_from: STEP`` (every fold starts from that earlier training: its same fold, or its fold-0 best
  model when it trained fold 0 alone); the run is tuned on its out-of-fold predictions;
* ``ensemble: [STEP, ...]`` with optional ``weights`` (default by cross-validation score), tuned too;
* ``pseudo: STEP``: that step's models predict the test tiles, calibrated by a temperature fitted on its
  out-of-fold predictions, and the confident tiles become a pseudo-label dataset;

and ``submission: STEP`` predicts the test tiles into ``OUT/submission.csv``. ``scale`` multiplies every
training stage's epochs (at least one each), so that a GPU recipe can be rehearsed on a CPU; ``resume``
continues a killed recipe (finished steps are recorded in ``OUT/recipe.json``).
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from saltseg.artifacts import names
from saltseg.artifacts.records import RecipeStepRecord, RecipeSummary, SubmissionRecord, start_step_state
from saltseg.errors import ConfigError, DataError
from saltseg.training.config import ExperimentConfig

__all__ = ["Recipe", "RecipeStep", "builtin_recipes", "load_recipe", "run_recipe"]


class RecipeStep(BaseModel):
    """One step: exactly one of ``train``, ``ensemble`` or ``pseudo``."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    train: str | None = None
    folds: list[int] | Literal["all"] = "all"
    overrides: list[str] = Field(default_factory=list)
    pseudo_labels: str | None = None
    init_from: str | None = None
    ensemble: list[str] | None = None
    weights: list[float] | None = None
    pseudo: str | None = None
    confidence: float = Field(0.97, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _one_kind(self) -> RecipeStep:
        kinds = [k for k in ("train", "ensemble", "pseudo") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError(f"step {self.name!r} needs exactly one of train, ensemble, pseudo (got {kinds})")
        if self.weights is not None and (self.ensemble is None or len(self.weights) != len(self.ensemble)):
            raise ValueError(f"step {self.name!r}: weights need an ensemble of as many steps")
        return self

    @property
    def kind(self) -> str:
        return "train" if self.train else "ensemble" if self.ensemble else "pseudo"


class Recipe(BaseModel):
    """A named list of steps and the step whose models make the submission."""

    model_config = ConfigDict(extra="forbid")

    name: str
    steps: list[RecipeStep] = Field(min_length=1)
    submission: str | None = None

    @model_validator(mode="after")
    def _references(self) -> Recipe:
        seen: dict[str, str] = {}
        for step in self.steps:
            if step.name in seen:
                raise ValueError(f"two steps are named {step.name!r}")
            refs = {
                "pseudo_labels": ([step.pseudo_labels], "pseudo"),
                "init_from": ([step.init_from], "train"),
                "ensemble": (step.ensemble or [], None),
                "pseudo": ([step.pseudo], None),
            }
            for field, (targets, kind) in refs.items():
                for ref in targets:
                    if ref is None:
                        continue
                    if ref not in seen:
                        raise ValueError(f"step {step.name!r}: {field} {ref!r} is not an earlier step")
                    if kind is not None and seen[ref] != kind:
                        raise ValueError(
                            f"step {step.name!r}: {field} {ref!r} is a {seen[ref]} step, not {kind}"
                        )
                    if kind is None and seen[ref] == "pseudo":
                        raise ValueError(f"step {step.name!r}: {field} {ref!r} has no models (a pseudo step)")
            seen[step.name] = step.kind
        if self.submission is not None and seen.get(self.submission) not in ("train", "ensemble"):
            raise ValueError(f"submission {self.submission!r} is not a train or ensemble step")
        return self


def builtin_recipes() -> dict[str, Path]:
    """The recipes shipped with saltseg, by name."""
    folder = Path(str(resources.files("saltseg") / "recipes"))
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def load_recipe(name_or_path: str | Path) -> Recipe:
    """A recipe from a file, or a shipped one by name.

    Raises:
        ConfigError: Not found (the message lists the shipped names), or invalid (the first problem).
    """
    from saltseg.training.config import read_yaml

    path = Path(name_or_path)
    if not path.exists():
        shipped = builtin_recipes()
        if str(name_or_path) not in shipped:
            raise ConfigError(
                f"recipe not found, and no shipped recipe has that name (shipped: {', '.join(shipped)})", path
            )
        path = shipped[str(name_or_path)]
    raw = read_yaml(path, "recipe")
    try:
        return Recipe.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{where + ': ' if where else ''}{err['msg']}", path) from None


def _scaled(cfg: ExperimentConfig, scale: float) -> ExperimentConfig:
    """A copy of ``cfg`` with every stage's epochs times ``scale`` (at least one)."""
    out = cfg.model_copy(deep=True)
    for stage in out.stages:
        stage.epochs = max(1, round(stage.epochs * scale))
    return out


def run_recipe(
    recipe: Recipe,
    data_dir: str | Path,
    out: str | Path,
    test_images: str | Path | None = None,
    scale: float = 1.0,
    resume: bool = False,
    progress: bool = True,
    folds: list[int] | None = None,
) -> RecipeSummary:
    """Run every step of ``recipe`` into ``out``; returns (and writes to ``out/recipe.json``) what each
    step did. ``folds`` limits every training step to those of its folds (a rehearsal on fold 0: the
    ensembles and pseudo-labels then come from fold-0 models)."""
    from saltseg.artifacts import RunDir
    from saltseg.inference.calibrate import fit_run_temperature
    from saltseg.inference.ensemble import build_ensemble
    from saltseg.inference.predict import predict_folder
    from saltseg.inference.pseudo import write_pseudo_dataset
    from saltseg.inference.tune import tune_run
    from saltseg.training.config import load_config
    from saltseg.training.train import train_run

    if not scale > 0:
        raise ConfigError(f"scale must be positive, got {scale}")
    needs_test = recipe.submission is not None or any(s.kind == "pseudo" for s in recipe.steps)
    if needs_test and test_images is None:
        raise DataError("this recipe predicts test tiles (pseudo-labels or a submission): give --test")
    data_dir, out = Path(data_dir), Path(out)
    state, resumed = start_step_state(
        RecipeSummary,
        out,
        names.RECIPE_FILE,
        resume,
        lambda: RecipeSummary(recipe=recipe.model_dump(), scale=scale, folds=folds),
        "recipe",
    )
    if resumed and (state.recipe != recipe.model_dump() or state.scale != scale or state.folds != folds):
        raise DataError(
            "the recipe folder was started with another recipe, scale or folds; use a new --out", out
        )
    started, earlier = time.time(), state.minutes

    def save() -> None:
        state.minutes = round(earlier + (time.time() - started) / 60, 2)
        state.write(out / names.RECIPE_FILE)

    save()
    folds_of: dict[str, list[int]] = {}
    for step in recipe.steps:
        done = state.steps.get(step.name)
        where = out / step.name
        if step.kind == "train":
            cfg = _scaled(load_config(step.train, step.overrides), scale)  # type: ignore[arg-type]
            step_folds = list(range(cfg.data.folds)) if step.folds == "all" else list(step.folds)
            if folds is not None:
                step_folds = [k for k in step_folds if k in folds]
                if not step_folds:
                    raise ConfigError(f"step {step.name!r} trains none of the folds {folds}")
            folds_of[step.name] = step_folds
        if done is not None:
            continue
        t0 = time.time()
        record = RecipeStepRecord(kind=step.kind)
        if step.kind == "train":
            if step.pseudo_labels:
                cfg.data.pseudo_labels = str(out / step.pseudo_labels / "pseudo")
            if step.init_from:
                source = out / step.init_from
                cfg.train.init_from = str(
                    source / "fold0" / "best.safetensors" if folds_of[step.init_from] == [0] else source
                )
            summary = train_run(
                cfg,
                data_dir,
                where,
                folds_to_run=step_folds,
                resume=resume and RunDir(where).config_file.exists(),
                progress=progress,
            )
            assert summary is not None
            _, log = tune_run(where)
            record.config, record.folds, record.oof_tuned = cfg.name, step_folds, log[-1][1]
            record.epochs = [s.epochs for s in cfg.stages]
        elif step.kind == "ensemble":
            members = [out / s for s in step.ensemble or []]
            summary = build_ensemble(members, where, step.weights if step.weights is not None else "cv")
            _, log = tune_run(where)
            record.members, record.oof_tuned = list(step.ensemble or []), log[-1][1]
        else:
            teacher = out / str(step.pseudo)
            pred = where / "test_pred"
            predict_folder([teacher], test_images, pred, best_only=False)  # type: ignore[arg-type]
            temperature = fit_run_temperature(teacher)[0]
            pseudo = write_pseudo_dataset(
                pred,
                test_images,
                where / "pseudo",
                step.confidence,
                exclude=data_dir,
                temperature=temperature,  # type: ignore[arg-type]
            )
            record.teacher, record.temperature = step.pseudo, temperature
            record.selected, record.passed = pseudo.selected, pseudo.passed
        record.minutes = round((time.time() - t0) / 60, 2)
        state.steps[step.name] = record
        save()
    if recipe.submission is not None and state.submission is None:
        csv_path = out / names.SUBMISSION_FILE
        meta = predict_folder([out / recipe.submission], test_images, out / "test_pred", csv_path=csv_path)  # type: ignore[arg-type]
        state.submission = SubmissionRecord(
            step=recipe.submission, csv=str(csv_path), tiles=meta.n_tiles, members=len(meta.models)
        )
    save()
    return state
