"""Losses against values worked out by hand on tiny inputs, plus deep supervision and dtype handling."""

from __future__ import annotations

import math
import typing

import pydantic
import pytest
import torch
import torch.nn.functional as F

from saltseg.losses import (
    LOSS_REGISTRY,
    DeepSupervisionWeights,
    LossConfig,
    binary_focal_loss,
    create_loss,
    lovasz_grad,
    lovasz_hinge,
    lovasz_hinge_flat,
    soft_dice_loss,
    symmetric_lovasz,
)
from saltseg.losses.config import LossName

LN3 = math.log(3.0)


def t(values: list[float]) -> torch.Tensor:
    """A (1,1,2,2) tensor from four values."""
    return torch.tensor(values, dtype=torch.float32).reshape(1, 1, 2, 2)


# probabilities [0.5, 0.75, 0.75, 0.5] against labels [1, 1, 0, 0]
BCE_LOGITS = t([0.0, LN3, LN3, 0.0])
BCE_LABELS = t([1.0, 1.0, 0.0, 0.0])
BCE_BY_HAND = (math.log(2) + math.log(4 / 3) + math.log(4) + math.log(2)) / 4
# Dice: I = 0.5 + 0.75 = 1.25, P = 2.5, T = 2 -> score (I + 1) / ((P + T) / 2 + 1) = 2.25 / 3.25
DICE_BY_HAND = 1 - 2.25 / 3.25

# Lovasz example: errors 1 - logit*sign = [-1, 0.5, 1.5, 2.0] (no ties);
# sorted [2.0 (y=1), 1.5 (y=0), 0.5 (y=0), -1 (y=1)] -> gt_sorted [1, 0, 0, 1]
# intersection [1,1,1,0], union [2,3,4,4], J = [1/2, 2/3, 3/4, 1], grad = [1/2, 1/6, 1/12, 1/4]
LOV_LOGITS = t([2.0, -0.5, 0.5, -1.0])
LOV_LABELS = t([1.0, 0.0, 0.0, 1.0])
LOV_GRAD = [1 / 2, 1 / 6, 1 / 12, 1 / 4]
LOV_RELU = 2.0 / 2 + 1.5 / 6 + 0.5 / 12 + 0.0 / 4
LOV_ELU = 3.0 / 2 + 2.5 / 6 + 1.5 / 12 + math.exp(-1.0) / 4
# Inverted problem: same errors, gt_sorted [0, 1, 1, 0]: intersection [2,1,0,0], union [3,3,3,4],
# J = [1/3, 2/3, 1, 1], grad = [1/3, 1/3, 1/3, 0] -> (2 + 1.5 + 0.5) / 3
LOV_INVERTED = 4.0 / 3


def close(a: torch.Tensor, b: float, tol: float = 1e-5) -> bool:
    return abs(float(a) - b) < tol


def test_bce_by_hand() -> None:
    loss = create_loss(LossConfig(name="bce"))({"mask": BCE_LOGITS}, BCE_LABELS)
    assert close(loss, BCE_BY_HAND)


def test_dice_by_hand() -> None:
    assert close(soft_dice_loss(BCE_LOGITS, BCE_LABELS), DICE_BY_HAND)
    # smooth=0 gives the plain Dice 2I / (P + T) = 2.5 / 4.5
    assert close(soft_dice_loss(BCE_LOGITS, BCE_LABELS, smooth=0.0), 1 - 2.5 / 4.5)
    assert close(create_loss(LossConfig(name="dice"))({"mask": BCE_LOGITS}, BCE_LABELS), DICE_BY_HAND)


def test_dice_per_image_vs_batch() -> None:
    logits = torch.cat([BCE_LOGITS, torch.full_like(BCE_LOGITS, -2.0)])
    labels = torch.cat([BCE_LABELS, torch.zeros_like(BCE_LABELS)])
    p = torch.sigmoid(torch.tensor(-2.0)).item()
    empty_image = 1 - 1 / (4 * p / 2 + 1)
    assert close(soft_dice_loss(logits, labels, per_image=True), (DICE_BY_HAND + empty_image) / 2)
    batch = 1 - (1.25 + 1) / ((2.5 + 4 * p + 2) / 2 + 1)
    assert close(soft_dice_loss(logits, labels, per_image=False), batch)


def test_bce_dice_weighting() -> None:
    cfg = LossConfig(name="bce_dice", bce_weight=0.3, dice_weight=2.0)
    loss = create_loss(cfg)({"mask": BCE_LOGITS}, BCE_LABELS)
    assert close(loss, 0.3 * BCE_BY_HAND + 2.0 * DICE_BY_HAND)
    default = create_loss(LossConfig())({"mask": BCE_LOGITS}, BCE_LABELS)
    assert close(default, BCE_BY_HAND + DICE_BY_HAND)


def test_focal_by_hand() -> None:
    # per pixel (1 - pt)^2 * bce with pt = [0.5, 0.75, 0.25, 0.5]
    by_hand = (0.25 * math.log(2) + 0.0625 * math.log(4 / 3) + 0.5625 * math.log(4) + 0.25 * math.log(2)) / 4
    assert close(binary_focal_loss(BCE_LOGITS, BCE_LABELS, gamma=2.0), by_hand)
    assert close(create_loss(LossConfig(name="focal"))({"mask": BCE_LOGITS}, BCE_LABELS), by_hand)
    # gamma = 0 is BCE
    assert close(binary_focal_loss(BCE_LOGITS, BCE_LABELS, gamma=0.0), BCE_BY_HAND)
    cfg = LossConfig(name="focal", focal_gamma=0.0)
    assert close(create_loss(cfg)({"mask": BCE_LOGITS}, BCE_LABELS), BCE_BY_HAND)


def test_lovasz_grad_by_hand() -> None:
    grad = lovasz_grad(torch.tensor([1.0, 0.0, 0.0, 1.0]))
    assert torch.allclose(grad, torch.tensor(LOV_GRAD))
    # batched along the last dim
    batched = lovasz_grad(torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 1.0, 0.0]]))
    assert torch.allclose(batched[1], torch.tensor([1 / 3, 1 / 3, 1 / 3, 0.0]))
    # empty truth: all the weight on the worst pixel
    assert torch.allclose(lovasz_grad(torch.zeros(4)), torch.tensor([1.0, 0.0, 0.0, 0.0]))


def test_lovasz_hinge_by_hand() -> None:
    assert close(lovasz_hinge_flat(LOV_LOGITS, LOV_LABELS), LOV_RELU)
    assert close(lovasz_hinge_flat(LOV_LOGITS, LOV_LABELS, activation="elu"), LOV_ELU)
    assert close(lovasz_hinge(LOV_LOGITS, LOV_LABELS), LOV_RELU)
    assert close(lovasz_hinge(LOV_LOGITS[:, 0], LOV_LABELS[:, 0], activation="elu"), LOV_ELU)  # (B,H,W)
    assert close(create_loss(LossConfig(name="lovasz"))({"mask": LOV_LOGITS}, LOV_LABELS), LOV_RELU)
    assert close(create_loss(LossConfig(name="lovasz_elu"))({"mask": LOV_LOGITS}, LOV_LABELS), LOV_ELU)
    with pytest.raises(ValueError, match="activation"):
        lovasz_hinge(LOV_LOGITS, LOV_LABELS, activation="gelu")  # type: ignore[arg-type]


def test_lovasz_vertices_equal_jaccard() -> None:
    # errors in {0, 1} mark a set M of mispredicted pixels: the loss is the Jaccard loss of that prediction.
    # labels [1,0,1,0,0], M = {0, 3} -> prediction [0,0,1,1,0]: IoU 1/3, loss 2/3
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0]).reshape(1, 1, 1, 5)
    logits = torch.tensor([0.0, -1.0, 1.0, 0.0, -1.0]).reshape(1, 1, 1, 5)
    assert close(lovasz_hinge(logits, labels), 2 / 3)
    # logits 0: every pixel mispredicted, loss 1
    assert close(lovasz_hinge(torch.zeros_like(labels), labels), 1.0)
    # confident correct predictions: zero loss
    assert close(lovasz_hinge(10 * (2 * labels - 1), labels), 0.0)


def test_lovasz_empty_truth() -> None:
    logits = t([0.5, -1.0, -2.0, 0.2])
    empty = torch.zeros_like(logits)
    assert close(lovasz_hinge(logits, empty), 1.5)  # relu(1 + max logit)
    assert close(lovasz_hinge(logits, empty, activation="elu"), 2.5)
    assert close(lovasz_hinge(torch.full_like(logits, -5.0), empty), 0.0)


def test_symmetric_lovasz_by_hand() -> None:
    assert close(lovasz_hinge(-LOV_LOGITS, 1 - LOV_LABELS), LOV_INVERTED)
    expected = (LOV_RELU + LOV_INVERTED) / 2
    assert close(symmetric_lovasz(LOV_LOGITS, LOV_LABELS), expected)
    loss = create_loss(LossConfig(name="lovasz_symmetric"))({"mask": LOV_LOGITS}, LOV_LABELS)
    assert close(loss, expected)


def test_lovasz_per_image_vs_batch() -> None:
    logits = torch.cat([LOV_LOGITS, t([0.5, -1.0, -2.0, 0.2])])
    labels = torch.cat([LOV_LABELS, torch.zeros(1, 1, 2, 2)])
    per_image = lovasz_hinge(logits, labels, per_image=True)
    assert close(per_image, (LOV_RELU + 1.5) / 2)
    batch = lovasz_hinge(logits, labels, per_image=False)
    assert close(batch, float(lovasz_hinge_flat(logits, labels)))
    assert abs(float(per_image) - float(batch)) > 0.01
    cfg = LossConfig(name="lovasz", per_image=False)
    assert close(create_loss(cfg)({"mask": logits}, labels), float(batch))
    # a batch of one image: both agree
    assert close(lovasz_hinge(LOV_LOGITS, LOV_LABELS, per_image=False), LOV_RELU)


def test_lovasz_vectorised_per_image_matches_loop() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 1, 7, 7, generator=gen)
    labels = (torch.rand(5, 1, 7, 7, generator=gen) > 0.6).float()
    labels[1] = 0
    labels[2] = 1
    for activation in ("relu", "elu"):
        loop = torch.stack(
            [lovasz_hinge_flat(lg, lb, activation) for lg, lb in zip(logits, labels, strict=True)]
        )
        vectorised = lovasz_hinge(logits, labels, per_image=True, activation=activation)
        assert torch.allclose(vectorised, loop.mean(), atol=1e-6)


def _ds_outputs(batch: int, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    out = {
        "mask": torch.randn(batch, 1, 4, 4, generator=gen),
        "salt": torch.randn(batch, generator=gen),
        "mask_nonempty": torch.randn(batch, 1, 4, 4, generator=gen),
    }
    return {k: v.requires_grad_(requires_grad) for k, v in out.items()}


def test_deep_supervision_weighted_sum() -> None:
    weights = DeepSupervisionWeights(final=0.7, salt=0.2, nonempty=0.4)
    loss_fn = create_loss(LossConfig(name="lovasz", deep_supervision=weights))
    outputs = _ds_outputs(3, requires_grad=True)
    target = torch.zeros(3, 1, 4, 4)
    target[1, 0, :2] = 1
    target[2, 0, 1:, 1:] = 1
    final = lovasz_hinge(outputs["mask"], target)
    salt = F.binary_cross_entropy_with_logits(outputs["salt"], torch.tensor([0.0, 1.0, 1.0]))
    nonempty = lovasz_hinge(outputs["mask_nonempty"][1:], target[1:])
    loss = loss_fn(outputs, target)
    assert torch.allclose(loss, 0.7 * final + 0.2 * salt + 0.4 * nonempty)
    parts = loss_fn.components(outputs, target)
    assert set(parts) == {"final", "salt", "nonempty"}
    assert torch.allclose(parts["nonempty"], nonempty)
    # the empty image's mask_nonempty logits do not matter
    loss.backward()
    grad = outputs["mask_nonempty"].grad
    assert grad is not None and torch.all(grad[0] == 0) and grad[1:].abs().sum() > 0
    changed = dict(outputs)
    changed["mask_nonempty"] = outputs["mask_nonempty"].detach().clone()
    changed["mask_nonempty"][0] = 100.0
    assert torch.allclose(loss_fn(changed, target), loss)


def test_deep_supervision_all_empty_batch() -> None:
    loss_fn = create_loss(LossConfig(name="bce_dice", deep_supervision=DeepSupervisionWeights()))
    outputs = _ds_outputs(2, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    parts = loss_fn.components(outputs, target)
    assert torch.equal(parts["nonempty"].detach(), torch.tensor(0.0))
    loss = loss_fn(outputs, target)
    assert torch.isfinite(loss)
    assert torch.allclose(loss, 1.0 * parts["final"] + 0.05 * parts["salt"])
    loss.backward()
    assert torch.all(outputs["mask_nonempty"].grad == 0)


def test_deep_supervision_missing_keys() -> None:
    loss_fn = create_loss(LossConfig(deep_supervision=DeepSupervisionWeights()))
    with pytest.raises(ValueError, match="mask_nonempty"):
        loss_fn({"mask": torch.zeros(1, 1, 4, 4), "salt": torch.zeros(1)}, torch.zeros(1, 1, 4, 4))


def test_salt_only_classifier_loss() -> None:
    target = torch.zeros(3, 1, 4, 4)
    target[0, 0, 0, 0] = 1
    salt = torch.tensor([1.5, -0.5, 0.3])
    expected = F.binary_cross_entropy_with_logits(salt, torch.tensor([1.0, 0.0, 0.0]))
    for cfg in (LossConfig(), LossConfig(name="lovasz", deep_supervision=DeepSupervisionWeights())):
        assert torch.allclose(create_loss(cfg)({"salt": salt}, target), expected)
        assert torch.allclose(create_loss(cfg)({"salt": salt[:, None]}, target), expected)  # (B,1)
    with pytest.raises(ValueError, match="mask"):
        create_loss(LossConfig())({}, target)


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="crop"):
        create_loss(LossConfig())({"mask": torch.zeros(1, 1, 128, 128)}, torch.zeros(1, 1, 101, 101))


def _loss_config(name: str, **kwargs: object) -> LossConfig:
    terms = {"bce": 1.0, "lovasz_symmetric": 0.5} if name == "sum" else None
    return LossConfig(name=name, terms=terms, **kwargs)


@pytest.mark.parametrize("name", typing.get_args(LossName))
def test_gradients_finite_and_bf16(name: str) -> None:
    loss_fn = create_loss(_loss_config(name, deep_supervision=DeepSupervisionWeights()))
    target = torch.zeros(3, 1, 8, 8)
    target[1, 0, 2:6, 2:6] = 1
    target[2] = 1
    for dtype in (torch.float32, torch.bfloat16):
        outputs = {k: (v * 3).to(dtype).detach().requires_grad_() for k, v in _ds_outputs(3).items()}
        outputs["mask"] = torch.randn(3, 1, 8, 8).mul(3).to(dtype).requires_grad_()
        outputs["mask_nonempty"] = torch.randn(3, 1, 8, 8).to(dtype).requires_grad_()
        loss = loss_fn(outputs, target.to(dtype))
        assert loss.dtype == torch.float32 and loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        for value in outputs.values():
            assert value.grad is not None and torch.isfinite(value.grad.float()).all()
    # bf16 gives (nearly) the float32 value of the bf16-rounded logits
    logits = torch.randn(2, 1, 8, 8).to(torch.bfloat16)
    a = create_loss(_loss_config(name))({"mask": logits}, target[1:])
    b = create_loss(_loss_config(name))({"mask": logits.float()}, target[1:])
    assert torch.allclose(a, b)


def test_registry_and_config() -> None:
    assert set(LOSS_REGISTRY) == set(typing.get_args(LossName))
    cfg = LossConfig()
    assert (cfg.name, cfg.bce_weight, cfg.dice_weight, cfg.focal_gamma, cfg.per_image) == (
        "bce_dice",
        1.0,
        1.0,
        2.0,
        True,
    )
    assert cfg.deep_supervision is None
    ds = DeepSupervisionWeights()
    assert (ds.final, ds.salt, ds.nonempty) == (1.0, 0.05, 0.5)
    with pytest.raises(pydantic.ValidationError):
        LossConfig(nme="bce")  # type: ignore[call-arg]
    with pytest.raises(pydantic.ValidationError):
        LossConfig(name="iou")  # type: ignore[arg-type]
    with pytest.raises(pydantic.ValidationError):
        DeepSupervisionWeights(extra=1.0)  # type: ignore[call-arg]
    parsed = LossConfig.model_validate({"name": "lovasz", "deep_supervision": {"salt": 0.1}})
    assert parsed.deep_supervision == DeepSupervisionWeights(salt=0.1)


def test_weighted_sum_is_the_sum_of_its_terms() -> None:
    torch.manual_seed(0)
    logits = torch.randn(4, 1, 16, 16)
    target = (torch.rand(4, 1, 16, 16) > 0.6).float()
    target[0] = 0
    out = {"mask": logits}
    total = create_loss(LossConfig(name="sum", terms={"bce": 1.0, "lovasz_symmetric": 0.5}))(out, target)
    bce = create_loss(LossConfig(name="bce"))(out, target)
    lovasz = create_loss(LossConfig(name="lovasz_symmetric"))(out, target)
    assert torch.allclose(total, bce + 0.5 * lovasz)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"name": "sum"}, "needs terms"),
        ({"name": "sum", "terms": {"bce": 0.0}}, "at least one > 0"),
        ({"name": "bce", "terms": {"bce": 1.0}}, "only used with name: sum"),
        ({"name": "sum", "terms": {"bcee": 1.0}}, "terms"),
    ],
)
def test_weighted_sum_config_errors(raw: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LossConfig.model_validate(raw)


def test_soft_targets_bce_uses_them_lovasz_rounds_them() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 1, 8, 8)
    soft = torch.rand(2, 1, 8, 8)
    hard = (soft > 0.5).float()
    bce = create_loss(LossConfig(name="bce"))
    assert not torch.allclose(bce({"mask": logits}, soft), bce({"mask": logits}, hard))
    for name in ("lovasz", "lovasz_symmetric"):
        lov = create_loss(LossConfig(name=name))
        assert torch.allclose(lov({"mask": logits}, soft), lov({"mask": logits}, hard))


def test_a_loss_list_is_the_weighted_sum() -> None:
    from saltseg.losses import LossConfig, create_loss

    listed = LossConfig.model_validate([{"name": "bce", "weight": 1.0}, {"name": "lovasz", "weight": 0.5}])
    assert listed.name == "sum" and listed.terms == {"bce": 1.0, "lovasz": 0.5}
    logits = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    target = (torch.rand(3, 1, 16, 16, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    by_hand = create_loss(LossConfig(name="bce"))({"mask": logits}, target) + 0.5 * create_loss(
        LossConfig(name="lovasz")
    )({"mask": logits}, target)
    assert torch.allclose(create_loss(listed)({"mask": logits}, target), by_hand, atol=1e-6)
    for bad in (
        [{"name": "bce", "w": 1}],
        [{"name": "bce"}, {"name": "bce"}],
        [{"name": "nope", "weight": 1}],
    ):
        with pytest.raises(pydantic.ValidationError):
            LossConfig.model_validate(bad)
