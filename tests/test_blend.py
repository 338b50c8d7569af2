"""``saltseg blend``: a pixel-wise weighted vote of submissions, validated, atomic, never over an input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from saltseg.cli import main
from saltseg.submission import read_submission, write_submission

IDS = ["a1", "b2", "c3"]


def masks(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((101, 101)) < 0.5 for _ in IDS]


@pytest.fixture
def subs(tmp_path: Path) -> list[Path]:
    return [write_submission(tmp_path / f"s{k}.csv", IDS, masks(k)) for k in range(3)]


def test_blend_is_a_weighted_majority_vote(subs: list[Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "blend.csv"
    assert main(["blend", *map(str, subs), "--out", str(out)]) == 0
    assert "blended 3 submissions: 3 tiles" in capsys.readouterr().out
    got = read_submission(out)
    m = [masks(k) for k in range(3)]
    for i, tile_id in enumerate(IDS):
        want = (m[0][i].astype(int) + m[1][i] + m[2][i]) >= 2
        assert np.array_equal(got[tile_id], want)
    assert [line.split(",")[0] for line in out.read_text().splitlines()[1:]] == IDS  # the first file's order
    # weights: one file outweighing the two others reproduces it
    heavy = tmp_path / "heavy.csv"
    assert main(["blend", *map(str, subs), "--weights", "3,1,1", "--out", str(heavy)]) == 0
    assert all(np.array_equal(read_submission(heavy)[t], read_submission(subs[0])[t]) for t in IDS)


def test_blend_refuses_mismatched_or_bad_input(subs: list[Path], tmp_path: Path, capsys) -> None:
    def error(*argv: str) -> str:
        assert main(["blend", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        return err

    fewer = write_submission(tmp_path / "fewer.csv", IDS[:2], masks(5)[:2])
    assert "lacks 1 id(s)" in error(str(subs[0]), str(fewer), "--out", str(tmp_path / "x.csv"))
    bad = tmp_path / "bad.csv"
    bad.write_text("id,rle_mask\na1,1 5 3\nb2,\nc3,\n")
    assert "bad.csv" in error(str(subs[0]), str(bad), "--out", str(tmp_path / "x.csv"))
    assert "2 weights for 3" in error(*map(str, subs), "--weights", "1,2", "--out", str(tmp_path / "x.csv"))
    assert "at least two" in error(str(subs[0]), "--out", str(tmp_path / "x.csv"))
    before = subs[1].read_bytes()
    assert "overwrite" in error(*map(str, subs), "--out", str(subs[1]))
    assert subs[1].read_bytes() == before
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert "not a submission" in error(*map(str, subs), "--out", str(notes))
    assert notes.read_text() == "mine" and not (tmp_path / "x.csv").exists()


def test_blend_never_writes_into_a_dataset_folder(subs: list[Path], tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    """``blend`` reads no dataset, yet its ``--out`` into one (over its ``sample_submission.csv``) is
    refused: every output file is checked against the Kaggle layout of its folder."""
    from saltseg.data.synth import write_kaggle_layout

    data = write_kaggle_layout(tmp_path / "data", n_train=4, n_test=3, seed=0)
    sample = data / "sample_submission.csv"
    before = sample.read_bytes()
    assert main(["blend", *map(str, subs), "--out", str(sample)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "never writes into a dataset" in err
    assert sample.read_bytes() == before
