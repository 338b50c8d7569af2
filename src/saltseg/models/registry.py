"""Registry of architectures: ``arch`` name -> builder of the core network."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from torch import nn

from saltseg.errors import ConfigError
from saltseg.models.config import ModelConfig

if TYPE_CHECKING:
    from saltseg.models.wrapper import SaltModel

ModelBuilder = Callable[[ModelConfig], nn.Module]

MODEL_REGISTRY: dict[str, ModelBuilder] = {}
"""Architecture name -> function building the core network from a config.

A core network takes the adapter's output (B, C, input_size, input_size) and returns a dict of
outputs at that resolution: ``mask`` (and ``mask_nonempty``) maps, and/or a (B,) ``salt`` logit.
"""

_BUILTIN_MODULES = ("saltseg.models.segmentation", "saltseg.models.vanilla", "saltseg.models.classifier")


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator registering a core-network builder under ``name``.

    Raises:
        ValueError: If ``name`` is already registered to another builder.
    """

    def decorator(builder: ModelBuilder) -> ModelBuilder:
        existing = MODEL_REGISTRY.get(name)
        if existing is not None and existing is not builder:
            raise ValueError(f"model {name!r} is already registered")
        MODEL_REGISTRY[name] = builder
        return builder

    return decorator


def _load_builtin() -> None:
    for module in _BUILTIN_MODULES:
        importlib.import_module(module)


def list_models() -> list[str]:
    """Names of all registered architectures, sorted."""
    _load_builtin()
    return sorted(MODEL_REGISTRY)


def create_model(cfg: ModelConfig | Mapping[str, Any]) -> SaltModel:
    """Build the model described by ``cfg`` (a :class:`ModelConfig` or a mapping of its fields).

    Raises:
        ConfigError: If the config is invalid or names an unknown architecture or encoder.
        CheckpointError: If ``encoder_weights`` is missing or does not fit.
    """
    from saltseg.models.wrapper import SaltModel

    if not isinstance(cfg, ModelConfig):
        try:
            cfg = ModelConfig.model_validate(dict(cfg))
        except ValidationError as exc:
            raise ConfigError(f"invalid model config: {exc}") from exc
    _load_builtin()
    builder = MODEL_REGISTRY.get(cfg.arch)
    if builder is None:
        raise ConfigError(f"unknown model arch {cfg.arch!r}; known: {', '.join(sorted(MODEL_REGISTRY))}")
    return SaltModel(cfg, builder(cfg))
