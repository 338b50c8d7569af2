"""``saltseg demo --quick``: the whole pipeline (synthetic data, training, tuning, prediction, scoring,
submission, overlay picture) in seconds with a tiny model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.cli import main
from saltseg.commands.demo_cmds import DEMO_CONFIG
from saltseg.data.tiles import open_dataset
from saltseg.errors import SaltsegError
from saltseg.submission import read_submission
from saltseg.training.config import load_config

pytestmark = pytest.mark.slow


def test_quick_config_is_tiny_and_leaves_the_full_one_alone() -> None:
    quick = load_config(DEMO_CONFIG + "_quick")
    assert quick.model.arch == "vanilla_unet"
    assert [s.epochs for s in quick.stages] == [1, 1]
    full = load_config(DEMO_CONFIG)  # the shipped file the demo's pipeline runs
    assert full.model.encoder == "resnet18" and [s.epochs for s in full.stages] == [4, 3]


def test_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--n", "120", "--n-heldout", "30", "--quick"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    lines = [ln for ln in captured.out.splitlines() if ln.strip()]
    for step in range(1, 7):
        assert any(ln.startswith(f"[{step}/6]") for ln in lines), step
    last = lines[-1]
    assert last.startswith("held-out score: "), last
    assert 0.0 <= float(last.split()[2]) <= 1.0

    held = open_dataset(out / "data_heldout")
    assert len(held.labelled_ids) == 30 and len(open_dataset(out / "data_train").labelled_ids) == 120
    sub = read_submission(out / "submission.csv")  # every RLE decodes
    assert sorted(sub) == sorted(held.labelled_ids)
    assert all(m.shape == (101, 101) and m.dtype == bool for m in sub.values())
    run = out / "pipeline" / "round1"  # the demo is `run_pipeline` on fold 0 of the shipped demo config
    assert (run / "postprocess.json").exists() and (run / "report.html").stat().st_size > 1000
    assert sorted(p.name for p in run.glob("fold[0-9]*")) == ["fold0"]
    for picture in ("overlay.png", "survey.png"):  # tiles, and one section of a synthetic survey
        with Image.open(out / picture) as im:
            assert im.format == "PNG" and min(im.size) > 100
            assert np.asarray(im.convert("L")).std() > 0


def test_demo_refuses_too_few_tiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", "10", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--n" in err
    assert not (tmp_path / "d").exists()


def test_demo_never_touches_a_folder_it_did_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("years of work")
    (out / "run").mkdir()
    (out / "run" / "keep.txt").write_text("mine too")
    for extra in ([], ["--fresh"]):
        assert main(["demo", "--out", str(out), "--quick", *extra]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {out}: ") and "not made by saltseg demo" in err
    assert (out / "thesis.tex").read_text() == "years of work"
    assert (out / "run" / "keep.txt").read_text() == "mine too"


def test_fresh_empties_only_a_demo_folder(tmp_path: Path) -> None:
    from saltseg.utils.io import MARKER_FILE, claim_output_dir

    out = claim_output_dir(tmp_path / "d", "demo")
    (out / "old.txt").write_text("x")
    (out / "sub").mkdir()
    claim_output_dir(out, "demo")  # a second run without --fresh keeps what is there
    assert (out / "old.txt").exists()
    claim_output_dir(out, "demo", fresh=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE]
    with pytest.raises(SaltsegError, match="not made by saltseg pipeline"):
        (out / "new.txt").write_text("y")
        claim_output_dir(out, "pipeline")
