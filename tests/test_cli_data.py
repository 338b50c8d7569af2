"""``saltseg data check`` exit codes and output, one-line errors, and ``--help`` of every subcommand."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MakeTiny, write_png
from saltseg import cli
from saltseg.cli import build_parser, main


def test_data_check_valid_exits_0(tiny_kaggle_dir: MakeTiny, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_kaggle_dir(n_train=5, n_test=2, n_empty=2)
    assert main(["data", "check", str(d.root)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"dataset: {d.root} (kaggle layout)"
    assert "labelled tiles: 5" in out and "unlabelled tiles: 2" in out and "empty masks: 40.0%" in out
    assert out[-1] == "problems: none"


def test_data_check_problems_exit_1_one_line_per_kind(
    tiny_kaggle_dir: MakeTiny, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tiny_kaggle_dir(n_train=5, n_test=2, n_empty=1)
    bad_image = d.image(d.test_ids[0])
    bad_image.write_bytes(b"not a png")
    non_binary = d.mask(d.train_ids[-1])
    write_png(non_binary, np.arange(101 * 101, dtype=np.uint16).reshape(101, 101))
    d.mask(d.train_ids[1]).unlink()
    assert main(["data", "check", str(d.root)]) == 1
    out = capsys.readouterr().out.splitlines()
    wanted = {
        "unreadable or truncated image": bad_image.name,
        "non-binary mask": non_binary.name,
        "image without mask": f"{d.train_ids[1]}.png",
        "id in CSV without mask": d.train_ids[1],  # train.csv lists the tile whose mask is gone
    }
    assert out[-5] == "problems: 4"
    problem_lines = out[-4:]
    for kind, name in wanted.items():
        lines = [line for line in problem_lines if line.strip().startswith(kind)]
        assert len(lines) == 1 and name in lines[0] and str(d.root) in lines[0], problem_lines


def test_data_check_csv_problem_exits_1(
    tiny_kaggle_dir: MakeTiny, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tiny_kaggle_dir(n_train=3, n_test=1)
    with open(d.root / "train.csv", "a") as f:
        f.write(f"{d.train_ids[0]},1 1\n")
    assert main(["data", "check", str(d.root)]) == 1
    out = capsys.readouterr().out
    assert "duplicate id in" in out and "train.csv" in out and d.train_ids[0] in out


def test_data_check_missing_dir_is_one_error_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "no_such_dir"
    assert main(["data", "check", str(missing)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.splitlines() == [f"error: {missing}: data folder not found"]


def test_console_script_errors_without_traceback(tmp_path: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    missing = tmp_path / "absent"
    r = subprocess.run(
        [sys.executable, "-m", "saltseg.cli", "data", "check", str(missing)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert r.returncode == 2
    assert r.stderr.splitlines() == [f"error: {missing}: data folder not found"]
    assert "Traceback" not in r.stderr + r.stdout


def test_no_command_prints_help_and_bad_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "example:" in capsys.readouterr().out
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["data"])  # the action is required
    assert info.value.code == 2


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every subcommand path under ``parser`` (``("data",)``, ``("data", "check")``, ...)."""
    paths = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                paths.append((*prefix, name))
                paths += _command_paths(sub, (*prefix, name))
    return paths


def test_help_of_every_command_shows_an_example(capsys: pytest.CaptureFixture[str]) -> None:
    parser = build_parser()
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    assert "example:" in capsys.readouterr().out
    paths = _command_paths(parser)
    assert {p[0] for p in paths} == set(cli.COMMANDS)
    assert {"data", "synth", "evaluate", "submission"} <= set(cli.COMMANDS)
    assert ("data", "check") in paths and ("submission", "check") in paths
    for path in paths:
        with pytest.raises(SystemExit) as info:
            main([*path, "--help"])
        assert info.value.code == 0, path
        out = capsys.readouterr().out
        assert out.startswith(f"usage: saltseg {' '.join(path)}"), path
        assert "example:" in out and "saltseg " + path[0] in out.split("example:")[1], path
