"""Input adapter: normalise the raw tile, build the input channels, resize and pad to the network size."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from saltseg.errors import SaltsegError
from saltseg.models.config import ModelConfig


class InputAdapter(nn.Module):
    """Turn a (B, 1, H, W) tile in [0, 1] into the (B, C, S, S) tensor the core network expects.

    Steps: normalise (``standardize`` or ``div255``), build the configured channels at the tile's
    own resolution, optionally resize bilinearly to ``resize_to``, then pad (half before, half
    after) to ``input_size``. :meth:`restore` undoes the padding and resizing on network outputs.
    All sizes are computed from static tensor shapes, so the module traces and exports to ONNX.

    Args:
        config: The model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.channels: tuple[str, ...] = tuple(config.channels)
        self.standardize = config.normalize == "standardize"
        self.mean = float(config.mean)
        self.std = float(config.std)
        self.input_size = int(config.input_size)
        self.resize_to = config.resize_to
        self.pad_mode = config.pad_mode

    @property
    def out_channels(self) -> int:
        """Number of channels produced by :meth:`forward`."""
        return len(self.channels)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the configured intensity normalisation to an image in [0, 1]."""
        if self.standardize:
            return (x - self.mean) / self.std
        return x

    def build_channels(self, x: torch.Tensor) -> torch.Tensor:
        """Stack the configured channels of a (B, 1, H, W) image in [0, 1] (no resizing or padding)."""
        image = self.normalize(x)
        height = x.shape[-2]
        ramp = torch.arange(height, dtype=image.dtype, device=image.device) / max(height - 1, 1)
        ramp = ramp.view(1, 1, height, 1).expand_as(image)
        built: dict[str, torch.Tensor] = {}
        for name in self.channels:
            if name == "image":
                built[name] = image
            elif name == "row_ramp":
                built[name] = ramp
            elif name == "x_ramp":
                built[name] = image * ramp
            elif name == "cumsum":
                built[name] = torch.cumsum(image, dim=2) / height
            else:  # pragma: no cover - the config validator rejects unknown names
                raise SaltsegError(f"unknown input channel {name!r}")
        return torch.cat([built[name] for name in self.channels], dim=1)

    def padding(self, height: int, width: int) -> tuple[int, int, int, int]:
        """Pads ``(left, right, top, bottom)`` that bring a ``height`` x ``width`` tile to the network size.

        Args:
            height: Height of the tile after the optional resize.
            width: Width of the tile after the optional resize.

        Raises:
            SaltsegError: If the tile is larger than ``input_size`` or too small to reflect-pad.
        """
        size = self.input_size
        if height > size or width > size:
            raise SaltsegError(
                f"a {height}x{width} tile does not fit into input_size {size}; raise input_size"
            )
        top, left = (size - height) // 2, (size - width) // 2
        bottom, right = size - height - top, size - width - left
        if self.pad_mode == "reflect" and (max(top, bottom) >= height or max(left, right) >= width):
            raise SaltsegError(
                f"a {height}x{width} tile is too small to reflect-pad to {size}; "
                "use pad_mode 'replicate' or 'constant', or resize_to"
            )
        return left, right, top, bottom

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Adapt a batch of tiles.

        Args:
            x: Tiles of shape (B, 1, H, W), float in [0, 1].

        Returns:
            Tensor of shape (B, len(channels), input_size, input_size).
        """
        if x.dim() != 4 or x.shape[1] != 1:
            raise SaltsegError(f"expected input of shape (B, 1, H, W), got {tuple(x.shape)}")
        out = self.build_channels(x)
        if self.resize_to is not None:
            out = F.interpolate(
                out, size=(self.resize_to, self.resize_to), mode="bilinear", align_corners=False
            )
        pads = self.padding(out.shape[-2], out.shape[-1])
        if self.pad_mode == "constant":
            return F.pad(out, pads, mode="constant", value=0.0)
        return F.pad(out, pads, mode=self.pad_mode)

    def restore(self, y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Crop the padding off a network output and resize it back to the tile size.

        Args:
            y: Output map of shape (B, C, input_size, input_size).
            size: ``(H, W)`` of the original tile.

        Returns:
            Tensor of shape (B, C, H, W).
        """
        height, width = int(size[0]), int(size[1])
        inner_h, inner_w = (self.resize_to, self.resize_to) if self.resize_to is not None else (height, width)
        if y.shape[-2] != self.input_size or y.shape[-1] != self.input_size:
            y = F.interpolate(
                y, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False
            )
        left, _, top, _ = self.padding(inner_h, inner_w)
        y = y[:, :, top : top + inner_h, left : left + inner_w]
        if self.resize_to is not None:
            y = F.interpolate(y, size=(height, width), mode="bilinear", align_corners=False)
        return y
