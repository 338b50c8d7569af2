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


def conv3x3_stem(encoder: nn.Module) -> None:
    """Replace the encoder's first convolution (``conv1``, 7x7 in ResNets) by a 3x3 one of the same input and
    output channels and stride (initialised afresh).

    Raises:
        ConfigError: If the encoder has no ``conv1`` convolution.
    """
    conv = getattr(encoder, "conv1", None)
    if conv is None:  # SENet-style encoders keep it in layer0
        conv = getattr(getattr(encoder, "layer0", None), "conv1", None)
        parent = getattr(encoder, "layer0", None)
    else:
        parent = encoder
    if not isinstance(conv, nn.Conv2d) or parent is None:
        raise ConfigError(f"stem: conv3x3: encoder {type(encoder).__name__} has no first convolution conv1")
    parent.conv1 = nn.Conv2d(
        conv.in_channels, conv.out_channels, 3, stride=conv.stride, padding=1, bias=False
    )


def add_encoder_attention(encoder: nn.Module, name: str, channels: list[int]) -> int:
    """Append an attention module (scSE) to each ResNet-style stage ``layer1``..``layer4`` the encoder uses,
    so that the next stage sees the re-weighted features; returns how many stages got one.

    Raises:
        ConfigError: If the encoder has no such stages.
    """
    from saltseg.models.blocks import attention

    wrapped = 0
    for k in range(1, 5):
        stage = getattr(encoder, f"layer{k}", None)
        if stage is None or k + 1 >= len(channels):
            continue
        setattr(encoder, f"layer{k}", nn.Sequential(stage, attention(name, channels[k + 1])))
        wrapped += 1
    if not wrapped:
        raise ConfigError(
            f"encoder_attention: encoder {type(encoder).__name__} has no ResNet-style stages layer1-layer4 "
            "(it works with resnet*, resnext*, se_resnet*, se_resnext* encoders)"
        )
    return wrapped


def build_encoder(config: ModelConfig) -> nn.Module:
    """Build the smp encoder named by ``config.encoder`` with depth ``len(config.decoder_channels)``.

    The encoder takes ``len(config.channels)`` input channels, loses its first max-pool if
    ``config.drop_first_maxpool``, is initialised from ``config.encoder_weights`` if given, then gets the
    3x3 stem (``config.stem``) and the attention inside its stages (``config.encoder_attention``).

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
    if config.encoder_weights is not None:  # before the changes below, which the weights file lacks
        load_weights(encoder, config.encoder_weights, in_channels=config.in_channels)
    if config.stem == "conv3x3":
        conv3x3_stem(encoder)
    if config.encoder_attention is not None:
        add_encoder_attention(encoder, config.encoder_attention, list(encoder.out_channels))
    return encoder
