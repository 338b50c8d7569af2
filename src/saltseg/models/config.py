"""The model configuration: one validated pydantic object that fully describes a network."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from saltseg.utils.validation import ConfigSection

ChannelName = Literal["image", "row_ramp", "x_ramp", "cumsum"]
"""Input channels the :class:`~saltseg.models.adapter.InputAdapter` can build from the raw image."""

CHANNEL_NAMES: tuple[str, ...] = ("image", "row_ramp", "x_ramp", "cumsum")


#: Architectures without a separate encoder (trained from scratch): ``encoder_weights`` does not apply.
SCRATCH_ARCHS = ("vanilla_unet", "dilated_unet")


class ModelConfig(ConfigSection):
    """Everything needed to build a salt segmentation model (see ``create_model``).

    Options shared by all segmentation architectures (``unet``, ``gcn_gau``, ``vanilla_unet``,
    ``dilated_unet``): ``attention`` (scSE in every decoder block), ``hypercolumn``, ``center``
    (FPA or pyramid pooling on the deepest features), ``dropout`` (spatial dropout before the final head) and
    ``deep_supervision``. The talk author's plain U-Net is therefore
    ``arch="vanilla_unet", attention=None, hypercolumn=False``.

    Attributes:
        arch: Registry key of the architecture (see ``list_models()``).
        encoder: smp encoder name (``resnet34``, ``se_resnext50_32x4d``, ``tu-<timm name>``...);
            for ``arch="classifier"`` a timm model name.
        encoder_weights: Local weights file (.safetensors, .pth, .pt) to initialise the encoder
            (or the whole classifier). Nothing is ever downloaded.
        channels: Input channels built inside the model from the raw image.
        normalize: ``"standardize"`` applies ``(x - mean) / std``; ``"div255"`` keeps x in [0, 1].
        mean: Mean of image/255 on the training set.
        std: Standard deviation of image/255 on the training set.
        input_size: Side of the square fed to the network: a multiple of 2 ** depth for the
            from-scratch U-Nets (112 takes a 101 tile with 5-6 px of padding at depth 4), of 32 for
            the encoder architectures.
        resize_to: If set, resize the tile to ``resize_to`` x ``resize_to`` before padding.
        pad_mode: How the tile is padded up to ``input_size``.
        decoder_channels: Channels of the decoder blocks, deepest first; its length is the
            encoder depth (1 to 5).
        attention: ``"scse"`` puts concurrent spatial and channel squeeze-excitation into the decoder.
        hypercolumn: Concatenate all decoder outputs (upsampled) before the head.
        center: A block on the deepest features: ``"fpa"`` (Feature Pyramid Attention, the 1st place) or
            ``"ppm"`` (PSPNet's pyramid pooling over 1, 2, 3 and 6 bins, the 15th place).
        fpa_kernels: Kernel sizes of the FPA pyramid, finest first (the 1st place: ``[5, 3]``, no 7x7).
        encoder_attention: ``"scse"`` inside the encoder, after each of its ResNet-style stages
            (``layer1``-``layer4``), so the next stage sees the re-weighted features (1st place).
        stem: ``conv3x3`` replaces the encoder's first 7x7 convolution by a 3x3 one with the same stride and
            width (the 1st place's ResNet34 stem for small tiles).
        decoder_upsample: ``transposed``: the encoder U-Net's decoder upsamples with learned 2x2 transposed
            convolutions instead of interpolation.
        gau_gcn_kernel: ``gcn_gau`` only: a GCN with this large kernel on the low-level features of each
            GAU instead of a 3x3 convolution (the 1st place's "GCN inside the GAU").
        drop_first_maxpool: Remove the encoder's first max-pool (keeps more resolution).
        dropout: Spatial dropout probability before the final head (and image-level head).
        deep_supervision: Add the image-level ``salt`` logit and the ``mask_nonempty`` head; the
            ``mask`` head then fuses pixel and image-level features.
        image_head: Only the image-level ``salt`` logit of deep supervision (pooled deepest features,
            two linear layers; almost free), trained by ``loss.deep_supervision.salt`` and used by the
            tuned empty-mask gate. Implied by ``deep_supervision``.
        base_channels: Width of the first level of ``vanilla_unet`` / ``dilated_unet``.
        depth: Number of poolings of ``vanilla_unet`` / ``dilated_unet`` (1 to 5).
        batchnorm: Batch normalisation after every convolution of ``vanilla_unet`` / ``dilated_unet``.
        residual: Residual blocks (two 3x3 convolutions plus a shortcut) in every level of
            ``vanilla_unet`` / ``dilated_unet`` instead of two plain convolutions.
        decreasing_dropout: Dropout at the bottleneck of ``vanilla_unet`` / ``dilated_unet``,
            decreasing linearly along the expanding path (see ``saltseg.models.vanilla``).
    """

    model_config = ConfigDict(extra="forbid")

    arch: str = "unet"
    encoder: str = "resnet34"
    encoder_weights: str | None = None
    channels: list[ChannelName] = Field(default_factory=lambda: ["image"])
    normalize: Literal["div255", "standardize"] = "standardize"
    mean: float = 0.4719
    std: float = 0.1610
    input_size: int = 128
    resize_to: int | None = None
    pad_mode: Literal["reflect", "replicate", "constant"] = "reflect"
    decoder_channels: list[int] = Field(default_factory=lambda: [256, 128, 64, 32, 16])
    attention: Literal["scse"] | None = "scse"
    hypercolumn: bool = True
    center: Literal["none", "fpa", "ppm"] = "none"
    fpa_kernels: list[int] = Field(default_factory=lambda: [7, 5, 3])
    encoder_attention: Literal["scse"] | None = None
    stem: Literal["default", "conv3x3"] = "default"
    decoder_upsample: Literal["interpolate", "transposed"] = "interpolate"
    gau_gcn_kernel: int | None = None
    drop_first_maxpool: bool = False
    dropout: float = 0.0
    deep_supervision: bool = False
    image_head: bool = False
    base_channels: int = 16
    depth: int = 4
    batchnorm: bool = True
    residual: bool = False
    decreasing_dropout: float = 0.0

    @field_validator("arch", "encoder")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("channels")
    @classmethod
    def _check_channels(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one input channel is needed")
        if len(set(value)) != len(value):
            raise ValueError(f"duplicate input channels in {value}")
        return value

    @field_validator("std")
    @classmethod
    def _check_std(cls, value: float) -> float:
        if not value > 0:
            raise ValueError(f"std must be positive, got {value}")
        return value

    @field_validator("input_size")
    @classmethod
    def _check_input_size(cls, value: int) -> int:
        if value <= 0:
            raise ValueError(f"input_size must be positive, got {value}")
        return value

    @field_validator("decoder_channels")
    @classmethod
    def _check_decoder_channels(cls, value: list[int]) -> list[int]:
        if not 1 <= len(value) <= 5:
            raise ValueError(f"decoder_channels needs 1 to 5 entries (the encoder depth), got {len(value)}")
        if any(c <= 0 for c in value):
            raise ValueError(f"decoder_channels must be positive, got {value}")
        return value

    @field_validator("fpa_kernels")
    @classmethod
    def _check_fpa_kernels(cls, value: list[int]) -> list[int]:
        if len(value) < 2 or any(k < 1 or k % 2 == 0 for k in value):
            raise ValueError(f"fpa_kernels needs two or more odd kernel sizes, got {value}")
        return value

    @field_validator("gau_gcn_kernel")
    @classmethod
    def _check_gcn_kernel(cls, value: int | None) -> int | None:
        if value is not None and (value < 3 or value % 2 == 0):
            raise ValueError(f"gau_gcn_kernel must be an odd size >= 3, got {value}")
        return value

    @field_validator("dropout", "decreasing_dropout")
    @classmethod
    def _check_probability(cls, value: float) -> float:
        if not 0.0 <= value < 1.0:
            raise ValueError(f"a dropout probability must be in [0, 1), got {value}")
        return value

    @field_validator("base_channels")
    @classmethod
    def _check_base_channels(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"base_channels must be at least 1, got {value}")
        return value

    @field_validator("depth")
    @classmethod
    def _check_depth(cls, value: int) -> int:
        if not 1 <= value <= 5:
            raise ValueError(f"depth must be between 1 and 5, got {value}")
        return value

    @property
    def size_multiple(self) -> int:
        """What ``input_size`` must be a multiple of: 2 ** depth for the from-scratch U-Nets, 32 for the
        encoder architectures (smp's five-stage encoders)."""
        return 2**self.depth if self.arch in SCRATCH_ARCHS else 32

    @model_validator(mode="after")
    def _check_resize(self) -> ModelConfig:
        if self.input_size % self.size_multiple:
            raise ValueError(
                f"input_size must be a multiple of {self.size_multiple} for {self.arch}"
                + (f" with depth {self.depth}" if self.arch in SCRATCH_ARCHS else "")
                + f", got {self.input_size}"
            )
        if self.resize_to is not None and not 1 <= self.resize_to <= self.input_size:
            raise ValueError(
                f"resize_to ({self.resize_to}) must be between 1 and input_size ({self.input_size})"
            )
        encoder_only = {
            "encoder_attention": self.encoder_attention is not None,
            "stem": self.stem != "default",
            "decoder_upsample": self.decoder_upsample != "interpolate" and self.arch != "unet",
            "gau_gcn_kernel": self.gau_gcn_kernel is not None and self.arch != "gcn_gau",
        }
        wrong = [
            k
            for k, used in encoder_only.items()
            if used and (self.arch in SCRATCH_ARCHS or k in ("decoder_upsample", "gau_gcn_kernel"))
        ]
        if wrong:
            raise ValueError(
                f"{', '.join(wrong)} do(es) not apply to {self.arch}: encoder_attention and stem are for the "
                "encoder architectures (unet, gcn_gau), decoder_upsample for unet, gau_gcn_kernel for gcn_gau"
            )
        if self.encoder_weights is not None and self.arch in SCRATCH_ARCHS:
            raise ValueError(
                f"encoder_weights is for the encoder architectures (unet, gcn_gau, classifier); {self.arch} "
                "has no separate encoder and would ignore it"
            )
        return self

    @property
    def in_channels(self) -> int:
        """Number of channels the core network receives from the input adapter."""
        return len(self.channels)
