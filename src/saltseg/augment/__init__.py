"""Paired image/mask augmentations for seismic tiles (torchvision ``transforms.v2``).

:func:`build_transforms` turns an :class:`AugmentConfig` into ``fn(image, mask) -> (image, mask)``: geometric
transforms move image and mask identically, photometric ones change the image only, and all randomness
comes from torch's global RNG.
"""

from saltseg.augment.config import AugmentConfig
from saltseg.augment.transforms import PairTransform, RandomGamma, build_transforms

__all__ = ["AugmentConfig", "PairTransform", "RandomGamma", "build_transforms"]
