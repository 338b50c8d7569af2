"""Building blocks no library provides in a usable form: FPA, hypercolumn, GCN and GAU, and the centre
blocks (FPA or smp's pyramid pooling) behind ``model.center``.

smp's PAN decoder has an FPA and a GAU block, but its FPA needs feature maps of at least 8x8 (the
deepest map of a 128-pixel tile is 4x4) and both put batch norm after global pooling, which breaks
training with batch size 1; the versions here have neither limitation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.base.modules import Attention, Conv2dReLU, SCSEModule
from segmentation_models_pytorch.decoders.pspnet.decoder import PSPModule
from torch import nn

PYRAMID_BINS = (1, 2, 3, 6)  # PSPNet's bins, as the 15th place's pyramid pooling


def _resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    return F.interpolate(x, size=(int(size[0]), int(size[1])), mode="bilinear", align_corners=False)


class FPA(nn.Module):
    """Feature Pyramid Attention (Li et al. 2018, "Pyramid Attention Network for Semantic Segmentation").

    A U-shaped pyramid of convolutions over successively max-pooled features (kernels 7x7, 5x5 and 3x3 by
    default; the 1st place dropped the 7x7 level: ``kernels=(5, 3)``) produces a one-channel attention map
    that multiplies a 1x1-convolution branch; a global average pooling branch is added on top. Works for
    any spatial size (pools use ``ceil_mode``).

    Args:
        in_channels: Channels of the input features.
        out_channels: Channels of the output features.
        kernels: Odd kernel sizes of the pyramid levels, finest first (two or more).
    """

    def __init__(self, in_channels: int, out_channels: int, kernels: tuple[int, ...] = (7, 5, 3)) -> None:
        super().__init__()
        if len(kernels) < 2 or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"FPA needs two or more odd kernel sizes, got {list(kernels)}")
        self.levels = len(kernels)
        self.glob = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True)
        )
        self.mid = Conv2dReLU(in_channels, out_channels, kernel_size=1)
        self.pool = nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=True)
        # named down1..downN and conv1..conv(N-1) as in the paper (and earlier checkpoints)
        for i, k in enumerate(kernels, start=1):
            first = Conv2dReLU(in_channels if i == 1 else 1, 1, kernel_size=k, padding=k // 2)
            last_level = i == len(kernels)
            down = (
                nn.Sequential(first, Conv2dReLU(1, 1, kernel_size=k, padding=k // 2)) if last_level else first
            )
            setattr(self, f"down{i}", down)
            if not last_level:
                setattr(self, f"conv{i}", Conv2dReLU(1, 1, kernel_size=k, padding=k // 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; output has the input's spatial size."""
        size = x.shape[-2:]
        glob = self.glob(x)
        mid = self.mid(x)
        pyramid, h = [], x
        for i in range(1, self.levels + 1):
            h = getattr(self, f"down{i}")(self.pool(h))
            pyramid.append(h)
        y = pyramid[-1]
        for i in range(self.levels - 1, 0, -1):
            y = getattr(self, f"conv{i}")(pyramid[i - 1]) + _resize(y, pyramid[i - 1].shape[-2:])
        return mid * _resize(y, size) + glob


class PyramidPooling(nn.Sequential):
    """Pyramid pooling (Zhao et al. 2017, PSPNet): smp's ``PSPModule`` and a 1x1 convolution back to width.

    The features are average-pooled to 1x1, 2x2, 3x3 and 6x6 bins, each bin map reduced by a 1x1
    convolution, upsampled and concatenated with the input; the 1x1 convolution then maps the
    doubled width to ``out_channels``. Any spatial size works (a 101 tile at depth 4 gives 7x7).

    Args:
        in_channels: Channels of the input features (a multiple of 4, the number of bins).
        out_channels: Channels of the output features.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        bins = len(PYRAMID_BINS)
        if in_channels % bins:
            raise ValueError(f"pyramid pooling needs channels divisible by {bins}, got {in_channels}")
        pooled = in_channels + bins * (in_channels // bins)
        super().__init__(
            PSPModule(in_channels, sizes=PYRAMID_BINS), Conv2dReLU(pooled, out_channels, kernel_size=1)
        )


def center_block(center: str, channels: int, fpa_kernels: tuple[int, ...]) -> nn.Module:
    """The block ``model.center`` names on the deepest features: ``fpa``, ``ppm`` or ``none`` (identity)."""
    if center == "fpa":
        return FPA(channels, channels, fpa_kernels)
    if center == "ppm":
        return PyramidPooling(channels, channels)
    return nn.Identity()


class Hypercolumn(nn.Module):
    """Upsample a list of feature maps to the finest resolution among them and concatenate them.

    Args:
        mode: Interpolation mode passed to ``F.interpolate``.
    """

    def __init__(self, mode: str = "bilinear") -> None:
        super().__init__()
        self.mode = mode

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate ``features`` along channels at the size of the largest one."""
        height = max(int(f.shape[-2]) for f in features)
        width = max(int(f.shape[-1]) for f in features)
        align = False if self.mode in ("bilinear", "bicubic") else None
        resized = [
            f
            if (f.shape[-2] == height and f.shape[-1] == width)
            else F.interpolate(f, size=(height, width), mode=self.mode, align_corners=align)
            for f in features
        ]
        return torch.cat(resized, dim=1)


class GCN(nn.Module):
    """Global Convolutional Network block (Peng et al. 2017, "Large Kernel Matters").

    Two separable large-kernel paths, (k x 1 then 1 x k) and (1 x k then k x 1), summed.

    Args:
        in_channels: Channels of the input features.
        out_channels: Channels of the output features.
        kernel_size: The large kernel ``k`` (odd).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 7) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"GCN kernel_size must be odd, got {kernel_size}")
        pad = kernel_size // 2
        self.left = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (kernel_size, 1), padding=(pad, 0)),
            nn.Conv2d(out_channels, out_channels, (1, kernel_size), padding=(0, pad)),
        )
        self.right = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, (1, kernel_size), padding=(0, pad)),
            nn.Conv2d(out_channels, out_channels, (kernel_size, 1), padding=(pad, 0)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block; output has the input's spatial size."""
        return self.left(x) + self.right(x)


class GAU(nn.Module):
    """Global Attention Upsample (Li et al. 2018, "Pyramid Attention Network").

    Globally pooled high-level features produce channel weights that gate 3x3-convolved low-level
    features; the result is added to the (upsampled, projected) high-level features.

    Args:
        low_channels: Channels of the low-level (fine) features.
        high_channels: Channels of the high-level (coarse) features.
        out_channels: Channels of the output.
        gcn_kernel: If set, a :class:`GCN` with this large kernel (then BN-ReLU) replaces the 3x3
            convolution of the low-level features (the 1st place's GAU).
    """

    def __init__(
        self, low_channels: int, high_channels: int, out_channels: int, gcn_kernel: int | None = None
    ) -> None:
        super().__init__()
        self.low: nn.Module = (
            Conv2dReLU(low_channels, out_channels, kernel_size=3, padding=1)
            if gcn_kernel is None
            else nn.Sequential(
                GCN(low_channels, out_channels, gcn_kernel),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            )
        )
        self.gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(high_channels, out_channels, 1), nn.Sigmoid()
        )
        self.project = (
            nn.Identity()
            if high_channels == out_channels
            else Conv2dReLU(high_channels, out_channels, kernel_size=1)
        )

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        """Fuse ``low`` (B, Cl, H, W) with ``high`` (B, Ch, h, w) into (B, out_channels, H, W)."""
        gated = self.low(low) * self.gate(high)
        return gated + _resize(self.project(high), low.shape[-2:])


class TransposedUpBlock(nn.Module):
    """A U-Net decoder block that upsamples with a learned 2x2 transposed convolution (stride 2) instead of
    interpolation, then concatenates the skip features and applies two 3x3 conv-BN-ReLU (attention before and
    after, as smp's block). Same call as smp's ``UnetDecoderBlock``: ``block(x, height, width, skip)``.
    """

    def __init__(
        self, in_channels: int, skip_channels: int, out_channels: int, attention_type: str | None
    ) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(in_channels, in_channels, kernel_size=2, stride=2)
        self.attention1 = (
            attention(attention_type, in_channels + skip_channels) if skip_channels else nn.Identity()
        )
        self.conv1 = Conv2dReLU(in_channels + skip_channels, out_channels, kernel_size=3, padding=1)
        self.conv2 = Conv2dReLU(out_channels, out_channels, kernel_size=3, padding=1)
        self.attention2 = attention(attention_type, out_channels)

    def forward(
        self, x: torch.Tensor, height: int, width: int, skip_connection: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Upsample ``x`` to (height, width) (a resize after the transposed convolution only if the sizes
        are not exact doubles), fuse the skip features."""
        x = self.up(x)
        if x.shape[-2:] != (height, width):
            x = _resize(x, (height, width))
        if skip_connection is not None:
            x = self.attention1(torch.cat([x, skip_connection], dim=1))
        return self.attention2(self.conv2(self.conv1(x)))


def attention(name: str | None, channels: int) -> nn.Module:
    """smp's attention module (``"scse"`` or ``None``) that also works for fewer than 16 channels.

    smp's ``SCSEModule`` uses a fixed reduction of 16, which leaves zero hidden channels (and
    crashes) below 16 channels; here the reduction is ``min(16, channels)``.
    """
    if name == "scse":
        return SCSEModule(channels, reduction=min(16, channels))
    return Attention(name, in_channels=channels)
