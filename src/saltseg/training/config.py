"""Experiment configs: one YAML file validated into :class:`ExperimentConfig`.

An unknown key or a wrong type is a :class:`~saltseg.errors.ConfigError` naming the file and the key.
Any key can be overridden with ``dotted.path=value`` (the value is parsed as YAML), for example
``stages.0.epochs=3`` or ``model.encoder=resnet18``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, Field, ValidationError, field_validator, model_validator

from saltseg.augment.config import AugmentConfig
from saltseg.errors import ConfigError
from saltseg.losses.config import LossConfig
from saltseg.models.config import ModelConfig
from saltseg.utils.validation import ConfigSection


class _Strict(ConfigSection):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Strict):
    """How tiles are split and read.

    Attributes:
        folds: Number of folds K.
        stratify: Fold stratification (depth rank mod K, coverage class, or both).
        fold_seed: Seed of the fold assignment (tie-breaking).
        cache: Hold all tiles in memory (fast); False reads PNGs lazily (datasets larger than memory).
        pseudo_labels: Folder of pseudo-labelled tiles (``saltseg pseudo``), never used for validation.
        pseudo_mode: ``mix`` adds them to every stage's training tiles; ``pretrain`` trains the
            ``pretrain_stages`` on labelled + pseudo tiles and the later stages on labelled tiles only.
        pretrain_stages: Number of leading stages that see pseudo-labels in ``pretrain`` mode.
        skip_missing: Train on the complete tiles when some lack their image or mask (else an error).
        small_salt_weight: Draw the training tiles with (0, 10%] salt this many times as often as the
            others (with replacement, epochs of the same length); 1 = a plain shuffle.
    """

    folds: int = Field(5, ge=2)
    stratify: Literal["depth", "coverage", "depth_coverage", "random"] = "depth"
    fold_seed: int = Field(0, ge=0, le=2**32 - 1)
    cache: bool = True
    pseudo_labels: str | None = None
    pseudo_mode: Literal["mix", "pretrain"] = "mix"
    pretrain_stages: int = Field(1, ge=1)
    skip_missing: bool = False
    small_salt_weight: float = Field(1.0, gt=0, le=100)


class OptimizerConfig(_Strict):
    """Optimiser of a stage."""

    name: Literal["sgd", "rmsprop", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False


class ScheduleConfig(_Strict):
    """Learning-rate schedule of a stage.

    Attributes:
        name: ``constant``; ``cosine`` (one cycle down to ``min_lr``); ``cosine_restarts`` (``cycles``
            equal cycles, warm restarts); ``cyclic`` (triangular between ``min_lr`` and ``lr``,
            ``cycles`` cycles); ``plateau`` (multiply by ``factor`` when the validation score stalls
            ``patience`` epochs); ``noam`` (linear warm-up for ``warmup_epochs`` then 1/sqrt decay).
        cycles: Cycles of ``cosine_restarts`` / ``cyclic``; snapshots keep the best epoch of each.
        min_lr: Lowest learning rate of cosine and cyclic schedules.
        warmup_epochs: Linear warm-up (any schedule except plateau).
    """

    name: Literal["constant", "cosine", "cosine_restarts", "cyclic", "plateau", "noam"] = "cosine"
    cycles: int = Field(1, ge=1)
    min_lr: float = Field(1e-5, ge=0)
    warmup_epochs: float = Field(0.0, ge=0)
    factor: float = Field(0.5, gt=0, lt=1)
    patience: int = Field(3, ge=1)


class StageConfig(_Strict):
    """One stage of training: a loss, an optimiser, a schedule and a length."""

    name: str = "stage"
    epochs: int = Field(10, ge=1)
    loss: LossConfig = Field(default_factory=LossConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    snapshots: bool = False


class SWAConfig(_Strict):
    """Stochastic weight averaging over chosen checkpoints, then BatchNorm statistics recomputed.

    Attributes:
        enabled: Build ``swa.safetensors`` at the end of each fold.
        members: ``snapshots`` averages the fold's snapshots; ``last`` averages the last ``k``
            epoch-end weights of the final stage.
        k: Epochs averaged with ``members: last``.
        replace: Use the SWA model as the fold's only member (else it is added to the snapshots).
    """

    enabled: bool = False
    members: Literal["snapshots", "last"] = "last"
    k: int = Field(5, ge=2)
    replace: bool = True


class PipelineConfig(_Strict):
    """What ``saltseg pipeline`` does around the folds; its command-line flags override these.

    Attributes:
        minutes: Budget of the whole pipeline: each fold's epochs are scaled to fit its share
            (``null``: the stages' epochs as written).
        pseudo_rounds: Rounds after the first, each trained with the calibrated, confident test
            predictions of the best round so far (they need the test tiles).
        pseudo_confidence: Share of a tile's pixels that must lie below 0.2 or above 0.8.
        calibrate: Fit a temperature on the out-of-fold predictions before the confidence rule.
        distill: Then train one student on the labelled tiles plus every test tile (soft targets).
        refit: Then train the final round's config on every labelled tile (no tile held out) and
            predict the submission with that one model and the round's tuned post-processing.
        test_members: ``best``: the test tiles predicted with each fold's best model; ``all``: with
            every member (snapshots too).
    """

    minutes: float | None = Field(None, gt=0)
    pseudo_rounds: int = Field(0, ge=0)
    pseudo_confidence: float = Field(0.97, ge=0.0, le=1.0)
    calibrate: bool = True
    distill: bool = False
    refit: bool = False
    test_members: Literal["best", "all"] = "best"


PRECISIONS = (
    "auto",
    "32",
    "32-true",
    "16",
    "16-mixed",
    "16-true",
    "bf16",
    "bf16-mixed",
    "bf16-true",
    "64",
    "64-true",
)
"""``train.precision`` values (Lightning's, plus ``auto``)."""

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
"""``train.accelerator`` values."""


class TrainConfig(_Strict):
    """Engine settings (Lightning Trainer) and guards.

    Attributes:
        batch_size: Tiles per step (per device).
        num_workers: DataLoader worker processes; ``auto`` = none when training on the CPU (they would
            take its cores from the model), up to 8 when training on a GPU.
        accelerator: Lightning accelerator (``auto``, ``cpu``, ``gpu``...).
        devices: Lightning devices (``auto``, a count, or a list).
        strategy: Lightning strategy (``auto``, ``ddp``, ``ddp_spawn``...), for several GPUs or nodes.
        num_nodes: Nodes of a multi-node run (torchrun, SLURM).
        precision: ``auto`` = bf16-mixed on CPUs with bf16 instructions (AMX / AVX-512 BF16) and on CUDA
            (16-mixed on GPUs without bf16), 32-true on other CPUs; or any Lightning precision.
        channels_last: Channels-last memory format (faster convolutions on CPU and tensor cores).
        compile: torch.compile the model for training (``nn.Module.compile``: the first steps compile).
        val_tta: Validate with horizontal-flip TTA.
        val_every: Validate a stage only after its second epoch, every ``val_every``-th epoch after it,
            every epoch of its last ``val_dense_tail`` and its last epoch (1: after every epoch). With
            flip TTA a validation of 1067 tiles costs a third of an epoch of ``cpu_pipeline`` on a 2-core
            CPU; a budget turns the time saved into epochs. Early stopping and the stall guard then count
            validations, and a killed stage resumes from its last validated epoch.
        val_dense_tail: With ``val_every`` > 1: the share of a stage's last epochs that all validate
            (where a cosine schedule's best epoch lies).
        init_from: Start every fold from a whole saltseg model instead of random weights (the 1st place's
            "pretrain once on pseudo-labels, then fine-tune every fold"): a ``.safetensors`` checkpoint,
            a fold folder (its best member) or a run folder (the fold of the same index, or its only
            fold). The model config must match it tensor for tensor.
        predict_backend: Inference backend of the out-of-fold predictions after each fold
            (:mod:`saltseg.backends`): ``torch`` (the default: no export per fold), ``auto``,
            ``onnxruntime`` or ``openvino``.
        early_stopping: Stop a stage when the validation score has not improved for this many epochs.
        stall_epochs: Guard: stop the whole run, saying why, when the validation score has not
            improved for this many epochs.
        max_minutes: Wall-clock budget of one fold, spread over the stages by their epochs.
        rescale_epochs: With ``max_minutes``: scale the stage epochs of each fold after the first so that
            it fills the budget at the seconds per epoch the run's finished folds measured (set by a
            budget fit: a machine that slows down mid-run keeps each fold's schedule whole instead of
            having it cut by the cap), and each stage re-fits its own epochs once, from the wall time
            of its second epoch, rebuilding its LR schedule over the new length (the budget fit's few
            timed steps can be 20-30% off). Single-process runs only.
        limit_train_batches: Fraction or count of training batches per epoch (quick trials).
    """

    batch_size: int = Field(32, ge=1)
    num_workers: int | Literal["auto"] = "auto"
    accelerator: str = "auto"
    devices: int | str | list[int] = "auto"
    strategy: str = "auto"
    num_nodes: int = Field(1, ge=1)
    precision: str = "auto"
    channels_last: bool = True
    compile: bool = False
    val_tta: bool = True
    val_every: int = Field(1, ge=1)
    val_dense_tail: float = Field(0.3, ge=0.0, le=1.0)
    predict_backend: Literal["auto", "torch", "onnxruntime", "openvino"] = "torch"
    init_from: str | None = None
    early_stopping: int | None = Field(None, ge=1)
    stall_epochs: int | None = Field(None, ge=1)
    max_minutes: float | None = Field(None, gt=0)
    rescale_epochs: bool = False
    limit_train_batches: float | int | None = None
    log_every_n_steps: int = Field(10, ge=1)

    def validates(self, epoch: int, epochs: int) -> bool:
        """Whether a stage of ``epochs`` epochs validates after its epoch ``epoch`` (0-based), by
        ``val_every`` and ``val_dense_tail``."""
        if self.val_every == 1 or epoch >= epochs - max(1, math.ceil(self.val_dense_tail * epochs)):
            return True
        return epoch >= 1 and (epoch - 1) % self.val_every == 0

    @field_validator("precision", mode="before")
    @classmethod
    def _precision_as_text(cls, value: object) -> object:
        # ``train.precision=32`` / ``precision: 16`` arrive as YAML integers; Lightning takes "32", "16"...
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @field_validator("precision")
    @classmethod
    def _known_precision(cls, value: str) -> str:
        if value not in PRECISIONS:
            raise ValueError(f"unknown precision; choose from {', '.join(PRECISIONS)}")
        return value

    @field_validator("accelerator")
    @classmethod
    def _known_accelerator(cls, value: str) -> str:
        if value not in ACCELERATORS:
            raise ValueError(f"unknown accelerator; choose from {', '.join(ACCELERATORS)}")
        return value

    @field_validator("limit_train_batches")
    @classmethod
    def _positive_limit(cls, value: float | int | None) -> float | int | None:
        if value is not None and (value <= 0 or (isinstance(value, float) and value > 1.0)):
            raise ValueError("a fraction in (0, 1] or a positive number of batches")
        return value

    @field_validator("num_workers", mode="before")
    @classmethod
    def _workers(cls, value: object) -> object:
        if value == "auto":
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError("should be a worker count (0, 1, 2...) or 'auto'")
        return value


class ExperimentConfig(_Strict):
    """A whole experiment: data split, model, augmentations, stages, SWA, engine and pipeline settings."""

    name: str = "experiment"
    seed: int = Field(0, ge=0, le=2**32 - 1)  # numpy seeds: 0 .. 2^32 - 1
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig()])
    swa: SWAConfig = Field(default_factory=SWAConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)

    @model_validator(mode="after")
    def _check(self) -> ExperimentConfig:
        if not self.stages:
            raise ValueError("stages: at least one stage is needed")
        for i, stage in enumerate(self.stages):
            if self.train.val_every > 1 and stage.schedule.name == "plateau":
                raise ValueError(
                    f"stages.{i}.schedule 'plateau' follows the validation score after every epoch, but "
                    f"train.val_every is {self.train.val_every}; give train.val_every: 1 or another schedule"
                )
            if self.train.val_every > 1 and stage.snapshots:
                raise ValueError(
                    f"stages.{i}.snapshots keeps the best validated epoch of each LR cycle, but "
                    f"train.val_every is {self.train.val_every} (a cycle could end unvalidated); give "
                    "train.val_every: 1 or no snapshots"
                )
            if self.model.image_head and not self.model.deep_supervision:
                ds = stage.loss.deep_supervision
                if ds is None or ds.salt <= 0 or ds.nonempty > 0:
                    raise ValueError(
                        f"stages.{i}.loss.deep_supervision must train the image head alone "
                        "(model.image_head: true): give {final: 1.0, salt: 0.05, nonempty: 0.0}"
                    )
            if self.model.deep_supervision and stage.loss.deep_supervision is None:
                # untrained heads would gate the masks at inference, and stop DDP (unused parameters)
                raise ValueError(
                    f"stages.{i}.loss.deep_supervision is not set, but the model has deep-supervision "
                    "heads (model.deep_supervision: true) that this stage would leave untrained; give "
                    "their weights ({} for the defaults) or set model.deep_supervision: false"
                )
        return self


def format_validation_error(exc: ValidationError) -> str:
    """A pydantic error as one line: each wrong key named with its problem and the value given."""
    parts = []
    for err in exc.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parts.append(f"unknown key '{loc}'")
        elif not err["loc"]:  # a check across sections names its keys itself
            parts.append(err["msg"].removeprefix("Value error, "))
        else:
            parts.append(f"'{loc}': {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (values parsed as YAML; list indices allowed)."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        key, value = item.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        except (ValueError, KeyError, AttributeError, TypeError) as exc:  # PyYAML's constructors: 2001-13-45
            raise ConfigError(f"override {item!r}: the value is not valid YAML ({exc})") from None
        node: Any = raw
        parts = key.strip().split(".")
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            if isinstance(node, list):
                try:
                    idx = int(part)
                    node[idx]
                except (ValueError, IndexError):
                    raise ConfigError(
                        f"override {key!r}: {part!r} is not an index of a list of {len(node)}"
                    ) from None
                if last:
                    node[idx] = parsed
                else:
                    node = node[idx]
            else:
                if not isinstance(node, dict):
                    where = ".".join(parts[:i])
                    raise ConfigError(f"override {key!r}: {where!r} is a value, not a section with keys")
                if last:
                    node[part] = parsed
                else:
                    if part not in node or node[part] is None:
                        node[part] = {}
                    node = node[part]
    return raw


def parse_config(raw: dict[str, Any], source: str | Path = "config") -> ExperimentConfig:
    """Validate a raw dict into an :class:`ExperimentConfig`, raising a one-line ConfigError."""
    try:
        cfg = ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), source) from None
    from saltseg.models.registry import list_models

    if cfg.model.arch not in list_models():
        raise ConfigError(
            f"'model.arch': unknown architecture {cfg.model.arch!r} (known: {', '.join(list_models())})",
            source,
        )
    return cfg


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses a key given twice in one mapping (YAML keeps the last silently)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen: set = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} appears twice", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


@dataclass(frozen=True)
class BuiltinConfig:
    """A config shipped inside the package (``saltseg/configs/NAME.yaml``)."""

    name: str
    path: Path
    summary: str  # the first sentence of the file's header comment
    score: str  # its ``# score:`` line: what it reached and where

    @classmethod
    def read(cls, path: Path) -> BuiltinConfig:
        """Read the header comment of a shipped config."""
        header = []
        for line in path.read_text().splitlines():
            if not line.startswith("#"):
                break
            header.append(line.lstrip("#").strip())
        score = next((h.removeprefix("score:").strip() for h in header if h.startswith("score:")), "-")
        text = " ".join(h for h in header if not h.startswith("score:"))
        first = re.match(r"(.+?\.)(?=\s+[A-Z`]|$)", text)
        return cls(path.stem, path, first.group(1) if first else text, score)


def builtin_configs() -> dict[str, BuiltinConfig]:
    """The configs shipped with saltseg, by name (``cpu_fast``, ``first_place``...)."""
    folder = Path(str(resources.files("saltseg") / "configs"))
    return {p.stem: BuiltinConfig.read(p) for p in sorted(folder.rglob("*.yaml"))}


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file path: an existing file wins, else a shipped config of that name.

    Raises:
        ConfigError: Neither a file nor a shipped config; the message lists the shipped names.
    """
    path = Path(name_or_path)
    if path.exists():
        return path
    shipped = builtin_configs()
    key = path.stem if path.suffix in (".yaml", ".yml") and path.parent == Path() else str(name_or_path)
    if key in shipped:
        return shipped[key].path
    raise ConfigError(
        f"config file not found, and no shipped config has that name (shipped: {', '.join(shipped)})",
        path,
    )


def read_yaml(path: Path, what: str = "config") -> Any:
    """Parse a YAML file safely, refusing a key given twice; one :class:`ConfigError` per problem.

    Args:
        path: The file.
        what: What the file is, for the messages (``config``, ``search space``).
    """
    try:
        return yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader subclass
    except FileNotFoundError:
        raise ConfigError(f"{what} file not found", path) from None
    except IsADirectoryError:
        raise ConfigError(f"a {what} must be a YAML file, not a folder", path) from None
    except UnicodeDecodeError:
        raise ConfigError("not a text (YAML) file", path) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None)
        detail = f": {problem}" if problem and "appears twice" in str(problem) else ""
        raise ConfigError(f"not valid YAML{where}{detail}", path) from None
    except (ValueError, KeyError, AttributeError, TypeError) as exc:  # PyYAML's constructors: !!int x
        raise ConfigError(f"not valid YAML (a value PyYAML cannot read: {exc})", path) from None


def read_config_dict(path: str | Path) -> tuple[dict[str, Any], Path]:
    """The raw mapping of a config file (or shipped name) and its resolved path, before validation.

    Raises:
        ConfigError: Missing, a folder, binary, invalid YAML, a key given twice, or not a mapping.
    """
    path = resolve_config_path(path)
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ConfigError("the top level must be a mapping of keys", path)
    raw.setdefault("name", path.stem)
    return raw, path


def load_config(path: str | Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """Read, override and validate a YAML experiment config (a file, or the name of a shipped one)."""
    raw, path = read_config_dict(path)
    return parse_config(apply_overrides(raw, overrides or []), path)


def dump_config(cfg: ExperimentConfig) -> str:
    """The resolved config as YAML (every default written out)."""
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
