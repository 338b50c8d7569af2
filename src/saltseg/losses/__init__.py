"""Training losses for salt segmentation.

Pure functions live in :mod:`saltseg.losses._functional` (Lovasz hinge and its ELU+1 and symmetric
variants, soft Dice, focal), ``nn.Module`` wrappers in :mod:`saltseg.losses.losses`, and the validated
config in :mod:`saltseg.losses.config`. :func:`create_loss` turns a :class:`LossConfig` into a module taking
the model's output dict (``"mask"``, and optionally ``"salt"`` and ``"mask_nonempty"``) and the target mask.

Padded centre: models pad the 101x101 tiles (e.g. to 128x128) internally and crop their logits back to
101x101 before returning them, so every loss here is computed on the unpadded tile only; a shape mismatch
between logits and target raises ``ValueError``.
"""

from saltseg.losses._functional import (
    binary_focal_loss,
    lovasz_grad,
    lovasz_hinge,
    lovasz_hinge_flat,
    soft_dice_loss,
    symmetric_lovasz,
)
from saltseg.losses.config import DeepSupervisionWeights, LossConfig
from saltseg.losses.losses import (
    LOSS_REGISTRY,
    BCEDiceLoss,
    BCELoss,
    DiceLoss,
    FocalLoss,
    LovaszELULoss,
    LovaszHingeLoss,
    PixelLoss,
    SegmentationLoss,
    SymmetricLovaszLoss,
    create_loss,
)

__all__ = [
    "LOSS_REGISTRY",
    "BCEDiceLoss",
    "BCELoss",
    "DeepSupervisionWeights",
    "DiceLoss",
    "FocalLoss",
    "LossConfig",
    "LovaszELULoss",
    "LovaszHingeLoss",
    "PixelLoss",
    "SegmentationLoss",
    "SymmetricLovaszLoss",
    "binary_focal_loss",
    "create_loss",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_hinge_flat",
    "soft_dice_loss",
    "symmetric_lovasz",
]
