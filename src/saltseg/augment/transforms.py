"""Paired image/mask augmentations built from ``torchvision.transforms.v2``.

Geometric transforms run once on ``(tv_tensors.Image, tv_tensors.Mask)`` so both get the same random
parameters (bilinear for the image, nearest for the mask); photometric transforms run on the image alone.
Transforms that resample around the tile (shift/scale, rotate, shear) see it reflection-padded by half its
side and are centre-cropped back, so no constant border appears for the limits in use (beyond the padding the
fill is 0 for both). All randomness comes from torch's global RNG: ``torch.manual_seed`` fixes it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torchvision import tv_tensors
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as TF

from saltseg.augment.config import AugmentConfig

__all__ = ["PairTransform", "RandomAdditiveBrightness", "RandomGamma", "build_transforms"]

PairFn = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class RandomGamma(v2.Transform):
    """``image ** gamma`` with ``gamma ~ U(low, high)`` (images only; masks pass through)."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, gamma_limit: tuple[float, float]) -> None:
        super().__init__()
        self.gamma_limit = gamma_limit

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw gamma from the global torch RNG."""
        low, high = self.gamma_limit
        return {"gamma": float(torch.empty(1).uniform_(low, high))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Apply torchvision's ``adjust_gamma``."""
        return self._call_kernel(TF.adjust_gamma, inpt, gamma=params["gamma"])


class RandomAdditiveBrightness(v2.Transform):
    """``image + beta`` with ``beta ~ U(-limit, limit)`` (images in [0, 1]; masks pass through), as
    albumentations' brightness change, which the winners' pipelines used."""

    _transformed_types = (tv_tensors.Image,)

    def __init__(self, limit: float) -> None:
        super().__init__()
        self.limit = limit

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        """Draw beta from the global torch RNG."""
        return {"beta": float(torch.empty(1).uniform_(-self.limit, self.limit))}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Add beta (clamped to [0, 1] by the pipeline)."""
        return inpt + params["beta"]


class _RandomResizedCrop(v2.RandomResizedCrop):
    """``RandomResizedCrop`` resizing masks with NEAREST_EXACT.

    torchvision resizes masks with NEAREST whatever the interpolation asked, which when upsampling is shifted
    by up to half a pixel against the bilinear image; NEAREST_EXACT samples the same pixel centres.
    """

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        """Crop and resize; NEAREST_EXACT for masks."""
        if isinstance(inpt, tv_tensors.Mask):
            cropped = TF.crop(inpt, params["top"], params["left"], params["height"], params["width"])
            return TF.resize(cropped, list(self.size), interpolation=InterpolationMode.NEAREST_EXACT)
        return super().transform(inpt, params)


def _maybe(p: float, transform: v2.Transform) -> list[v2.Transform]:
    """``[RandomApply([transform], p)]``, or ``[]`` when ``p == 0``."""
    return [v2.RandomApply([transform], p=p)] if p > 0 else []


def _geometric(cfg: AugmentConfig, height: int, width: int) -> v2.Compose | None:
    """Transforms applied to image and mask together, for one tile size (None when there are none)."""
    bilinear = InterpolationMode.BILINEAR
    steps: list[v2.Transform] = [
        *_maybe(cfg.hflip, v2.RandomHorizontalFlip(p=1.0)),
        *_maybe(cfg.vflip, v2.RandomVerticalFlip(p=1.0)),
        *_maybe(
            cfg.random_crop,
            _RandomResizedCrop((height, width), scale=cfg.crop_scale, ratio=(width / height, width / height)),
        ),
    ]
    pad_y, pad_x = min(height // 2, height - 1), min(width // 2, width - 1)
    padded_h, padded_w = height + 2 * pad_y, width + 2 * pad_x
    # RandomAffine's translate is a fraction of the (padded) input: rescale to a fraction of the tile
    translate = (cfg.shift_limit * width / padded_w, cfg.shift_limit * height / padded_h)
    warps: list[v2.Transform] = [
        *_maybe(
            cfg.shift_scale,
            v2.RandomAffine(degrees=0.0, translate=translate, scale=cfg.scale_limit, interpolation=bilinear),
        ),
        *_maybe(cfg.rotate, v2.RandomRotation(degrees=cfg.rotate_limit, interpolation=bilinear)),
        *_maybe(cfg.shear, v2.RandomAffine(degrees=0.0, shear=cfg.shear_limit, interpolation=bilinear)),
    ]
    if warps:
        steps += [
            v2.Pad([pad_x, pad_y], padding_mode="reflect"),
            *warps,
            v2.CenterCrop((height, width)),
        ]
    if cfg.fixed_crop is not None:
        if cfg.fixed_crop > min(height, width):
            raise ValueError(f"fixed_crop {cfg.fixed_crop} is larger than the {height}x{width} tile")
        steps.append(v2.RandomCrop((cfg.fixed_crop, cfg.fixed_crop)))
    return v2.Compose(steps) if steps else None


def _photometric(cfg: AugmentConfig) -> v2.Compose | None:
    """Transforms applied to the image only (None when there are none)."""
    side = cfg.cutout_size
    steps: list[v2.Transform] = [
        *_maybe(
            cfg.brightness,
            RandomAdditiveBrightness(cfg.brightness_limit)
            if cfg.brightness_mode == "additive"
            else v2.ColorJitter(brightness=cfg.brightness_limit),
        ),
        *_maybe(cfg.contrast, v2.ColorJitter(contrast=cfg.contrast_limit)),
        *_maybe(cfg.gamma, RandomGamma(cfg.gamma_limit)),
        *_maybe(cfg.invert, v2.RandomInvert(p=1.0)),
        *_maybe(cfg.cutout, v2.RandomErasing(p=1.0, scale=(side**2, side**2), ratio=(1.0, 1.0), value=0.0)),
    ]
    return v2.Compose(steps) if steps else None


class PairTransform:
    """Callable ``(image, mask) -> (image, mask)`` applying an :class:`AugmentConfig`.

    Picklable (DataLoader workers); the geometric pipeline is built lazily per tile size.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self._photometric = _photometric(cfg)
        self._geometric: dict[tuple[int, int], v2.Compose | None] = {}

    def __repr__(self) -> str:
        return f"PairTransform({self.cfg!r})"

    def __call__(self, image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Augment one tile.

        Args:
            image: (C,H,W) float image in [0, 1].
            mask: (1,H,W) or (H,W) binary mask (float or integer dtype).

        Returns:
            The augmented image (same dtype, clamped to [0, 1]) and mask (same dtype and shape, binary; the
            ``fixed_crop`` size when the config has one).
        """
        if image.ndim != 3 or mask.shape[-2:] != image.shape[-2:]:
            raise ValueError(
                f"expected image (C,H,W) and mask (1,H,W) of the same size, got {tuple(image.shape)} "
                f"and {tuple(mask.shape)}"
            )
        height, width = image.shape[-2:]
        if (height, width) not in self._geometric:
            self._geometric[(height, width)] = _geometric(self.cfg, height, width)
        geometric = self._geometric[(height, width)]

        out_image: Tensor = tv_tensors.Image(image)
        out_mask: Tensor = mask
        if geometric is not None:
            out_image, out_mask = geometric(out_image, tv_tensors.Mask(mask.float()))
            out_mask = out_mask.as_subclass(Tensor).to(mask.dtype)
        if self._photometric is not None:
            out_image = self._photometric(out_image)
        out_image = out_image.as_subclass(Tensor).clamp(0.0, 1.0).to(image.dtype)
        return out_image, out_mask


def _identity(image: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Return the inputs unchanged."""
    return image, mask


def build_transforms(cfg: AugmentConfig) -> PairFn:
    """Build the training augmentation for ``cfg``.

    Args:
        cfg: Augmentation configuration.

    Returns:
        ``fn(image, mask) -> (image, mask)`` for an image (1,H,W) float32 in [0, 1] and a mask (1,H,W)
        float32/uint8 in {0, 1}; shapes and dtypes are kept. When every probability is 0 it is the identity
        (returns its inputs as they are).
    """
    if cfg.is_identity:
        return _identity
    return PairTransform(cfg)
