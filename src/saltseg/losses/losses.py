"""Loss modules and the :func:`create_loss` factory.

Pixel losses are ``nn.Module``s with ``forward(logits, target) -> scalar`` on (B,1,H,W) logits and float
targets in [0, 1]: {0, 1} masks, or soft targets (a teacher's probabilities, for distillation), which BCE,
Dice and focal use as they are and the Lovasz losses round at 0.5 (a hinge needs a sign).
:class:`SegmentationLoss` wraps one of them and takes the model's output dict, adding the optional
deep-supervision terms.
"""

from __future__ import annotations

from typing import ClassVar

import torch.nn.functional as F
from torch import Tensor, nn

from saltseg.losses._functional import (
    Activation,
    binary_focal_loss,
    lovasz_hinge,
    soft_dice_loss,
    symmetric_lovasz,
)
from saltseg.losses.config import DeepSupervisionWeights, LossConfig

__all__ = [
    "LOSS_REGISTRY",
    "BCEDiceLoss",
    "BCELoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszELULoss",
    "LovaszHingeLoss",
    "PixelLoss",
    "SegmentationLoss",
    "SymmetricLovaszLoss",
    "WeightedSumLoss",
    "create_loss",
]


class PixelLoss(nn.Module):
    """Base class of pixel losses: ``forward(logits, target)`` on (B,1,H,W) tensors, float32 scalar out."""

    @classmethod
    def from_config(cls, cfg: LossConfig) -> PixelLoss:
        """Build the loss from a :class:`LossConfig` (subclasses pick the fields they use)."""
        return cls()

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:  # pragma: no cover - abstract
        """Return the scalar loss of ``logits`` against binary ``target``."""
        raise NotImplementedError


class BCELoss(PixelLoss):
    """Binary cross-entropy on logits, mean over pixels."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return mean BCE-with-logits in float32."""
        return F.binary_cross_entropy_with_logits(logits.float(), target.float().reshape(logits.shape))


class DiceLoss(PixelLoss):
    """Soft Dice loss on sigmoid probabilities (see :func:`soft_dice_loss`)."""

    def __init__(self, per_image: bool = False, smooth: float = 1.0) -> None:
        super().__init__()
        self.per_image = per_image
        self.smooth = smooth

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return ``1 - dice``."""
        return soft_dice_loss(logits, target, per_image=self.per_image, smooth=self.smooth)


class BCEDiceLoss(PixelLoss):
    """``bce_weight * BCE + dice_weight * Dice`` (Dice over the batch)."""

    def __init__(self, bce_weight: float = 1.0, dice_weight: float = 1.0, smooth: float = 1.0) -> None:
        super().__init__()
        self.bce_weight = bce_weight
        self.dice_weight = dice_weight
        self.bce = BCELoss()
        self.dice = DiceLoss(per_image=False, smooth=smooth)

    @classmethod
    def from_config(cls, cfg: LossConfig) -> BCEDiceLoss:
        """Use ``cfg.bce_weight`` and ``cfg.dice_weight``."""
        return cls(bce_weight=cfg.bce_weight, dice_weight=cfg.dice_weight)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the weighted sum."""
        return self.bce_weight * self.bce(logits, target) + self.dice_weight * self.dice(logits, target)


class LovaszHingeLoss(PixelLoss):
    """Lovasz hinge (see :func:`lovasz_hinge`)."""

    activation: ClassVar[Activation] = "relu"

    def __init__(self, per_image: bool = True) -> None:
        super().__init__()
        self.per_image = per_image

    @classmethod
    def from_config(cls, cfg: LossConfig) -> LovaszHingeLoss:
        """Use ``cfg.per_image``."""
        return cls(per_image=cfg.per_image)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the Lovasz hinge (soft targets rounded at 0.5)."""
        hard = (target > 0.5).float()
        return lovasz_hinge(logits, hard, per_image=self.per_image, activation=self.activation)


class LovaszELULoss(LovaszHingeLoss):
    """Lovasz hinge with ``elu(errors) + 1`` in place of ``relu(errors)``."""

    activation: ClassVar[Activation] = "elu"


class SymmetricLovaszLoss(LovaszHingeLoss):
    """``(lovasz(logits, y) + lovasz(-logits, 1 - y)) / 2`` (see :func:`symmetric_lovasz`)."""

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the symmetric Lovasz hinge (soft targets rounded at 0.5)."""
        hard = (target > 0.5).float()
        return symmetric_lovasz(logits, hard, per_image=self.per_image, activation="relu")


class FocalLoss(PixelLoss):
    """Binary focal loss without class weighting (see :func:`binary_focal_loss`)."""

    def __init__(self, gamma: float = 2.0) -> None:
        super().__init__()
        self.gamma = gamma

    @classmethod
    def from_config(cls, cfg: LossConfig) -> FocalLoss:
        """Use ``cfg.focal_gamma``."""
        return cls(gamma=cfg.focal_gamma)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the mean focal loss."""
        return binary_focal_loss(logits, target, gamma=self.gamma)


class WeightedSumLoss(PixelLoss):
    """``sum(weight * loss(logits, target))`` over named pixel losses (``loss.name: sum``)."""

    def __init__(self, terms: dict[str, PixelLoss], weights: dict[str, float]) -> None:
        super().__init__()
        self.terms = nn.ModuleDict(terms)
        self.weights = dict(weights)

    @classmethod
    def from_config(cls, cfg: LossConfig) -> WeightedSumLoss:
        """Build every term of ``cfg.terms`` from the same config (so ``per_image`` etc. apply to all)."""
        terms = cfg.terms or {}
        return cls({n: LOSS_REGISTRY[n].from_config(cfg) for n in terms}, terms)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """Return the weighted sum of the terms."""
        return sum(self.weights[n] * loss(logits, target) for n, loss in self.terms.items())  # type: ignore[return-value]


LOSS_REGISTRY: dict[str, type[PixelLoss]] = {
    "bce": BCELoss,
    "dice": DiceLoss,
    "bce_dice": BCEDiceLoss,
    "lovasz": LovaszHingeLoss,
    "lovasz_elu": LovaszELULoss,
    "lovasz_symmetric": SymmetricLovaszLoss,
    "focal": FocalLoss,
    "sum": WeightedSumLoss,
}


def _image_bce(salt_logits: Tensor, nonempty: Tensor) -> Tensor:
    """BCE of image-level logits (B,) or (B,1) against the float "has salt" labels (B,)."""
    salt_logits = salt_logits.float().reshape(-1)
    if salt_logits.numel() != nonempty.numel():
        raise ValueError(
            f'outputs["salt"] must hold one logit per image: got {salt_logits.numel()} for a batch of '
            f"{nonempty.numel()}"
        )
    return F.binary_cross_entropy_with_logits(salt_logits, nonempty.float())


class SegmentationLoss(nn.Module):
    """The training loss on a model's output dict.

    ``forward(outputs, target)``: ``outputs["mask"]`` are (B,1,H,W) pixel logits, ``target`` is a float
    (B,1,H,W) mask in {0, 1}. Without ``"mask"`` (a classifier) the loss is the BCE of ``outputs["salt"]``
    against "has salt". With deep supervision it is ``final * pixel(mask) + salt * BCE(salt) +
    nonempty * pixel(mask_nonempty on non-empty images only)``; the last term is 0 for a batch of empty
    images. Everything is computed in float32.
    """

    def __init__(self, pixel_loss: PixelLoss, deep_supervision: DeepSupervisionWeights | None = None) -> None:
        super().__init__()
        self.pixel_loss = pixel_loss
        self.deep_supervision = deep_supervision

    def components(self, outputs: dict[str, Tensor], target: Tensor) -> dict[str, Tensor]:
        """Unweighted loss terms by name.

        ``final`` (or ``salt`` alone for a classifier without ``"mask"``), plus ``salt`` and ``nonempty``
        under deep supervision. Useful for logging each term.

        Raises:
            ValueError: Missing keys, or logits whose shape differs from the target's.
        """
        target = target.float()
        if target.ndim == 3:
            target = target.unsqueeze(1)
        nonempty = target.reshape(target.shape[0], -1).amax(dim=1) > 0.5  # soft targets: p > 0.5 somewhere

        if "mask" not in outputs:
            if "salt" not in outputs:
                raise ValueError(f'loss needs outputs["mask"] or outputs["salt"], got keys {sorted(outputs)}')
            return {"salt": _image_bce(outputs["salt"], nonempty)}

        mask = outputs["mask"]
        self._check_shape("mask", mask, target)
        parts = {"final": self.pixel_loss(mask.float(), target)}
        if self.deep_supervision is None:
            return parts

        needed = ("salt", "mask_nonempty") if self.deep_supervision.nonempty > 0 else ("salt",)
        missing = [k for k in needed if k not in outputs]
        if missing:
            raise ValueError(
                f"deep supervision is configured but the model outputs lack {missing} "
                f"(got keys {sorted(outputs)}); use a model with deep supervision or set "
                f"loss.deep_supervision to null"
            )
        parts["salt"] = _image_bce(outputs["salt"], nonempty)
        if "mask_nonempty" not in outputs:  # an image head alone (model.image_head)
            return parts
        mask_ne = outputs["mask_nonempty"]
        self._check_shape("mask_nonempty", mask_ne, target)
        if bool(nonempty.any()):
            parts["nonempty"] = self.pixel_loss(mask_ne[nonempty].float(), target[nonempty])
        else:
            # keep the graph connected (DDP-friendly) with an exact zero
            parts["nonempty"] = mask_ne.float().sum() * 0.0
        return parts

    def forward(self, outputs: dict[str, Tensor], target: Tensor) -> Tensor:
        """Return the scalar (weighted) loss."""
        parts = self.components(outputs, target)
        if "final" not in parts:
            return parts["salt"]
        ds = self.deep_supervision
        if ds is None:
            return parts["final"]
        total = ds.final * parts["final"] + ds.salt * parts["salt"]
        return total + ds.nonempty * parts["nonempty"] if "nonempty" in parts else total

    @staticmethod
    def _check_shape(key: str, logits: Tensor, target: Tensor) -> None:
        if logits.shape != target.shape:
            raise ValueError(
                f'outputs["{key}"] has shape {tuple(logits.shape)} but the target has {tuple(target.shape)}; '
                f"crop the logits to the unpadded tile before the loss"
            )


def create_loss(cfg: LossConfig) -> SegmentationLoss:
    """Build the training loss described by ``cfg``.

    Args:
        cfg: The loss configuration.

    Returns:
        A :class:`SegmentationLoss` whose ``forward(outputs, target)`` returns a float32 scalar.
    """
    pixel_loss = LOSS_REGISTRY[cfg.name].from_config(cfg)
    return SegmentationLoss(pixel_loss, cfg.deep_supervision)
