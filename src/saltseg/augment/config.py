"""Augmentation configuration: one probability per transform, plus its parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from saltseg.utils.validation import ConfigSection

__all__ = ["AugmentConfig"]


class AugmentConfig(ConfigSection):
    """Training augmentations; each transform is applied independently with its own probability.

    Geometric transforms (flips, shift/scale, rotate, shear, random crop) move image and mask together;
    photometric ones (brightness, contrast, gamma, invert, cutout) touch the image only.

    Attributes:
        hflip: Probability of a horizontal flip.
        vflip: Probability of a vertical flip (off by default: it turns geology upside down).
        shift_scale: Probability of a shift + scale.
        shift_limit: Largest shift, as a fraction of the side, in each direction.
        scale_limit: Range of the zoom factor.
        rotate: Probability of a rotation.
        rotate_limit: Largest rotation in degrees (either way).
        shear: Probability of a horizontal shear.
        shear_limit: Largest shear angle in degrees (either way).
        brightness: Probability of a brightness change.
        brightness_limit: Brightness factor drawn from ``[1 - limit, 1 + limit]`` (multiplicative), or the
            offset added, drawn from ``[-limit, limit]`` (additive).
        brightness_mode: ``multiplicative`` (torchvision's ColorJitter) or ``additive`` (albumentations'
            RandomBrightness, which the winners used: ``image + beta``).
        contrast: Probability of a contrast change.
        contrast_limit: Contrast factor drawn from ``[1 - limit, 1 + limit]`` (around the image mean).
        gamma: Probability of a gamma change.
        gamma_limit: Range of the exponent ``gamma`` in ``image ** gamma``.
        cutout: Probability of erasing one square of the image (set to 0; the mask is kept).
        cutout_size: Side of the square as a fraction of the image side.
        invert: Probability of inverting the image (``1 - image``).
        random_crop: Probability of a random crop resized back to the original size.
        crop_scale: Range of the crop's area as a fraction of the image area (same aspect ratio).
        fixed_crop: A random ``fixed_crop`` x ``fixed_crop`` window, not resized back (the 11th place's
            crop): every training tile becomes that size (validation and prediction keep the whole tile).
    """

    model_config = ConfigDict(extra="forbid")

    hflip: float = Field(0.5, ge=0.0, le=1.0)
    vflip: float = Field(0.0, ge=0.0, le=1.0)
    shift_scale: float = Field(0.0, ge=0.0, le=1.0)
    shift_limit: float = Field(0.1, ge=0.0, le=1.0)
    scale_limit: tuple[float, float] = (0.9, 1.1)
    rotate: float = Field(0.0, ge=0.0, le=1.0)
    rotate_limit: float = Field(10.0, ge=0.0, le=180.0)
    shear: float = Field(0.0, ge=0.0, le=1.0)
    shear_limit: float = Field(8.0, ge=0.0, lt=90.0)
    brightness: float = Field(0.0, ge=0.0, le=1.0)
    brightness_limit: float = Field(0.2, ge=0.0, le=1.0)
    brightness_mode: Literal["multiplicative", "additive"] = "multiplicative"
    contrast: float = Field(0.0, ge=0.0, le=1.0)
    contrast_limit: float = Field(0.2, ge=0.0, le=1.0)
    gamma: float = Field(0.0, ge=0.0, le=1.0)
    gamma_limit: tuple[float, float] = (0.8, 1.2)
    cutout: float = Field(0.0, ge=0.0, le=1.0)
    cutout_size: float = Field(0.2, gt=0.0, lt=1.0)
    invert: float = Field(0.0, ge=0.0, le=1.0)
    random_crop: float = Field(0.0, ge=0.0, le=1.0)
    crop_scale: tuple[float, float] = (0.7, 1.0)
    fixed_crop: int | None = Field(None, ge=8)

    @model_validator(mode="after")
    def _check_ranges(self) -> AugmentConfig:
        for name, (low, high) in (
            ("scale_limit", self.scale_limit),
            ("gamma_limit", self.gamma_limit),
            ("crop_scale", self.crop_scale),
        ):
            if not 0.0 < low <= high:
                raise ValueError(f"{name} must satisfy 0 < low <= high, got ({low}, {high})")
        if self.crop_scale[1] > 1.0:
            raise ValueError(f"crop_scale must lie in (0, 1], got {self.crop_scale}")
        return self

    @property
    def is_identity(self) -> bool:
        """True when every probability is 0 (no transform can fire)."""
        return self.fixed_crop is None and all(getattr(self, name) == 0.0 for name in PROBABILITY_FIELDS)


PROBABILITY_FIELDS: tuple[str, ...] = (
    "hflip",
    "vflip",
    "shift_scale",
    "rotate",
    "shear",
    "random_crop",
    "brightness",
    "contrast",
    "gamma",
    "invert",
    "cutout",
)
