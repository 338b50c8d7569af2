"""saltseg as a user installs it: shipped configs by name, ``--version``, and the wheel outside the repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
import yaml

from saltseg import __version__
from saltseg.cli import main
from saltseg.training.config import builtin_configs, load_config, resolve_config_path

REPO = Path(__file__).resolve().parents[1]


def test_every_shipped_config_loads_by_name_and_has_a_recorded_score(capsys: pytest.CaptureFixture) -> None:
    shipped = builtin_configs()
    assert {"cpu_fast", "first_place", "demo", "demo_quick"} <= set(shipped)
    for name, info in shipped.items():
        assert info.summary and info.score != "-", name  # the header says what it is and what it scored
        assert load_config(name) == load_config(info.path)
    assert main(["config", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in shipped)


def test_a_path_wins_over_a_shipped_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    Path("cpu_fast").write_text("name: mine\nstages: [{epochs: 2}]\n")
    assert load_config("cpu_fast").name == "mine"
    assert resolve_config_path("first_place.yaml") == builtin_configs()["first_place"].path


def test_config_show_prints_the_resolved_config(capsys: pytest.CaptureFixture) -> None:
    assert main(["config", "show", "cpu_fast", "stages.0.epochs=3"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["stages"][0]["epochs"] == 3 and shown["model"]["residual"] is True
    assert "weight_decay" in shown["stages"][0]["optimizer"]  # every default written out
    assert main(["config", "show", "no_such_config"]) == 2
    err = capsys.readouterr().err
    assert "no shipped config" in err and "cpu_fast" in err


def test_version(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"saltseg {__version__}"


@pytest.mark.slow
def test_the_wheel_works_without_the_repository(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a fresh venv outside the repo (dependencies from this
    environment, nothing downloaded), then run what a new user runs first."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(REPO),
        ],
        check=True,
        cwd=tmp_path,
        env={**os.environ, "PIP_NO_INDEX": "1"},
    )
    (wheel,) = wheels.glob("saltseg-*.whl")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # the already-installed dependencies (torch...), but not this checkout's saltseg
    deps = Path(sysconfig.get_paths()["purelib"])
    (Path(site) / "deps.pth").write_text(str(deps) + "\n")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "--no-deps",
            "--no-index",
            "-q",
            str(wheel),
        ],
        check=True,
    )
    user = tmp_path / "user"  # a folder with no repository around it
    user.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")  # tiny models: one thread, like the suite
    saltseg = (
        [str(py), "-m", "saltseg.cli"]
        if not (venv / "bin" / "saltseg").exists()
        else [str(venv / "bin" / "saltseg")]
    )

    def run(*args: str) -> str:
        done = subprocess.run(
            [*saltseg, *args], cwd=user, env=env, capture_output=True, text=True, timeout=600
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    where = subprocess.run(
        [str(py), "-c", "import saltseg; print(saltseg.__file__)"],
        cwd=user,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    assert str(venv) in where and str(REPO) not in where  # the installed copy, not the checkout
    assert run("--version").strip() == f"saltseg {__version__}"
    listed = run("config", "list")
    assert "cpu_fast" in listed and "first_place" in listed
    run("synth", "data", "--n", "60", "--n-test", "0", "--seed", "0")
    out = run(
        "train",
        "cpu_fast",
        "--data",
        "data",
        "--fold",
        "0",
        "--out",
        "run",
        "--no-progress",
        "stages.0.epochs=1",
        "train.batch_size=16",
    )
    assert "fold 0: done" in out and (user / "run" / "fold0" / "summary.json").exists()
    demo = run("demo", "--quick", "--n", "60", "--n-heldout", "10", "--out", "demo")
    assert "held-out score:" in demo and (user / "demo" / "submission.csv").exists()
    shutil.rmtree(venv)
