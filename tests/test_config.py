"""Tests of saltseg.training.config: YAML loading, strict validation, overrides, the saved config, and
the CLI's one-line error for a bad config."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.cli import main
from saltseg.errors import ConfigError
from saltseg.training.config import (
    ExperimentConfig,
    apply_overrides,
    dump_config,
    load_config,
    parse_config,
)

GOOD = {
    "name": "good",
    "seed": 3,
    "data": {"folds": 4, "stratify": "coverage"},
    "model": {
        "arch": "vanilla_unet",
        "base_channels": 4,
        "depth": 2,
        "input_size": 128,
        "attention": None,
        "hypercolumn": False,
    },
    "stages": [
        {"name": "a", "epochs": 2, "loss": {"name": "bce_dice"}, "optimizer": {"name": "adam", "lr": 0.01}},
        {
            "name": "b",
            "epochs": 4,
            "loss": {"name": "lovasz"},
            "schedule": {"name": "cosine_restarts", "cycles": 2},
            "snapshots": True,
        },
    ],
    "train": {"batch_size": 8, "accelerator": "cpu"},
}


def write(tmp_path: Path, data: object, name: str = "exp.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_yaml_loads_into_validated_config(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.name == "good" and cfg.seed == 3
    assert cfg.data.folds == 4 and cfg.data.stratify == "coverage"
    assert cfg.model.arch == "vanilla_unet" and cfg.model.attention is None
    assert [s.epochs for s in cfg.stages] == [2, 4]
    assert cfg.stages[0].optimizer.lr == 0.01
    assert cfg.stages[1].loss.name == "lovasz" and cfg.stages[1].schedule.cycles == 2
    assert cfg.stages[1].optimizer.name == "adam"  # defaults fill what the file leaves out
    assert cfg.train.batch_size == 8


def test_name_defaults_to_file_stem(tmp_path: Path) -> None:
    data = {k: v for k, v in GOOD.items() if k != "name"}
    assert load_config(write(tmp_path, data, "my_run.yaml")).name == "my_run"


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d.update(bogus=1), "bogus"),
        (lambda d: d["model"].update(encodr="resnet18"), "model.encodr"),
        (lambda d: d["stages"][0]["loss"].update(nam="bce"), "stages.0.loss.nam"),
        (lambda d: d["stages"][1]["schedule"].update(cycels=3), "stages.1.schedule.cycels"),
        (lambda d: d["train"].update(batchsize=4), "train.batchsize"),
    ],
)
def test_unknown_key_names_key_and_file(tmp_path: Path, mutate, key: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    msg = str(exc.value)
    assert f"unknown key '{key}'" in msg
    assert str(path) in msg
    assert "\n" not in msg


@pytest.mark.parametrize(
    ("mutate", "key"),
    [
        (lambda d: d["train"].update(batch_size="eight"), "train.batch_size"),
        (lambda d: d["stages"][0].update(epochs=0), "stages.0.epochs"),
        (lambda d: d["stages"][0]["optimizer"].update(name="lbfgs"), "stages.0.optimizer.name"),
        (lambda d: d["stages"][0]["optimizer"].update(lr=-1), "stages.0.optimizer.lr"),
        (lambda d: d.update(stages="all"), "stages"),
        (lambda d: d["data"].update(folds=1), "data.folds"),
        (lambda d: d["train"].update(num_workers=-1), "train.num_workers"),
        (lambda d: d["train"].update(num_workers="all"), "train.num_workers"),
        (lambda d: d["train"].update(precision="banana"), "train.precision"),
        (lambda d: d["train"].update(accelerator="tpu"), "train.accelerator"),
        (lambda d: d["train"].update(limit_train_batches=-1), "train.limit_train_batches"),
        (lambda d: d["model"].update(arch="unett"), "model.arch"),
    ],
)
def test_wrong_type_or_value_names_key_and_file(tmp_path: Path, mutate, key: str) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    mutate(data)
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert f"'{key}'" in str(exc.value)
    assert str(path) in str(exc.value)


def test_empty_stage_list_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="at least one stage"):
        load_config(write(tmp_path, {**GOOD, "stages": []}))


@pytest.mark.parametrize(
    ("text", "match"),
    [("a: [1, 2\n", "not valid YAML at line"), ("- 1\n- 2\n", "top level must be a mapping")],
)
def test_bad_yaml_file(tmp_path: Path, text: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")


def test_overrides(tmp_path: Path) -> None:
    path = write(tmp_path, GOOD)
    cfg = load_config(
        path,
        [
            "stages.0.epochs=3",
            "model.encoder=resnet18",
            "stages.1.optimizer.lr=1e-4",
            "train.devices=[0, 1]",
            "swa.enabled=true",
            "model.decoder_channels=[16, 8, 8, 8, 8]",
            "name=renamed",
        ],
    )
    assert cfg.stages[0].epochs == 3
    assert cfg.model.encoder == "resnet18"
    assert cfg.stages[1].optimizer.lr == pytest.approx(1e-4)
    assert cfg.train.devices == [0, 1]
    assert cfg.swa.enabled is True
    assert cfg.model.decoder_channels == [16, 8, 8, 8, 8]
    assert cfg.name == "renamed"
    # the file itself is untouched
    assert load_config(path).stages[0].epochs == 2


def test_deep_supervision_heads_need_their_loss(tmp_path: Path) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["model"] = {**data.get("model", {}), "deep_supervision": True}
    data["stages"][0]["loss"] = {"name": "bce_dice", "deep_supervision": {}}
    path = write(tmp_path, data)
    with pytest.raises(ConfigError) as exc:  # the second stage's loss has no head weights
        load_config(path)
    assert "stages.1.loss.deep_supervision is not set" in str(exc.value) and str(path) in str(exc.value)
    assert "got" not in str(exc.value)
    cfg = load_config(path, ["stages.1.loss.deep_supervision.salt=0.1"])
    assert cfg.stages[1].loss.deep_supervision is not None


def test_num_workers_auto_means_none_on_the_cpu(tmp_path: Path) -> None:
    from saltseg.training.train import resolve_num_workers

    cfg = load_config(write(tmp_path, GOOD))  # accelerator: cpu
    assert cfg.train.num_workers == "auto" and resolve_num_workers(cfg) == 0
    assert resolve_num_workers(load_config(write(tmp_path, GOOD), ["train.num_workers=3"])) == 3


def test_override_precision_as_number(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), ["train.precision=32"])
    assert cfg.train.precision == "32"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("stages.5.epochs=3", "not an index of a list of 2"),
        ("stages.x.epochs=3", "not an index"),
        ("stages.0.epochs", "not of the form key.path=value"),
        ("model.encodr=resnet18", "unknown key 'model.encodr'"),
        ("stages.0.epochs=many", "'stages.0.epochs'"),
    ],
)
def test_bad_overrides(tmp_path: Path, override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(write(tmp_path, GOOD), [override])


def test_apply_overrides_creates_missing_sections() -> None:
    raw = apply_overrides({}, ["train.batch_size=4", "swa.k=3"])
    assert raw == {"train": {"batch_size": 4}, "swa": {"k": 3}}
    assert parse_config(raw).train.batch_size == 4


def test_dump_and_reload_round_trip(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, GOOD), ["stages.0.epochs=7"])
    text = dump_config(cfg)
    again = load_config(write(tmp_path, text, "resolved.yaml"))
    assert again == cfg
    assert again.stages[0].epochs == 7


def test_run_folder_holds_resolved_config(tmp_path: Path) -> None:
    """prepare_run writes config.yaml (every default written out) that reloads to the same config."""
    from saltseg.data.synth import write_kaggle_layout
    from saltseg.errors import SaltsegError
    from saltseg.training.train import prepare_run

    data = write_kaggle_layout(tmp_path / "data", n_train=24, n_test=0, seed=1)
    cfg = load_config(write(tmp_path, GOOD), ["stages.1.epochs=9"])
    run = tmp_path / "run"
    tiles, folds = prepare_run(cfg, data, run, resume=False)
    saved = run / "config.yaml"
    assert saved.exists() and (run / "folds.csv").exists()
    assert load_config(saved) == cfg
    raw = yaml.safe_load(saved.read_text())
    assert raw["stages"][1]["epochs"] == 9
    assert "swa" in raw and "augment" in raw  # defaults are written out
    assert sorted(set(folds.values())) == [0, 1, 2, 3] and len(folds) == len(tiles.ids) == 24
    with pytest.raises(SaltsegError, match="already holds a run"):
        prepare_run(cfg, data, run, resume=False)
    _, folds_again = prepare_run(cfg, data, run, resume=True)
    assert folds_again == folds


def test_every_default_config_validates() -> None:
    cfg = ExperimentConfig()
    assert parse_config(yaml.safe_load(dump_config(cfg))) == cfg


# --- the command line ------------------------------------------------------------------------------


def test_cli_bad_config_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(yaml.safe_dump(GOOD))
    data["stages"][0]["loss"]["nam"] = "bce"
    bad = write(tmp_path, data, "bad.yaml")
    code = main(["train", str(bad), "--data", str(tmp_path), "--fold", "0", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "stages.0.loss.nam" in lines[0] and "bad.yaml" in lines[0]
    assert not (tmp_path / "r").exists()


def test_cli_overrides_after_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``saltseg train CFG --data D --out R key=value``: overrides after the options are accepted."""
    good = write(tmp_path, GOOD)
    code = main(
        [
            "train",
            str(good),
            "--data",
            str(tmp_path),
            "--fold",
            "0",
            "--out",
            str(tmp_path / "r"),
            "stages.0.epochs=3",
            "stages.1.epochs=lots",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert "'stages.1.epochs'" in err and "lots" in err
    assert "unrecognized arguments" not in err


def test_cli_console_script_bad_config(tmp_path: Path) -> None:
    """The real console script: exit 2, a single ``error:`` line naming key and file, no traceback."""
    bad = write(tmp_path, {**GOOD, "modle": {}}, "bad.yaml")
    exe = Path(sys.executable).with_name("saltseg")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "saltseg.cli"]
    proc = subprocess.run(
        [*cmd, "train", str(bad), "--data", str(tmp_path), "--fold", "0", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines == [f"error: {bad}: unknown key 'modle'"]
    assert "Traceback" not in proc.stdout + proc.stderr


def test_image_head_needs_a_salt_weight_and_no_nonempty_term() -> None:
    from saltseg.training.config import parse_config

    stage = {"loss": {"name": "bce", "deep_supervision": {"final": 1.0, "salt": 0.05, "nonempty": 0.0}}}
    cfg = parse_config({"model": {"image_head": True}, "stages": [stage]})
    assert cfg.model.image_head
    with pytest.raises(ConfigError, match="image head alone"):
        parse_config({"model": {"image_head": True}, "stages": [{"loss": {"name": "bce"}}]})
    stage["loss"]["deep_supervision"]["nonempty"] = 0.5
    with pytest.raises(ConfigError, match="image head alone"):
        parse_config({"model": {"image_head": True}, "stages": [stage]})


@pytest.mark.parametrize("override", ["seed.x=1", "stages.0.epochs.x=1"])
def test_override_below_a_value_is_a_config_error(tmp_path: Path, override: str) -> None:
    with pytest.raises(ConfigError, match="is a value, not a section"):
        load_config(write(tmp_path, GOOD), [override])


def test_a_key_given_twice_and_odd_files_are_clear_errors(tmp_path: Path) -> None:
    twice = tmp_path / "twice.yaml"
    twice.write_text("name: a\nseed: 1\nseed: 2\n")
    with pytest.raises(ConfigError, match="line 3: key 'seed' appears twice"):
        load_config(twice)
    binary = tmp_path / "model.yaml"
    binary.write_bytes(bytes(range(256)) * 4)
    with pytest.raises(ConfigError, match="not a text"):
        load_config(binary)
    with pytest.raises(ConfigError, match="not a folder"):
        load_config(tmp_path)


@pytest.mark.parametrize(
    "override",
    [
        "train.batch_size=true",
        "model.base_channels=yes",
        "stages.0.epochs=on",
        "augment.hflip=true",
        "seed=false",
    ],
)
def test_a_boolean_for_a_number_is_refused_not_read_as_1(override: str) -> None:
    """YAML reads true / yes / on as a boolean, which pydantic would take as the number 1 and train with."""
    from saltseg.training.config import load_config

    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=rf"'{key}'.*a number, not (true|false)"):
        load_config("cpu_fast", [override])
    assert load_config("cpu_fast", ["model.hypercolumn=true"]).model.hypercolumn is True  # bools stay bools
