"""Encoders from segmentation-models-pytorch (smp names and ``tu-<timm name>``), never pretrained online."""

from __future__ import annotations

import segmentation_models_pytorch as smp
from torch import nn

from saltseg.errors import ConfigError
from saltseg.models.config import ModelConfig
from saltseg.models.weights import load_weights


def drop_first_maxpool(encoder: nn.Module) -> str:
    """Replace the encoder's first ``nn.MaxPool2d`` (in registration order) by ``nn.Identity``.

    Returns:
        The qualified name of the removed module.

    Raises:
        ConfigError: If the encoder has no max-pool.
    """
    for name, module in encoder.named_modules():
        if isinstance(module, nn.MaxPool2d):
            parent_name, _, child = name.rpartition(".")
            parent = encoder.get_submodule(parent_name) if parent_name else encoder
            setattr(parent, child, nn.Identity())
            return name
    raise ConfigError(f"drop_first_maxpool: encoder {type(encoder).__name__} has no max-pool")


def build_encoder(config: ModelConfig) -> nn.Module:
    """Build the smp encoder named by ``config.encoder`` with depth ``len(config.decoder_channels)``.

    The encoder takes ``len(config.channels)`` input channels, loses its first max-pool if
    ``config.drop_first_maxpool``, and is initialised from ``config.encoder_weights`` if given.

    Raises:
        ConfigError: If the encoder name is unknown or cannot take the requested depth.
        CheckpointError: If the weights file is missing or does not fit.
    """
    depth = len(config.decoder_channels)
    try:
        encoder = smp.encoders.get_encoder(
            config.encoder, in_channels=config.in_channels, depth=depth, weights=None
        )
    except KeyError as exc:
        raise ConfigError(
            f"unknown encoder {config.encoder!r}: use an smp encoder name (e.g. resnet34, "
            "se_resnext50_32x4d; see segmentation_models_pytorch.encoders.get_encoder_names()) "
            "or 'tu-<timm model name>'"
        ) from exc
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(f"cannot build encoder {config.encoder!r} with depth {depth}: {exc}") from exc
    if config.drop_first_maxpool:
        drop_first_maxpool(encoder)
    if config.encoder_weights is not None:
        load_weights(encoder, config.encoder_weights, in_channels=config.in_channels)
    return encoder
