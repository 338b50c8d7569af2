"""``saltseg search``: hyper-parameter search over any config key, on Optuna, ending bad trials early.

A search space is a YAML mapping of dotted config keys to a distribution::

    stages.0.optimizer.lr: {log: [0.0003, 0.003]}     # float, log-uniform
    augment.shift_limit: {float: [0.0, 0.2]}          # float, uniform (optional: step: 0.05)
    stages.0.epochs: {int: [10, 40]}                  # integer (optional step)
    model.encoder: {choices: [resnet18, resnet34]}    # categorical (any YAML values)

Every trial is an ordinary run folder (``DIR/trials/trial_NNNN``) trained on one fold, its config the
base config with the sampled values as overrides. The TPE sampler proposes the values; the pruner (median
or Hyperband) is fed the fold's validation score after every epoch and stops a trial that falls behind
the others. The study lives in ``DIR/study.db`` (SQLite): a killed search resumes where it stopped
(trials whose process died are failed by a heartbeat and retried), and several processes, or machines
sharing the disk, can work on one study at once.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import lightning as L

from saltseg.artifacts import names
from saltseg.errors import ConfigError, SaltsegError
from saltseg.training.config import (
    ExperimentConfig,
    apply_overrides,
    load_config,
    parse_config,
    read_config_dict,
    read_yaml,
)
from saltseg.training.study import SEARCH_FILE, STUDY_FILE, STUDY_NAME, TRIAL_FILE, StudyReport, read_study
from saltseg.utils.io import write_json

if TYPE_CHECKING:
    import optuna

__all__ = ["PRUNERS", "ParamSpec", "PruningReporter", "SearchResult", "load_space", "run_search"]

PRUNERS = ("median", "hyperband", "none")

HEARTBEAT_S = 60
"""A running trial writes a heartbeat this often; one silent for twice as long is failed and retried."""

SpecKind = Literal["choices", "float", "log", "int"]


@dataclass(frozen=True)
class ParamSpec:
    """One searched config key and its distribution."""

    key: str
    kind: SpecKind
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        """Draw this key's value for ``trial``."""
        if self.kind == "choices":
            return trial.suggest_categorical(self.key, list(self.choices))
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1))
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.kind == "log")

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is one this distribution can draw (the baseline trial's check)."""
        if self.kind == "choices":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        assert self.low is not None and self.high is not None
        if not self.low <= value <= self.high:
            return False
        if self.kind == "int" and not float(value).is_integer():
            return False
        if self.step is None:
            return True
        steps = (value - self.low) / self.step
        return abs(steps - round(steps)) < 1e-9

    def corners(self) -> list[Any]:
        """The extreme values of the distribution (used to check the space against the config)."""
        if self.kind == "choices":
            return list(self.choices)
        assert self.low is not None and self.high is not None
        if self.kind == "int":
            return [int(self.low), int(self.high)]
        return [self.low, self.high]


def _parse_spec(key: str, raw: Any, source: Path) -> ParamSpec:
    where = f"search space key {key!r}"
    kinds = ("choices", "float", "log", "int")
    if not isinstance(raw, dict) or not (set(raw) & set(kinds)):
        raise ConfigError(
            f"{where}: expected one of {{choices: [...]}}, {{float: [low, high]}}, {{log: [low, high]}}, "
            f"{{int: [low, high]}}, got {raw!r}",
            source,
        )
    kind = next(k for k in kinds if k in raw)
    extra = set(raw) - {kind, "step"}
    if extra:
        raise ConfigError(f"{where}: unknown entries {sorted(extra)} (only {kind} and step)", source)
    value = raw[kind]
    if kind == "choices":
        if not isinstance(value, list) or not value or "step" in raw:
            raise ConfigError(f"{where}: choices must be a non-empty list, got {value!r}", source)
        return ParamSpec(key, "choices", choices=tuple(value))
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    ):
        raise ConfigError(f"{where}: {kind} needs [low, high] numbers, got {value!r}", source)
    low, high = float(value[0]), float(value[1])
    if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
        raise ConfigError(f"{where}: {kind} needs low < high, got [{value[0]}, {value[1]}]", source)
    if kind == "log" and low <= 0:
        raise ConfigError(f"{where}: log needs low > 0, got {value[0]}", source)
    if kind == "int" and not (low.is_integer() and high.is_integer()):
        raise ConfigError(f"{where}: int needs whole numbers, got [{value[0]}, {value[1]}]", source)
    step = raw.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, int | float) or step <= 0 or kind == "log":
            raise ConfigError(f"{where}: step must be a positive number (not with log), got {step!r}", source)
        step = float(step)
    return ParamSpec(key, kind, low, high, step)


def load_space(path: str | Path) -> list[ParamSpec]:
    """Read and check a search-space YAML file (see the module docstring for its format)."""
    path = Path(path)
    raw = read_yaml(path, "search space")
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("a search space is a mapping of config keys to distributions", path)
    return [_parse_spec(str(k), v, path) for k, v in raw.items()]


def trial_config(base: dict[str, Any], overrides: list[str], params: dict[str, Any], source: Path):
    """The validated config of one trial: ``base`` + command-line overrides + the sampled ``params``."""
    import copy

    raw = apply_overrides(copy.deepcopy(base), overrides)
    raw = apply_overrides(raw, [f"{k}={json.dumps(v)}" for k, v in params.items()])
    return parse_config(raw, source)


def baseline_params(config: ExperimentConfig, space: list[ParamSpec]) -> dict[str, Any] | None:
    """The base config's own values of the searched keys, or None when one lies outside the space.

    A new study runs these first, so that every other trial is compared with the config it starts from.
    """
    raw = config.model_dump(mode="json")
    params: dict[str, Any] = {}
    for spec in space:
        node: Any = raw
        for part in spec.key.split("."):
            if isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif isinstance(node, dict) and part in node:
                node = node[part]
            else:
                return None
        if not spec.contains(node):
            return None
        params[spec.key] = node
    return params


def check_space(base: dict[str, Any], overrides: list[str], space: list[ParamSpec], source: Path) -> None:
    """Fail early, naming the key, when a value of the space makes an invalid config."""
    low = {s.key: s.corners()[0] for s in space}
    for spec in space:
        for value in spec.corners():
            try:
                trial_config(base, overrides, {**low, spec.key: value}, source)
            except ConfigError as exc:
                raise ConfigError(
                    f"search space key {spec.key!r} = {value!r}: {exc.message}", source
                ) from None


class PruningReporter(L.Callback):
    """Report the validation score of every epoch to an Optuna trial; stop the trial when it is pruned.

    Steps count epochs across all stages of the fold, so the pruner compares trials at equal epochs
    (also where ``train.val_every`` validates only some of them).
    """

    def __init__(self, trial: optuna.Trial, first_step: int = 0) -> None:
        self.trial = trial
        self.first_step = first_step  # the epochs of the stages before this one
        self.epochs = first_step  # epochs trained at the last report

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Report ``val_score``; raise :class:`optuna.TrialPruned` if the pruner says so."""
        import optuna

        if trainer.sanity_checking or "val_score" not in trainer.callback_metrics:
            return
        score = float(trainer.callback_metrics["val_score"])
        step = self.first_step + trainer.current_epoch
        self.trial.report(score, step)
        self.epochs = step + 1
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"validation score {score:.4f} at epoch {self.epochs} is behind")

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.first_step += trainer.current_epoch  # the next stage's epochs count on from this one's


def _pruner(name: str) -> optuna.pruners.BasePruner:
    import optuna

    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=2, reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SaltsegError(f"unknown pruner {name!r} (choose from {', '.join(PRUNERS)})")


def _storage(out: Path) -> optuna.storages.RDBStorage:
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            f"sqlite:///{(out / STUDY_FILE).resolve()}",
            engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=HEARTBEAT_S,
            grace_period=2 * HEARTBEAT_S,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )


FINISHED_STATES = ("COMPLETE", "PRUNED")
"""Trial states that count towards ``--trials``."""


def _finished(study: optuna.Study) -> int:
    import optuna

    states = tuple(optuna.trial.TrialState[name] for name in FINISHED_STATES)
    return len(study.get_trials(deepcopy=False, states=states))


@dataclass
class SearchResult:
    """What :func:`run_search` left: the study as read back at the end."""

    report: StudyReport

    @property
    def finished(self) -> int:
        """Complete and pruned trials in the study."""
        return sum(t.state in FINISHED_STATES for t in self.report.trials)

    @property
    def pruned(self) -> int:
        """Pruned trials in the study."""
        return sum(t.state == "PRUNED" for t in self.report.trials)


def run_search(
    config_path: str | Path,
    space_path: str | Path,
    data_dir: str | Path,
    out: str | Path,
    trials: int,
    minutes: float | None = None,
    fold: int = 0,
    pruner: str = "median",
    overrides: list[str] | None = None,
    seed: int | None = None,
    progress: bool = False,
) -> SearchResult:
    """Run (or resume) a search until the study holds ``trials`` finished (complete or pruned) trials.

    Args:
        config_path: Base experiment config (YAML).
        space_path: Search space (YAML, see the module docstring).
        data_dir: Labelled dataset.
        out: Search folder: ``study.db``, ``search.json`` and ``trials/trial_NNNN`` run folders.
        trials: Finished trials the study should hold; a resumed search runs only the rest.
        minutes: Each trial's stage epochs are fitted to this many minutes of training (a short timing
            step first), with ``train.max_minutes`` as a hard cap.
        fold: The validation fold every trial trains on.
        pruner: ``median``, ``hyperband`` or ``none``.
        overrides: ``key=value`` overrides applied to the base config before the sampled values.
        seed: Seed of the TPE sampler (None: random).
        progress: Show Lightning's progress bar.
    """
    import optuna

    from saltseg.training.train import train_run

    if trials < 1:
        raise SaltsegError(f"--trials must be at least 1, got {trials}")
    if minutes is not None and minutes <= 0:
        raise SaltsegError(f"--minutes must be positive, got {minutes}")
    if pruner not in PRUNERS:
        raise SaltsegError(f"unknown pruner {pruner!r} (choose from {', '.join(PRUNERS)})")
    out = Path(out)
    overrides = list(overrides or [])
    space = load_space(space_path)
    base, config_path = read_config_dict(config_path)
    check_space(base, overrides, space, config_path)
    cfg0 = trial_config(base, overrides, {}, config_path)
    if not 0 <= fold < cfg0.data.folds:
        raise SaltsegError(f"fold {fold} does not exist (folds are 0..{cfg0.data.folds - 1})")

    out.mkdir(parents=True, exist_ok=True)
    settings = {
        "config": str(config_path.resolve()),
        "space": str(Path(space_path).resolve()),
        "data": str(Path(data_dir).resolve()),
        "fold": fold,
        "minutes": minutes,
        "pruner": pruner,
        "overrides": overrides,
    }
    previous = out / SEARCH_FILE
    if previous.exists():
        old = json.loads(previous.read_text())
        changed = [
            k
            for k in ("config", "space", "fold", "minutes", "pruner", "overrides")
            if old.get(k) != settings[k]
        ]
        if changed:
            raise SaltsegError(
                f"{out} holds a search started with other {', '.join(changed)}; resume it with the same "
                "arguments or choose another --out",
            )
    else:
        write_json(previous, {**settings, "started": time.strftime("%Y-%m-%d %H:%M:%S")})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=_storage(out),
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=min(5, max(trials // 3, 1))),
        pruner=_pruner(pruner),
        load_if_exists=True,
    )

    if not study.get_trials(deepcopy=False):
        baseline = baseline_params(cfg0, space)
        if baseline is not None:  # trial 0: the config as it is, the line every other trial is read against
            study.enqueue_trial(baseline, user_attrs={"baseline": True})

    loaded: dict[tuple[bool, bool], object] = {}

    def timing_tiles(cfg):  # the tiles the timing step uses, read once per search process
        from saltseg.training.data import LabelledTiles

        key = (cfg.data.cache, cfg.data.skip_missing)
        if key not in loaded:
            loaded[key] = LabelledTiles.load(data_dir, cache=key[0], skip_missing=key[1])
        return loaded[key]

    def objective(trial: optuna.Trial) -> float:
        params = {spec.key: spec.suggest(trial) for spec in space}
        cfg = trial_config(base, overrides, params, config_path)
        # a retry of a trial whose process died carries that trial's run folder: continue it there
        retried = trial.user_attrs.get("run")
        run_dir = out / (retried or f"trials/trial_{trial.number:04d}")
        resume = retried is not None and (run_dir / names.CONFIG_FILE).exists()
        trial.set_user_attr("run", str(run_dir.relative_to(out)))
        started = time.time()
        if resume:  # continue the trial with the config it started with (its fitted epochs)
            cfg = load_config(run_dir / names.CONFIG_FILE)
        elif minutes is not None:
            cfg = _fit(cfg, timing_tiles(cfg), minutes)
        record = {"number": trial.number, "params": params, "state": "running", "value": None}
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json(run_dir / TRIAL_FILE, record)
        reporter = PruningReporter(trial)
        try:
            summary = train_run(
                cfg,
                data_dir,
                run_dir,
                folds_to_run=[fold],
                resume=resume,
                progress=progress,
                callbacks=[reporter],
            )
        except optuna.TrialPruned:
            record.update(
                state="pruned", epochs=reporter.epochs, minutes=round((time.time() - started) / 60, 2)
            )
            trial.set_user_attr("minutes", record["minutes"])
            trial.set_user_attr("epochs", reporter.epochs)
            write_json(run_dir / TRIAL_FILE, record)
            raise
        except Exception as exc:
            record.update(state="failed", reason=str(exc))
            write_json(run_dir / TRIAL_FILE, record)
            raise
        assert summary is not None  # a search runs its trials in one process
        fold_summary = next(f for f in summary.folds if f.fold == fold)
        if fold_summary.oof_score is None:
            raise SaltsegError(f"trial {trial.number} predicted no masks (a classifier): nothing to score")
        value = fold_summary.oof_score
        record.update(
            state="complete",
            value=value,
            epochs=fold_summary.epochs,
            minutes=fold_summary.minutes,
            best_val_score=fold_summary.best_val_score,
        )
        trial.set_user_attr("minutes", fold_summary.minutes)
        trial.set_user_attr("epochs", fold_summary.epochs)
        write_json(run_dir / TRIAL_FILE, record)
        return value

    from optuna.study import MaxTrialsCallback

    states = tuple(optuna.trial.TrialState[name] for name in FINISHED_STATES)
    remaining = trials - _finished(study)
    if remaining > 0:
        study.optimize(
            objective,
            n_trials=remaining,
            callbacks=[MaxTrialsCallback(trials, states=states)],
            catch=(SaltsegError,),
        )
    return SearchResult(read_study(out))


def _fit(cfg, tiles, minutes: float):
    """Scale the trial's stage epochs to ``minutes`` (one fold's training) from a short timing step."""
    from saltseg.training.budget import fit_epochs_to_budget

    n = len(tiles.ids)
    n_val = n // cfg.data.folds
    fitted, _ = fit_epochs_to_budget(cfg, tiles, minutes, n - n_val, n_val)
    return fitted
