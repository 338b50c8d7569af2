"""The winners' recipes (issue 14): every shipped recipe file loads, builds its model and takes one
training step (its first stage's loss and optimiser) on two tiles of its training size."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from saltseg.augment import build_transforms
from saltseg.losses import create_loss
from saltseg.models import create_model
from saltseg.training.config import builtin_configs, load_config
from saltseg.training.schedules import build_optimizer

RECIPES = sorted(n for n, c in builtin_configs().items() if Path(c.path).parent.name == "recipes")


def test_the_winners_recipes_are_shipped() -> None:
    assert {
        "first_place_resnext50",
        "first_place_resnet34_resize128",
        "first_place_pseudo_pretrain",
        "first_place_pseudo_finetune",
        "ninth_place_pad",
        "ninth_place_resize",
        "eleventh_place",
        "talk_vanilla_unet_lovasz",
        "talk_dilated_unet_lovasz",
    } <= set(RECIPES)


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_builds_and_takes_one_training_step(name: str) -> None:
    cfg = load_config(name)
    text = Path(builtin_configs()[name].path).read_text()
    assert "Differs" in text and "Run: saltseg" in text  # each file says where it departs and how to run it
    torch.manual_seed(0)
    model = create_model(cfg.model).train()
    augment = build_transforms(cfg.augment)
    pairs = [augment(torch.rand(1, 101, 101), (torch.rand(1, 101, 101) > 0.5).float()) for _ in range(2)]
    x, y = torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    stage = cfg.stages[0]
    loss_fn = create_loss(stage.loss)
    opt = build_optimizer(stage.optimizer, [p for p in model.parameters() if p.requires_grad])
    before = [p.detach().clone() for p in model.parameters()]
    loss = loss_fn(model(x), y)
    assert torch.isfinite(loss)
    opt.zero_grad()
    loss.backward()
    opt.step()
    moved = sum(not torch.equal(a, p.detach()) for a, p in zip(before, model.parameters(), strict=True))
    assert moved > len(before) // 2  # the step reached most of the model
