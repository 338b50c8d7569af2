"""timm image classifier predicting whether a tile contains salt (empty / non-empty)."""

from __future__ import annotations

import timm
import torch
from torch import nn

from saltseg.errors import ConfigError
from saltseg.models.config import ModelConfig
from saltseg.models.registry import register_model
from saltseg.models.weights import load_weights


class SaltClassifier(nn.Module):
    """A timm model (``pretrained=False``) with one output logit: the tile contains salt.

    ``config.encoder`` is the timm model name, ``config.dropout`` its ``drop_rate``;
    ``config.encoder_weights`` (if given) initialises the whole model except its classifier
    layer when that is absent from the file.

    Args:
        config: The model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        try:
            self.model = timm.create_model(
                config.encoder,
                pretrained=False,
                num_classes=1,
                in_chans=config.in_channels,
                drop_rate=config.dropout,
            )
        except RuntimeError as exc:
            raise ConfigError(f"unknown timm model {config.encoder!r} for the classifier: {exc}") from exc
        if config.encoder_weights is not None:
            head = self.model.get_classifier()
            head_names = tuple(
                f"{name}." for name, module in self.model.named_modules() if module is head and name
            )
            load_weights(
                self.model, config.encoder_weights, ignore_missing=head_names, in_channels=config.in_channels
            )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map adapted input (B, C, S, S) to ``{"salt": (B,) logits}``."""
        return {"salt": self.model(x).flatten()}


@register_model("classifier")
def build_classifier(config: ModelConfig) -> nn.Module:
    """timm classifier for empty / non-empty tiles."""
    return SaltClassifier(config)
