"""Loss configuration (validated, unknown keys rejected)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, model_validator

from saltseg.utils.validation import ConfigSection

__all__ = ["DeepSupervisionWeights", "LossConfig", "LossName", "PixelLossName"]

PixelLossName = Literal["bce", "dice", "bce_dice", "lovasz", "lovasz_elu", "lovasz_symmetric", "focal"]
"""The single pixel losses."""

LossName = Literal["bce", "dice", "bce_dice", "lovasz", "lovasz_elu", "lovasz_symmetric", "focal", "sum"]
"""Every ``loss.name``: a single pixel loss, or ``sum`` (the weighted sum of ``loss.terms``)."""


class DeepSupervisionWeights(ConfigSection):
    """Weights of the three deep-supervision terms.

    Attributes:
        final: Weight of the pixel loss on ``outputs["mask"]`` (all images).
        salt: Weight of the image-level BCE on ``outputs["salt"]`` against "has salt".
        nonempty: Weight of the pixel loss on ``outputs["mask_nonempty"]``, non-empty images only.
    """

    model_config = ConfigDict(extra="forbid")

    final: float = Field(1.0, ge=0.0)
    salt: float = Field(0.05, ge=0.0)
    nonempty: float = Field(0.5, ge=0.0)


class LossConfig(ConfigSection):
    """Which loss to train with.

    Attributes:
        name: Pixel loss: ``bce``, ``dice``, ``bce_dice`` (``bce_weight*BCE + dice_weight*Dice``),
            ``lovasz`` (hinge), ``lovasz_elu`` (ELU+1 hinge), ``lovasz_symmetric``, ``focal``; or ``sum``,
            the weighted sum of ``terms`` (for example BCE + Lovasz from the first epoch, as the 15th
            place trained, or the 11th place's BCE + 0.5 x Lovasz).
        terms: With ``name: sum``: pixel loss name -> weight, e.g. ``{bce: 1.0, lovasz_symmetric: 1.0}``.
            A stage's ``loss`` may also be written as a list, ``[{name: bce, weight: 1}, {name: lovasz,
            weight: 0.5}]``: the same sum.
        bce_weight: Weight of BCE in ``bce_dice``.
        dice_weight: Weight of Dice in ``bce_dice``.
        focal_gamma: Focusing power of ``focal``.
        per_image: Lovasz losses only: per-image mean (True) or one Lovasz over the whole batch (False).
            Dice is always computed over the batch (stable with empty tiles).
        deep_supervision: If set, combine final, image-level "salt" and non-empty-only mask heads.
    """

    model_config = ConfigDict(extra="forbid")

    name: LossName = "bce_dice"
    bce_weight: float = Field(1.0, ge=0.0)
    dice_weight: float = Field(1.0, ge=0.0)
    focal_gamma: float = Field(2.0, ge=0.0)
    per_image: bool = True
    terms: dict[PixelLossName, float] | None = None
    deep_supervision: DeepSupervisionWeights | None = None

    @model_validator(mode="before")
    @classmethod
    def _from_list(cls, data: object) -> object:
        """``[{name: bce, weight: 1}, {name: lovasz, weight: 0.5}]`` is ``name: sum`` with those terms."""
        if not isinstance(data, list):
            return data
        terms: dict[str, float] = {}
        for item in data:
            if not isinstance(item, dict) or set(item) - {"name", "weight"} or "name" not in item:
                raise ValueError(f"a loss list holds {{name: LOSS, weight: W}} items, got {item!r}")
            if item["name"] in terms:
                raise ValueError(f"loss {item['name']!r} appears twice in the list")
            terms[item["name"]] = item.get("weight", 1.0)
        return {"name": "sum", "terms": terms}

    @model_validator(mode="after")
    def _check_terms(self) -> LossConfig:
        if self.name == "sum":
            if not self.terms:
                raise ValueError("loss 'sum' needs terms, e.g. {bce: 1.0, lovasz_symmetric: 1.0}")
            if any(w < 0 for w in self.terms.values()) or not any(w > 0 for w in self.terms.values()):
                raise ValueError(f"loss terms need weights >= 0, at least one > 0, got {self.terms}")
        elif self.terms is not None:
            raise ValueError(f"loss terms are only used with name: sum (name is {self.name!r})")
        return self
