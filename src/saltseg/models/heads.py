"""Output heads shared by all segmentation architectures (hypercolumn, dropout, deep supervision)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Conv2dReLU
from torch import nn

from saltseg.models.blocks import Hypercolumn

MAX_HEAD_CHANNELS = 32
"""Largest width of the heads' pixel and image-level feature layers."""

HYPERCOLUMN_CHANNELS = 16
"""Channels each decoder output is projected to (1x1 conv, at its own resolution) before the hypercolumn.

Concatenating the raw decoder outputs (496 channels for the default decoder) and convolving them at full
resolution made the head cost five times the encoder on a CPU; projecting first keeps the hypercolumn's
multi-scale features at a fraction of the cost (80 channels for five decoder blocks).
"""


def head_channels(finest_channels: int) -> int:
    """Width of the head layers: four times the finest decoder width, at most 32 (32 by default)."""
    return min(MAX_HEAD_CHANNELS, 4 * finest_channels)


class SegmentationHeads(nn.Module):
    """Turn decoder outputs (and the deepest features) into the output dict of a segmentation net.

    Without deep supervision: ``{"mask": logits}`` from the hypercolumn (or the last decoder output)
    through spatial dropout, a 3x3 conv-BN-ReLU (hypercolumn only) and a 1x1 conv.

    With deep supervision (1st place / Heng CherKeng): a pixel branch (3x3 conv-BN-ReLU on the
    hypercolumn) gives ``mask_nonempty`` logits; an image branch (global average pooling of the
    deepest features, linear + ReLU) gives the ``salt`` logit; the fused ``mask`` head (1x1
    convolutions) mixes the
    pixel features with the image features broadcast over the image. Head layers are
    :func:`head_channels` wide.

    Args:
        feature_channels: Channels of each decoder output passed to :meth:`forward`.
        image_channels: Channels of the deepest features (used with deep supervision).
        hypercolumn: Concatenate all decoder outputs instead of using only the last.
        deep_supervision: Add the ``salt`` and ``mask_nonempty`` outputs and the fused head.
        dropout: Dropout probability before the heads.
        image_head: Without deep supervision, add only the image-level ``salt`` logit (pooled deepest
            features, linear + ReLU, linear): a few thousand parameters, for the empty-mask gate.
    """

    def __init__(
        self,
        feature_channels: list[int],
        image_channels: int,
        hypercolumn: bool,
        deep_supervision: bool,
        dropout: float = 0.0,
        image_head: bool = False,
    ) -> None:
        super().__init__()
        self.hypercolumn = Hypercolumn() if hypercolumn else None
        self.project = (
            nn.ModuleList(nn.Conv2d(c, HYPERCOLUMN_CHANNELS, kernel_size=1) for c in feature_channels)
            if hypercolumn
            else None
        )
        self.deep_supervision = deep_supervision
        in_channels = HYPERCOLUMN_CHANNELS * len(feature_channels) if hypercolumn else feature_channels[-1]
        width = head_channels(feature_channels[-1])
        self.dropout = nn.Dropout2d(dropout)
        self.image_only = image_head and not deep_supervision
        if deep_supervision or image_head:
            self.image_dropout = nn.Dropout(dropout)
            self.image = nn.Sequential(nn.Linear(image_channels, width), nn.ReLU(inplace=True))
            self.image_logit = nn.Linear(width, 1)
        if deep_supervision:
            self.pixel = Conv2dReLU(in_channels, width, kernel_size=3, padding=1)
            self.pixel_logit = nn.Conv2d(width, 1, kernel_size=1)
            self.fuse = nn.Sequential(
                Conv2dReLU(2 * width, width, kernel_size=1, padding=0),
                nn.Conv2d(width, 1, kernel_size=1),
            )
        else:
            pre: nn.Module = (
                Conv2dReLU(in_channels, width, kernel_size=3, padding=1) if hypercolumn else nn.Identity()
            )
            self.mask = nn.Sequential(pre, nn.Conv2d(width if hypercolumn else in_channels, 1, 1))

    def forward(self, features: list[torch.Tensor], deepest: torch.Tensor) -> dict[str, torch.Tensor]:
        """Compute the outputs.

        Args:
            features: Decoder outputs, coarse to fine; the last has the output resolution.
            deepest: Deepest (bottleneck) features, for the image-level branch.

        Returns:
            ``{"mask"}``, ``{"mask", "salt"}`` with the image head alone or, with deep supervision,
            ``{"mask", "mask_nonempty", "salt"}``.
        """
        if self.hypercolumn is not None and self.project is not None:
            x = self.hypercolumn([proj(f) for proj, f in zip(self.project, features, strict=True)])
        else:
            x = features[-1]
        x = self.dropout(x)
        if not self.deep_supervision and not self.image_only:
            return {"mask": self.mask(x)}
        pooled = self.image_dropout(F.adaptive_avg_pool2d(deepest, 1).flatten(1))
        image = self.image(pooled)
        if self.image_only:
            return {"mask": self.mask(x), "salt": self.image_logit(image).flatten()}
        pixel = self.pixel(x)
        size_h, size_w = int(pixel.shape[-2]), int(pixel.shape[-1])
        image_map = image[:, :, None, None].expand(-1, -1, size_h, size_w).to(pixel.dtype)
        fused = self.fuse(torch.cat([pixel, image_map], dim=1))
        return {
            "mask": fused,
            "mask_nonempty": self.pixel_logit(pixel),
            "salt": self.image_logit(image).flatten(),
        }
