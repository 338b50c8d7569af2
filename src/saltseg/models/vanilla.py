"""The talk author's plain U-Net and dilated U-Net, written from scratch (no encoder library).

Level ``i`` (0 = finest) has ``base_channels * 2**i`` channels; each level is two 3x3 convolutions
(with batch norm if ``batchnorm``) and ReLU, followed by 2x2 max-pooling; the bottleneck has
``base_channels * 2**depth`` channels. The expanding path upsamples with 2x2 transposed
convolutions, concatenates the skip and applies two 3x3 convolutions (and scSE if configured).

With ``residual`` every level's pair of convolutions is a :class:`ResidualBlock` (a from-scratch
residual U-Net). The dilated U-Net replaces the bottleneck by a cascade of 3x3 convolutions with
dilations 1, 2, 4 and 8 whose outputs are summed (as in the Carvana / D-LinkNet dilated centres),
enlarging the receptive field without more pooling.

``decreasing_dropout`` schedule (``p = decreasing_dropout``, ``D = depth``): dropout ``p`` after
the bottleneck, then on the concatenated features of expanding level ``k`` (``k = 0`` deepest,
``k = D - 1`` finest) ``p * (D - k) / (D + 1)``: e.g. 0.5, 0.4, 0.3, 0.2, 0.1 for ``p=0.5, D=4``.
The contracting path has no dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from saltseg.models.blocks import attention, center_block
from saltseg.models.config import ModelConfig
from saltseg.models.heads import SegmentationHeads
from saltseg.models.registry import register_model

DILATIONS = (1, 2, 4, 8)
"""Dilation rates of the dilated U-Net's bottleneck cascade."""


def decreasing_dropout_schedule(p: float, depth: int) -> list[float]:
    """Dropout probabilities ``[bottleneck, expanding level 0 (deepest), ..., level depth-1]``."""
    return [p] + [p * (depth - k) / (depth + 1) for k in range(depth)]


def conv_bn_relu(in_channels: int, out_channels: int, batchnorm: bool, dilation: int = 1) -> nn.Sequential:
    """3x3 convolution (padding keeps the size), optional batch norm, ReLU."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, 3, padding=dilation, dilation=dilation, bias=not batchnorm)
    ]
    if batchnorm:
        layers.append(nn.BatchNorm2d(out_channels))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def double_conv(in_channels: int, out_channels: int, batchnorm: bool) -> nn.Sequential:
    """Two :func:`conv_bn_relu` layers."""
    return nn.Sequential(
        conv_bn_relu(in_channels, out_channels, batchnorm),
        conv_bn_relu(out_channels, out_channels, batchnorm),
    )


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with an identity (or 1x1 projection) shortcut, ReLU after the sum.

    The block of the from-scratch residual U-Nets of the competition (15th place, "U-Net with ResNet
    blocks"): the same cost as :func:`double_conv`, easier to train deep from random weights.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        batchnorm: Batch norm after each convolution (and on the projection).
    """

    def __init__(self, in_channels: int, out_channels: int, batchnorm: bool) -> None:
        super().__init__()
        self.first = conv_bn_relu(in_channels, out_channels, batchnorm)
        second: list[nn.Module] = [nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=not batchnorm)]
        if batchnorm:
            second.append(nn.BatchNorm2d(out_channels))
        self.second = nn.Sequential(*second)
        self.shortcut: nn.Module = nn.Identity()
        if in_channels != out_channels:
            proj: list[nn.Module] = [nn.Conv2d(in_channels, out_channels, 1, bias=not batchnorm)]
            if batchnorm:
                proj.append(nn.BatchNorm2d(out_channels))
            self.shortcut = nn.Sequential(*proj)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``relu(second(first(x)) + shortcut(x))``."""
        return self.relu(self.second(self.first(x)) + self.shortcut(x))


def conv_block(in_channels: int, out_channels: int, batchnorm: bool, residual: bool) -> nn.Module:
    """A level's block: :class:`ResidualBlock` when ``residual``, else :func:`double_conv`."""
    if residual:
        return ResidualBlock(in_channels, out_channels, batchnorm)
    return double_conv(in_channels, out_channels, batchnorm)


class DilatedBottleneck(nn.Module):
    """Cascade of dilated 3x3 convolutions whose outputs are summed.

    Args:
        in_channels: Input channels.
        out_channels: Output channels.
        batchnorm: Batch norm after each convolution.
        dilations: Dilation rate of each convolution in the cascade.
    """

    def __init__(
        self, in_channels: int, out_channels: int, batchnorm: bool, dilations: tuple[int, ...] = DILATIONS
    ) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            conv_bn_relu(in_channels if i == 0 else out_channels, out_channels, batchnorm, d)
            for i, d in enumerate(dilations)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of the outputs of the cascade."""
        total: torch.Tensor | None = None
        for conv in self.convs:
            x = conv(x)
            total = x if total is None else total + x
        assert total is not None
        return total


class VanillaUNet(nn.Module):
    """Plain (or dilated) U-Net with the shared heads (hypercolumn, deep supervision).

    Args:
        config: The model configuration (``base_channels``, ``depth``, ``batchnorm``,
            ``decreasing_dropout``, ``attention``, ``center``, head options).
        dilated: Use the :class:`DilatedBottleneck`.
    """

    def __init__(self, config: ModelConfig, dilated: bool = False) -> None:
        super().__init__()
        depth, bn, res = config.depth, config.batchnorm, config.residual
        widths = [config.base_channels * 2**i for i in range(depth + 1)]
        self.down = nn.ModuleList(
            conv_block(config.in_channels if i == 0 else widths[i - 1], widths[i], bn, res)
            for i in range(depth)
        )
        self.pool = nn.MaxPool2d(2)
        self.bottleneck: nn.Module = (
            DilatedBottleneck(widths[depth - 1], widths[depth], bn)
            if dilated
            else conv_block(widths[depth - 1], widths[depth], bn, res)
        )
        self.center = center_block(config.center, widths[depth], tuple(config.fpa_kernels))
        schedule = decreasing_dropout_schedule(config.decreasing_dropout, depth)
        self.bottleneck_dropout = nn.Dropout(schedule[0])
        levels = list(range(depth - 1, -1, -1))  # deepest expanding level first
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[i + 1], widths[i], 2, stride=2) for i in levels)
        self.up_dropouts = nn.ModuleList(nn.Dropout(schedule[k + 1]) for k in range(depth))
        self.up_convs = nn.ModuleList(
            nn.Sequential(
                conv_block(2 * widths[i], widths[i], bn, res), attention(config.attention, widths[i])
            )
            for i in levels
        )
        self.heads = SegmentationHeads(
            [widths[i] for i in levels],
            widths[depth],
            config.hypercolumn,
            config.deep_supervision,
            config.dropout,
            config.image_head,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map adapted input (B, C, S, S), S divisible by ``2**depth``, to the output dict at S."""
        skips: list[torch.Tensor] = []
        for down in self.down:
            x = down(x)
            skips.append(x)
            x = self.pool(x)
        deepest = self.center(self.bottleneck(x))
        y = self.bottleneck_dropout(deepest)
        outputs: list[torch.Tensor] = []
        for up, drop, conv, skip in zip(self.ups, self.up_dropouts, self.up_convs, skips[::-1], strict=True):
            y = conv(drop(torch.cat([up(y), skip], dim=1)))
            outputs.append(y)
        return self.heads(outputs, deepest)


@register_model("vanilla_unet")
def build_vanilla_unet(config: ModelConfig) -> nn.Module:
    """The talk author's plain U-Net."""
    return VanillaUNet(config, dilated=False)


@register_model("dilated_unet")
def build_dilated_unet(config: ModelConfig) -> nn.Module:
    """The talk author's U-Net with a dilated-convolution bottleneck."""
    return VanillaUNet(config, dilated=True)
