"""``saltseg demo --quick``: the whole pipeline (synthetic data, training, tuning, prediction, scoring,
submission, overlay picture) in seconds with a tiny model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from saltseg.cli import main
from saltseg.commands.demo_cmds import DEMO_CONFIG, demo_config
from saltseg.data.tiles import open_dataset
from saltseg.submission import read_submission
from saltseg.training.config import parse_config

pytestmark = pytest.mark.slow


def test_quick_config_is_tiny_and_leaves_the_full_one_alone() -> None:
    quick = parse_config(demo_config(quick=True))
    assert quick.model.arch == "vanilla_unet"
    assert [s.epochs for s in quick.stages] == [1, 1]
    full = parse_config(demo_config())
    assert full.model.encoder == "resnet18" and [s.epochs for s in full.stages] == [4, 3]
    assert [s["epochs"] for s in DEMO_CONFIG["stages"]] == [4, 3]


def test_quick_demo(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "demo"
    started = time.time()
    code = main(["demo", "--out", str(out), "--n", "120", "--n-heldout", "30", "--quick"])
    seconds = time.time() - started
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert seconds < 180, f"the quick demo took {seconds:.0f} s"
    lines = [ln for ln in captured.out.splitlines() if ln.strip()]
    for step in range(1, 6):
        assert any(ln.startswith(f"[{step}/5]") for ln in lines), step
    last = lines[-1]
    assert last.startswith("held-out score: "), last
    assert 0.0 <= float(last.split()[2]) <= 1.0

    held = open_dataset(out / "data_heldout")
    assert len(held.labelled_ids) == 30 and len(open_dataset(out / "data_train").labelled_ids) == 120
    sub = read_submission(out / "submission.csv")  # every RLE decodes
    assert sorted(sub) == sorted(held.labelled_ids)
    assert all(m.shape == (101, 101) and m.dtype == bool for m in sub.values())
    assert (out / "run" / "postprocess.json").exists()
    with Image.open(out / "overlay.png") as im:
        assert im.format == "PNG" and min(im.size) > 100
        assert np.asarray(im.convert("L")).std() > 0


def test_demo_refuses_too_few_tiles(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--out", str(tmp_path / "d"), "--n", "10", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--n" in err
    assert not (tmp_path / "d").exists()
