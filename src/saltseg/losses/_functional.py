"""Pure loss functions on tensors (no modules, no configs).

All functions take raw logits and binary labels in ``{0, 1}`` and return a scalar tensor. They compute in
float32 whatever the dtype of the logits (bf16 logits are cast first).

The Lovasz hinge follows Berman et al., "The Lovasz-Softmax loss" (CVPR 2018): pixel errors
``1 - logit * sign`` (``sign = 2y - 1``) are sorted in decreasing order and dotted with the gradient of the
Lovasz extension of the Jaccard loss. Two variants from the TGS Salt winning solutions are provided: the
ELU+1 hinge (``elu(errors) + 1`` instead of ``relu(errors)``, smooth and never flat) and the symmetric
Lovasz, the mean of the loss on salt and on the inverted problem (background as foreground).

Empty truth: with no positive pixel the Jaccard gradient is ``[1, 0, 0, ...]`` (the intersection is 0 and the
union grows from 1), so the per-image loss is the hinge of the single worst pixel, ``relu(1 + max(logits))``
(``elu(1 + max(logits)) + 1`` for the ELU variant): finite, and it pushes the most confident false positive
down. It is defined for every image, so ``per_image=True`` needs no special case.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.losses._functional import focal_loss_with_logits, soft_dice_score
from torch import Tensor

__all__ = [
    "binary_focal_loss",
    "lovasz_grad",
    "lovasz_hinge",
    "lovasz_hinge_flat",
    "soft_dice_loss",
    "symmetric_lovasz",
]

Activation = Literal["relu", "elu"]


def _flatten_pair(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Reshape logits and labels of shape (B,1,H,W) or (B,H,W) to float32 (B, H*W)."""
    if logits.numel() != labels.numel():
        raise ValueError(
            f"logits and labels must have the same number of elements, got shapes "
            f"{tuple(logits.shape)} and {tuple(labels.shape)}"
        )
    batch = logits.shape[0] if logits.ndim > 1 else 1
    return logits.float().reshape(batch, -1), labels.float().reshape(batch, -1)


def lovasz_grad(gt_sorted: Tensor) -> Tensor:
    """Gradient of the Lovasz extension of the Jaccard loss w.r.t. sorted errors.

    Args:
        gt_sorted: Binary labels sorted by decreasing error, shape (N,) or (B, N) (sorted along the last dim).

    Returns:
        Float32 tensor of the same shape: ``J[i] - J[i-1]`` where ``J[i]`` is the Jaccard loss of predicting
        the first ``i+1`` sorted pixels as positive.
    """
    gt = gt_sorted.float()
    gts = gt.sum(dim=-1, keepdim=True)
    intersection = gts - gt.cumsum(dim=-1)
    union = gts + (1.0 - gt).cumsum(dim=-1)
    jaccard = 1.0 - intersection / union
    return torch.cat([jaccard[..., :1], jaccard[..., 1:] - jaccard[..., :-1]], dim=-1)


def _hinge(errors: Tensor, activation: Activation) -> Tensor:
    if activation == "relu":
        return F.relu(errors)
    if activation == "elu":
        return F.elu(errors) + 1.0
    raise ValueError(f"activation must be 'relu' or 'elu', got {activation!r}")


def lovasz_hinge_flat(logits: Tensor, labels: Tensor, activation: Activation = "relu") -> Tensor:
    """Lovasz hinge of one set of pixels (all pixels pooled together).

    Args:
        logits: Pixel logits of any shape (flattened).
        labels: Binary labels, same number of elements.
        activation: ``"relu"`` for the standard hinge, ``"elu"`` for ``elu(errors) + 1``.

    Returns:
        Scalar float32 loss (0 for an empty input).
    """
    logits = logits.float().reshape(-1)
    labels = labels.float().reshape(-1)
    if logits.numel() == 0:
        return logits.sum() * 0.0
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, descending=True)
    grad = lovasz_grad(labels[perm])
    return torch.dot(_hinge(errors_sorted, activation), grad)


def lovasz_hinge(
    logits: Tensor, labels: Tensor, per_image: bool = True, activation: Activation = "relu"
) -> Tensor:
    """Binary Lovasz hinge loss.

    Args:
        logits: Pixel logits, shape (B,1,H,W) or (B,H,W).
        labels: Binary labels, same shape.
        per_image: Compute the loss per image and average (True), or over all pixels of the batch at once.
        activation: ``"relu"`` (standard) or ``"elu"`` (ELU+1 variant).

    Returns:
        Scalar float32 loss.
    """
    flat_logits, flat_labels = _flatten_pair(logits, labels)
    if not per_image:
        return lovasz_hinge_flat(flat_logits, flat_labels, activation)
    if flat_logits.numel() == 0:
        return flat_logits.sum() * 0.0
    signs = 2.0 * flat_labels - 1.0
    errors = 1.0 - flat_logits * signs
    errors_sorted, perm = torch.sort(errors, dim=1, descending=True)
    grad = lovasz_grad(torch.gather(flat_labels, 1, perm))
    return (_hinge(errors_sorted, activation) * grad).sum(dim=1).mean()


def symmetric_lovasz(
    logits: Tensor, labels: Tensor, per_image: bool = True, activation: Activation = "relu"
) -> Tensor:
    """Symmetric Lovasz: ``(lovasz(logits, y) + lovasz(-logits, 1 - y)) / 2``.

    Args:
        logits: Pixel logits, shape (B,1,H,W) or (B,H,W).
        labels: Binary labels, same shape.
        per_image: See :func:`lovasz_hinge`.
        activation: See :func:`lovasz_hinge`.

    Returns:
        Scalar float32 loss.
    """
    labels = labels.float()
    pos = lovasz_hinge(logits, labels, per_image=per_image, activation=activation)
    neg = lovasz_hinge(-logits.float(), 1.0 - labels, per_image=per_image, activation=activation)
    return (pos + neg) / 2.0


def soft_dice_loss(logits: Tensor, labels: Tensor, per_image: bool = False, smooth: float = 1.0) -> Tensor:
    """Soft Dice loss ``1 - dice`` on sigmoid probabilities (smp's ``soft_dice_score``).

    The score is ``(I + smooth) / ((P + T) / 2 + smooth)`` with ``I = sum(p*y)``, ``P = sum(p)``,
    ``T = sum(y)``; with ``smooth > 0`` it is defined for empty truths (an empty prediction scores 1).

    Args:
        logits: Pixel logits, shape (B,1,H,W) or (B,H,W).
        labels: Binary labels, same shape.
        per_image: Score each image and average (True) or score the batch as one set of pixels (False).
        smooth: Additive smoothing.

    Returns:
        Scalar float32 loss.
    """
    flat_logits, flat_labels = _flatten_pair(logits, labels)
    probs = F.logsigmoid(flat_logits).exp()
    dims = (1,) if per_image else None
    score = soft_dice_score(probs, flat_labels, smooth=smooth, eps=1e-7, dims=dims)
    return (1.0 - score).mean()


def binary_focal_loss(
    logits: Tensor, labels: Tensor, gamma: float = 2.0, alpha: float | None = None
) -> Tensor:
    """Binary focal loss ``mean((1 - p_t)^gamma * BCE)`` (smp's ``focal_loss_with_logits``).

    Args:
        logits: Pixel logits of any shape.
        labels: Binary labels, same shape.
        gamma: Focusing power (0 gives BCE).
        alpha: Optional positive-class weight in [0, 1] (``alpha*y + (1-alpha)*(1-y)``); None: none.

    Returns:
        Scalar float32 loss.
    """
    return focal_loss_with_logits(
        logits.float(), labels.float().reshape(logits.shape), gamma=gamma, alpha=alpha, reduction="mean"
    )
