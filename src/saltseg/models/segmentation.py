"""Encoder-decoder networks on smp encoders: the winners' U-Net and the GCN + GAU network."""

from __future__ import annotations

import torch
from segmentation_models_pytorch.decoders.unet.decoder import UnetDecoderBlock
from torch import nn

from saltseg.models.blocks import GAU, GCN, TransposedUpBlock, attention, center_block
from saltseg.models.config import ModelConfig
from saltseg.models.encoders import build_encoder
from saltseg.models.heads import SegmentationHeads
from saltseg.models.registry import register_model

GCN_KERNEL_SIZE = 7
"""Large kernel of the GCN centre (the deepest map of a 128-pixel tile is only 4x4)."""


def unet_block(
    in_channels: int, skip_channels: int, out_channels: int, attention_type: str | None
) -> nn.Module:
    """smp's ``UnetDecoderBlock`` (upsample, concatenate skip, two conv-BN-ReLU, attention).

    Its attention modules are built with :func:`~saltseg.models.blocks.attention`, which unlike
    smp's also works with fewer than 16 channels. A block without a skip connection has no first
    attention: smp applies it only to the concatenation, and an unused module stops DDP training.
    """
    block = UnetDecoderBlock(in_channels, skip_channels, out_channels, attention_type=None)
    first = attention(attention_type, in_channels + skip_channels) if skip_channels else nn.Identity()
    block.attention1 = first
    block.attention2 = attention(attention_type, out_channels)
    return block


class EncoderUNet(nn.Module):
    """U-Net on an smp encoder with the TGS winners' additions.

    smp ``UnetDecoderBlock`` s (scSE attention when ``attention="scse"``), an optional centre block (FPA
    or pyramid pooling), optional removal of the first max-pool, hypercolumn and deep-supervision heads.

    Args:
        config: The model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = build_encoder(config)
        encoder_channels = list(self.encoder.out_channels)
        decoder_channels = list(config.decoder_channels)
        head_channels = encoder_channels[-1]
        skip_channels = [*encoder_channels[1:-1][::-1], 0]
        in_channels = [head_channels, *decoder_channels[:-1]]
        self.center = center_block(config.center, head_channels, tuple(config.fpa_kernels))
        make_block = TransposedUpBlock if config.decoder_upsample == "transposed" else unet_block
        self.blocks = nn.ModuleList(
            make_block(cin, cskip, cout, config.attention)
            for cin, cskip, cout in zip(in_channels, skip_channels, decoder_channels, strict=True)
        )
        self.heads = SegmentationHeads(
            decoder_channels,
            head_channels,
            config.hypercolumn,
            config.deep_supervision,
            config.dropout,
            config.image_head,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map adapted input (B, C, S, S) to the output dict at resolution S."""
        features = self.encoder(x)
        sizes = [f.shape[-2:] for f in features][::-1]
        skips = features[1:][::-1]
        deepest = self.center(skips[0])
        y = deepest
        outputs: list[torch.Tensor] = []
        for i, block in enumerate(self.blocks):
            skip = skips[i + 1] if i + 1 < len(skips) else None
            y = block(y, int(sizes[i + 1][0]), int(sizes[i + 1][1]), skip_connection=skip)
            outputs.append(y)
        return self.heads(outputs, deepest)


class GCNGAUNet(nn.Module):
    """1st place's second model: encoder + GCN centre + Global Attention Upsample decoder.

    The deepest encoder features pass through a GCN block (then BN-ReLU, then the ``model.center``
    block, if any) to ``decoder_channels[0]``; each shallower encoder level is fused by a
    :class:`GAU` into ``decoder_channels[i]`` (followed by scSE when ``attention="scse"``); a last
    U-Net block upsamples to the input resolution. Heads as in :class:`EncoderUNet`.

    Args:
        config: The model configuration.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.encoder = build_encoder(config)
        encoder_channels = list(self.encoder.out_channels)
        decoder_channels = list(config.decoder_channels)
        center: list[nn.Module] = [
            GCN(encoder_channels[-1], decoder_channels[0], GCN_KERNEL_SIZE),
            nn.BatchNorm2d(decoder_channels[0]),
            nn.ReLU(inplace=True),
        ]
        if config.center != "none":
            center.append(center_block(config.center, decoder_channels[0], tuple(config.fpa_kernels)))
        self.center = nn.Sequential(*center)
        skip_channels = encoder_channels[1:-1][::-1]
        self.gaus = nn.ModuleList(
            GAU(skip, high, out, config.gau_gcn_kernel)
            for skip, high, out in zip(
                skip_channels, decoder_channels[:-1], decoder_channels[1:], strict=True
            )
        )
        self.attentions = nn.ModuleList(attention(config.attention, c) for c in decoder_channels[1:])
        self.final = unet_block(decoder_channels[-1], 0, decoder_channels[-1], config.attention)
        self.heads = SegmentationHeads(
            [*decoder_channels, decoder_channels[-1]],
            decoder_channels[0],
            config.hypercolumn,
            config.deep_supervision,
            config.dropout,
            config.image_head,
        )

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Map adapted input (B, C, S, S) to the output dict at resolution S."""
        features = self.encoder(x)
        skips = features[1:-1][::-1]
        deepest = self.center(features[-1])
        y = deepest
        outputs = [y]
        for skip, gau, scse in zip(skips, self.gaus, self.attentions, strict=True):
            y = scse(gau(skip, y))
            outputs.append(y)
        y = self.final(y, int(x.shape[-2]), int(x.shape[-1]))
        outputs.append(y)
        return self.heads(outputs, deepest)


@register_model("unet")
def build_unet(config: ModelConfig) -> nn.Module:
    """U-Net on an smp encoder with scSE, hypercolumn, centre block and deep supervision options."""
    return EncoderUNet(config)


@register_model("gcn_gau")
def build_gcn_gau(config: ModelConfig) -> nn.Module:
    """Encoder + GCN centre + GAU decoder."""
    return GCNGAUNet(config)
