"""``SaltModel``: input adapter + core network + mapping of the outputs back to the tile size."""

from __future__ import annotations

import torch
from torch import nn

from saltseg.models.adapter import InputAdapter
from saltseg.models.config import ModelConfig


class SaltModel(nn.Module):
    """A complete salt model: (B, 1, H, W) tiles in [0, 1] in, a dict of logits out.

    Args:
        config: The model configuration (kept as :attr:`config`).
        net: The core network built by the registry; it takes the adapter's output and returns a
            dict of outputs at ``input_size`` resolution.

    Attributes:
        config: The :class:`ModelConfig` the model was built from.
        adapter: The :class:`InputAdapter`.
        net: The core network.
    """

    def __init__(self, config: ModelConfig, net: nn.Module) -> None:
        super().__init__()
        self.config = config
        self.adapter = InputAdapter(config)
        self.net = net

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Predict logits.

        Args:
            x: Tiles of shape (B, 1, H, W), float in [0, 1].

        Returns:
            ``"mask"``: pixel logits (B, 1, H, W) (not for the classifier); ``"salt"``: (B,) logit that
            the tile contains salt (deep supervision or classifier); ``"mask_nonempty"``: auxiliary
            pixel logits (B, 1, H, W) (deep supervision).
        """
        size = (int(x.shape[-2]), int(x.shape[-1]))
        outputs = self.net(self.adapter(x))
        return {
            name: self.adapter.restore(value, size) if value.dim() == 4 else value
            for name, value in outputs.items()
        }


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``model`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
