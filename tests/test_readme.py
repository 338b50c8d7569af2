"""The README's quick start and Python example, run as written on tiny synthetic data (paths swapped)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from saltseg.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
KAGGLE = "../shared/data/tgs-salt"
QUICK = ["stages.0.epochs=1", "train.batch_size=16"]  # seconds, not minutes

pytestmark = pytest.mark.slow


def block(after: str, lang: str) -> str:
    """The first ``lang`` code block after the heading or sentence ``after``."""
    text = README.read_text()
    start = text.index(after)
    match = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert match, f"no {lang} block after {after!r}"
    return match.group(1)


@pytest.fixture
def user_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from saltseg.data.synth import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "tgs", n_train=60, n_test=8, seed=2)
    monkeypatch.chdir(tmp_path)
    return data


def test_quick_start_runs_as_written(user_dir: Path, capsys: pytest.CaptureFixture) -> None:
    ran = []
    for raw in block("## Quick start on the Kaggle data", "bash").splitlines():
        words = shlex.split(raw, comments=True)
        if words[:1] != ["saltseg"]:
            assert not words or words == ["source", ".venv/bin/activate"] or words[0].startswith("DATA="), raw
            continue
        line = raw
        words = [w.replace("$DATA", str(user_dir)) for w in words[1:]]
        if words[0] == "train":
            words += QUICK
        assert main(words) == 0, (line, capsys.readouterr().err)
        ran.append(words[0])
    assert ran == ["data", "config", "train", "tune", "predict", "submission", "report"]
    assert Path("submission.csv").exists() and Path("runs/r1/report.html").exists()


def test_python_example_runs_as_written(user_dir: Path) -> None:
    code = block("From Python, the same steps", "python")
    code += "\nassert masks.shape == (len(paths), 101, 101) and masks.dtype == bool and len(paths) == 8\n"
    code += "assert probs.shape == (101, 404) and 0 <= probs.min() <= probs.max() <= 1\n"
    assert KAGGLE in code and "stages.0.epochs=20" in code
    code = code.replace(KAGGLE, str(user_dir)).replace("stages.0.epochs=20", "stages.0.epochs=1")
    exec(compile(code, "README.md", "exec"), {})
    assert Path("runs/py/submission.csv").exists() and Path("runs/py/postprocess.json").exists()


def test_survey_workflow_runs_as_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The "Whole surveys" block with a tiny model in place of ``runs/r1`` and a one-epoch training."""
    import torch

    from saltseg.checkpoints import save_weights
    from saltseg.models import ModelConfig, create_model

    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    tiny = ModelConfig(arch="vanilla_unet", depth=1, base_channels=4, attention=None, hypercolumn=False)
    model = save_weights(create_model(tiny).eval(), tmp_path / "tiny.safetensors")
    ran = []
    for raw in block("## Whole surveys", "bash").splitlines():
        words = [w.replace("runs/r1", str(model)) for w in shlex.split(raw, comments=True)[1:]]
        if words[:2] == ["volume", "predict"]:
            words += ["--backend", "torch", "--quiet"]
        if words[0] == "train":
            words += [*QUICK, "data.folds=2"]
        assert main(words) == 0, raw
        ran.append(" ".join(words[:2]))
    assert ran == [
        "volume synth",
        "volume convert",
        "volume predict",
        "volume convert",
        "volume tiles",
        "train cpu_fast",
    ]
    assert Path("salt.sgy").exists() and Path("runs/mine/fold0/best.safetensors").exists()
