"""Submissions: the atomic writer, the checker, ``saltseg submission check`` and ``saltseg evaluate``."""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import MakeTiny, TinyKaggle, random_mask
from saltseg.cli import main
from saltseg.data.rle import rle_encode
from saltseg.errors import DataError
from saltseg.evaluation import PRED_MASKS_FILE, evaluate_predictions
from saltseg.metrics.kaggle import kaggle_score
from saltseg.submission import check_submission, read_submission, write_submission


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _write(path: Path, rows: list[list[str]], header: tuple[str, str] = ("id", "rle_mask")) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def reference_score(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> float:
    """The README's metric, written independently: a plain loop with float IoU."""
    scores = []
    for tile_id, t in truth.items():
        p = pred[tile_id]
        if t.sum() == 0:
            scores.append(1.0 if p.sum() == 0 else 0.0)
        elif p.sum() == 0:
            scores.append(0.0)
        else:
            iou = float((p & t).sum()) / float((p | t).sum())
            scores.append(sum(iou > t_ for t_ in np.arange(0.5, 1.0, 0.05).round(2)) / 10)
    return sum(scores) / len(scores)


# ---------------------------------------------------------------------------------------------------
# write_submission


def test_write_and_read_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    ids = [f"t{k}" for k in range(12)]
    masks = [random_mask(rng) for _ in ids]
    masks[0] = np.zeros((101, 101), dtype=bool)
    path = write_submission(tmp_path / "sub.csv", ids, masks)
    rows = _rows(path)
    assert rows[0] == ["id", "rle_mask"] and [r[0] for r in rows[1:]] == ids
    assert rows[1] == ["t0", ""]  # empty mask: empty string
    assert path.read_text().splitlines()[1] == "t0,"
    assert all(r[1] == rle_encode(m) for r, m in zip(rows[1:], masks, strict=True))
    back = read_submission(path)
    assert list(back) == ids and all(np.array_equal(back[i], m) for i, m in zip(ids, masks, strict=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sub.csv"]  # no temporary file left


def test_written_file_gets_normal_permissions(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        path = write_submission(tmp_path / "sub.csv", ["a"], [np.zeros((101, 101), bool)])
        assert path.stat().st_mode & 0o777 == 0o644  # not mkstemp's owner-only 0o600
        path.chmod(0o640)
        write_submission(path, ["b"], [np.ones((101, 101), bool)])
        assert path.stat().st_mode & 0o777 == 0o640  # an existing file keeps its permissions
    finally:
        os.umask(umask)


def _failing_masks(n_good: int) -> Iterator[np.ndarray]:
    for _ in range(n_good):
        yield np.ones((101, 101), dtype=bool)
    raise RuntimeError("model crashed mid-write")


def test_write_is_atomic_when_interrupted(tmp_path: Path) -> None:
    target = tmp_path / "out" / "sub.csv"
    with pytest.raises(RuntimeError, match="mid-write"):
        write_submission(target, ["a", "b", "c"], _failing_masks(2))
    assert not target.exists()
    assert list(target.parent.iterdir()) == []  # the temporary file was removed
    target.write_text("id,rle_mask\nold,1 1\n")
    before = target.read_bytes()
    with pytest.raises(RuntimeError, match="mid-write"):
        write_submission(target, ["a", "b", "c"], _failing_masks(1))
    assert target.read_bytes() == before  # the old file is untouched
    assert [p.name for p in target.parent.iterdir()] == ["sub.csv"]


def test_write_fails_cleanly_on_length_mismatch_or_bad_mask(tmp_path: Path) -> None:
    target = tmp_path / "sub.csv"
    with pytest.raises(ValueError):
        write_submission(target, ["a", "b"], [np.zeros((101, 101), bool)])
    with pytest.raises(ValueError, match="2-D"):
        write_submission(target, ["a"], [np.zeros((1, 101, 101), bool)])
    assert list(tmp_path.iterdir()) == []


def test_read_submission_errors_name_the_line(tmp_path: Path) -> None:
    bad = _write(tmp_path / "bad.csv", [["a", "1 2"], ["b", "3 x"]])
    with pytest.raises(DataError, match="line 3, id 'b': non-integer value 'x'") as info:
        read_submission(bad)
    assert str(bad) in str(info.value)
    dup = _write(tmp_path / "dup.csv", [["a", ""], ["a", "1 1"]])
    with pytest.raises(DataError, match="duplicate ids"):
        read_submission(dup)
    header = _write(tmp_path / "h.csv", [["a", ""]], header=("ImageId", "EncodedPixels"))
    with pytest.raises(DataError, match="expected columns 'id' and 'rle_mask'"):
        read_submission(header)


# ---------------------------------------------------------------------------------------------------
# check_submission and `saltseg submission check`


def _valid_rows(d: TinyKaggle) -> list[list[str]]:
    return [[i, "" if k % 2 else "1 5"] for k, i in enumerate(d.test_ids)]


def test_check_submission_valid(tiny_kaggle_dir: MakeTiny, tmp_path: Path) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=4)
    sub = _write(tmp_path / "sub.csv", list(reversed(_valid_rows(d))))  # any order is fine
    assert check_submission(sub, d.root) == []


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda rows: rows[1:], "ids missing: 1"),
        (lambda rows: [*rows, ["stranger", ""]], "unknown ids: 1 (stranger)"),
        (lambda rows: [*rows, rows[0]], "duplicate ids: 1"),
        (lambda rows: [[rows[0][0], "5 1 2 1"], *rows[1:]], "invalid RLE: 1 (line 2"),
        (lambda rows: [[rows[0][0], "1 99999"], *rows[1:]], "past the last pixel"),
    ],
)
def test_check_submission_problems(tiny_kaggle_dir: MakeTiny, tmp_path: Path, edit, expected: str) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=4)
    sub = _write(tmp_path / "sub.csv", edit(_valid_rows(d)))
    problems = check_submission(sub, d.root)
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"{sub}: ") and expected in problems[0]


def test_check_submission_without_sample_uses_test_images(tiny_kaggle_dir: MakeTiny, tmp_path: Path) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=3)
    (d.root / "sample_submission.csv").unlink()
    assert check_submission(_write(tmp_path / "s.csv", _valid_rows(d)), d.root) == []
    problems = check_submission(_write(tmp_path / "t.csv", _valid_rows(d)[:-1]), d.root)
    assert len(problems) == 1 and d.test_ids[-1] in problems[0]


def test_cli_submission_check_exit_codes(
    tiny_kaggle_dir: MakeTiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=3)
    good = _write(tmp_path / "good.csv", _valid_rows(d))
    assert main(["submission", "check", str(good), str(d.root)]) == 0
    assert capsys.readouterr().out.strip() == f"{good}: valid submission"
    bad = _write(tmp_path / "bad.csv", [*_valid_rows(d)[1:], ["x", "0 1"]])
    assert main(["submission", "check", str(bad), str(d.root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3 and all(line.startswith(f"{bad}: ") for line in out)
    assert main(["submission", "check", str(tmp_path / "none.csv"), str(d.root)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "none.csv" in err[0]
    assert main(["submission", "check", str(good), str(tmp_path / "nodata")]) == 2
    assert "data folder not found" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------
# evaluation


def _random_submission(d: TinyKaggle, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    pred = {}
    for k, tile_id in enumerate(d.train_ids):
        truth = d.masks[tile_id]
        if k % 4 == 0:
            pred[tile_id] = random_mask(rng)
        else:  # truth with a few flipped pixels around it
            noise = rng.random(truth.shape) < rng.uniform(0.0, 0.01)
            pred[tile_id] = truth ^ noise if truth.any() else noise & (rng.random() < 0.5)
    return pred


def test_evaluate_matches_the_independent_metric(
    tiny_kaggle_dir: MakeTiny, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tiny_kaggle_dir(n_train=24, n_test=2, n_empty=6)
    pred = _random_submission(d, seed=3)
    ids_out, masks_out = [*pred, "extra_id"], [*pred.values(), pred[d.train_ids[0]]]
    sub = write_submission(tmp_path / "sub.csv", ids_out, masks_out)
    ref = reference_score(pred, d.masks)
    assert 0.0 < ref < 1.0
    # the library computes the same number, to 1e-9, from the CSV
    back = read_submission(sub)
    ids = sorted(d.train_ids)
    lib = kaggle_score(np.stack([back[i] for i in ids]), np.stack([d.masks[i] for i in ids]))
    assert abs(lib - ref) < 1e-9
    assert main(["evaluate", str(sub), str(d.root)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == f"score: {ref:.4f}"
    assert lines[0].startswith("scored 24 labelled tiles (1 ids of the file not labelled, 0 labelled")
    assert any(line.startswith("by coverage") for line in lines)
    assert any(line.startswith("by depth") for line in lines)
    assert any(line.strip().startswith("empty") and " 6 " in line for line in lines)
    assert any(line.startswith("mean IoU:") for line in lines)


def test_evaluate_prediction_folder_and_errors(tiny_kaggle_dir: MakeTiny, tmp_path: Path) -> None:
    d = tiny_kaggle_dir(n_train=6, n_test=1)
    folder = tmp_path / "pred"
    write_submission(folder / PRED_MASKS_FILE, d.train_ids[:3], [d.masks[i] for i in d.train_ids[:3]])
    # half the labelled tiles missing: an error, not a perfect score over the other half
    with pytest.raises(DataError, match=r"3 of the 6 labelled tiles .* are not in the file"):
        evaluate_predictions(folder, d.root)
    lines = evaluate_predictions(folder, d.root, partial=True)
    assert lines[-1] == "score: 1.0000" and "3 labelled tiles not in the file" in lines[0]
    with pytest.raises(DataError, match=f"prediction folder has no {PRED_MASKS_FILE}"):
        evaluate_predictions(tmp_path, d.root)
    other = write_submission(tmp_path / "other.csv", ["zzz"], [np.zeros((101, 101), bool)])
    with pytest.raises(DataError, match="no id of the submission is a labelled tile"):
        evaluate_predictions(other, d.root)
