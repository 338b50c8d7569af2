"""``saltseg recipe``: a multi-stage recipe in one command (issue 14): models, their ensemble, pseudo-labels,
a pretraining on them, every fold fine-tuned from it, the blend and the submission; resume; bad files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from saltseg.cli import main
from saltseg.errors import ConfigError
from saltseg.recipe import builtin_recipes, load_recipe
from saltseg.training.config import builtin_configs, load_config

TINY = """\
name: {name}
model: {{arch: vanilla_unet, base_channels: 4, depth: 2, attention: null, hypercolumn: false}}
data: {{folds: 2}}
stages:
  - {{name: one, epochs: 4, loss: {{name: bce}}, optimizer: {{name: adam, lr: 0.003}}}}
train: {{batch_size: 16, val_tta: false}}
"""

RECIPE = """\
name: tiny_first_place
steps:
  - {{name: a, train: {a}}}
  - {{name: b, train: {b}, overrides: [model.base_channels=6]}}
  - {{name: teacher, ensemble: [a, b]}}
  - {{name: pseudo, pseudo: teacher, confidence: 0.0}}
  - {{name: pretrain, train: {a}, folds: [0], pseudo_labels: pseudo}}
  - {{name: finetune, train: {a}, init_from: pretrain}}
  - {{name: final, ensemble: [finetune, a, b], weights: [0.5, 0.25, 0.25]}}
submission: final
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from saltseg.data.synth import write_kaggle_layout

    return write_kaggle_layout(tmp_path_factory.mktemp("recipe") / "data", n_train=40, n_test=6, seed=7)


def write_recipe(tmp_path: Path) -> Path:
    for name in ("a", "b"):
        (tmp_path / f"{name}.yaml").write_text(TINY.format(name=name))
    path = tmp_path / "recipe.yaml"
    path.write_text(RECIPE.format(a=tmp_path / "a.yaml", b=tmp_path / "b.yaml"))
    return path


def test_a_whole_recipe_runs_scaled_and_resumes(data: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    recipe = write_recipe(tmp_path)
    out = tmp_path / "out"
    argv = ["recipe", str(recipe), "--data", str(data), "--test", str(data), "--out", str(out)]
    assert main([*argv, "--scale", "0.5", "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "submission:" in printed and "pseudo-labelled tiles" in printed
    state = json.loads((out / "recipe.json").read_text())
    assert list(state["steps"]) == ["a", "b", "teacher", "pseudo", "pretrain", "finetune", "final"]
    assert state["steps"]["a"]["epochs"] == [2]  # 4 epochs x 0.5
    assert state["steps"]["pretrain"]["folds"] == [0] and state["steps"]["pseudo"]["selected"] > 0
    assert load_config(out / "b" / "config.yaml").model.base_channels == 6
    pretrain_cfg = load_config(out / "pretrain" / "config.yaml")
    assert pretrain_cfg.data.pseudo_labels == str(out / "pseudo" / "pseudo")
    finetune_cfg = load_config(out / "finetune" / "config.yaml")
    assert finetune_cfg.train.init_from == str(out / "pretrain" / "fold0" / "best.safetensors")
    weights = json.loads((out / "final" / "ensemble.json").read_text())
    assert [round(m["weight"], 3) for m in weights["members"]] == [0.5, 0.25, 0.25]
    assert len((out / "submission.csv").read_text().splitlines()) == 7
    # resumed: nothing is trained again
    stamp = (out / "a" / "fold0" / "best.safetensors").stat().st_mtime_ns
    assert main([*argv, "--scale", "0.5", "--resume", "--no-progress"]) == 0
    assert (out / "a" / "fold0" / "best.safetensors").stat().st_mtime_ns == stamp
    assert main([*argv, "--scale", "0.25", "--resume"]) == 2  # another scale: refused
    assert main(argv) == 2  # not empty, no --resume


def test_a_rehearsal_on_one_fold_trains_fold_0_in_every_step(data: Path, tmp_path: Path) -> None:
    recipe = write_recipe(tmp_path)
    out = tmp_path / "fold0"
    argv = ["recipe", str(recipe), "--data", str(data), "--test", str(data), "--out", str(out)]
    assert main([*argv, "--scale", "0.25", "--folds", "0", "--no-progress"]) == 0
    state = json.loads((out / "recipe.json").read_text())
    trained = [name for name, step in state["steps"].items() if step["kind"] == "train"]
    assert trained == ["a", "b", "pretrain", "finetune"] and state["folds"] == [0]
    for name in trained:
        assert state["steps"][name]["folds"] == [0]
        assert sorted(p.name for p in (out / name).glob("fold[0-9]*")) == ["fold0"]
    assert len((out / "submission.csv").read_text().splitlines()) == 7
    assert main([*argv, "--scale", "0.25", "--resume"]) == 2  # all folds now: another plan, refused


def test_recipe_files_are_checked(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.yaml"
    for text, message in [
        ("name: x\nsteps:\n  - {name: a, ensemble: [b]}\n", "not an earlier step"),
        ("name: x\nsteps:\n  - {name: a, train: cpu_fast, pseudo: a}\n", "exactly one of"),
        (
            "name: x\nsteps:\n  - {name: a, train: cpu_fast}\n  - {name: b, train: cpu_fast, init_from: c}\n",
            "init_from",
        ),
        ("name: x\nsteps:\n  - {name: a, train: cpu_fast, epochz: 3}\n", "epochz"),
        ("name: x\nsteps:\n  - {name: a, train: cpu_fast}\nsubmission: nope\n", "submission"),
    ]:
        bad.write_text(text)
        with pytest.raises(ConfigError, match=message):
            load_recipe(bad)
    assert main(["recipe", "no_such_recipe", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "first_place" in capsys.readouterr().err


def test_the_shipped_recipes_name_shipped_configs() -> None:
    assert "first_place" in builtin_recipes()
    recipe = load_recipe("first_place")
    trained = [s.train for s in recipe.steps if s.train]
    assert trained and all(t in builtin_configs() for t in trained)
    assert recipe.submission == "final"
