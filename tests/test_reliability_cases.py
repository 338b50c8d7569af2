"""Bad inputs tried against the real commands (RELIABILITY.md rows 135 on): each is one ``error:`` line
naming the file and the problem with exit status 2 (``data check`` and ``submission check`` list what
they find and exit 1), and nothing of the user's is replaced."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import MakeTiny, TinyKaggle, write_png
from saltseg.checkpoints import save_weights
from saltseg.cli import main
from saltseg.models import ModelConfig, create_model

TINY_CONFIG = """\
name: tiny
model: {arch: vanilla_unet, base_channels: 4, depth: 2, attention: null, hypercolumn: false}
data: {folds: 2}
stages:
  - {name: warm, epochs: 1, loss: {name: bce_dice}, optimizer: {name: adam, lr: 0.003}}
train: {batch_size: 2}
"""


def one_error(argv: list, capsys: pytest.CaptureFixture, *needles: str) -> str:
    """Run ``saltseg argv``: exit status 2 and one ``error:`` line holding every needle (no traceback)."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse refuses an option value: usage, then one error line, status 2
        rc = exc.code
    assert rc == 2
    err = capsys.readouterr().err.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("error:", "saltseg ")), err
    last = lines[-1]
    assert "Traceback" not in err
    if not last.startswith("error:"):  # argparse: usage, then "saltseg CMD: error: ..."
        assert ": error: " in last
    else:
        assert len(lines) == 1, err
    for needle in needles:
        assert needle in last, (needle, last)
    return last


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` and its bytes (to prove that nothing was changed)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def data(tiny_kaggle_dir: MakeTiny) -> TinyKaggle:
    return tiny_kaggle_dir(n_train=6, n_test=3)


def _csv_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def _set_line(path: Path, index: int, text: str) -> None:
    lines = _csv_lines(path)
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def _set_rle(path: Path, index: int, rle: str) -> None:
    lines = _csv_lines(path)
    lines[index] = lines[index].split(",")[0] + "," + rle
    path.write_text("\n".join(lines) + "\n")


# ---------------------------------------------------------------------------------------------------
# data check: every problem listed, naming the file, exit status 1


def _first_nonempty(data: TinyKaggle) -> str:
    return next(i for i in data.train_ids if data.masks[i].any())


# corruptions that both `data check` and `train` must name (each returns the damaged file)
CORRUPTIONS: dict[str, Callable[[TinyKaggle], Path]] = {
    "depths-nan": lambda d: (
        _set_line(d.root / "depths.csv", 1, f"{d.train_ids[0]},nan"),
        d.root / "depths.csv",
    )[1],
    "mask-wrong-size": lambda d: write_png(d.mask(d.train_ids[0]), np.zeros((50, 50), np.uint8)),
    "mask-not-binary": lambda d: write_png(
        d.mask(d.train_ids[0]), np.arange(101 * 101, dtype=np.uint8).reshape(101, 101) % 3
    ),
    "image-wrong-size": lambda d: write_png(d.image(d.train_ids[0]), np.zeros((128, 128), np.uint8)),
}


DATA_CHECK_CASES: dict[str, tuple[Callable[[TinyKaggle], object], str]] = {
    "depths-empty-file": (
        lambda d: (d.root / "depths.csv").write_text(""),
        "unreadable CSV in",
    ),
    "depths-header-only": (
        lambda d: (d.root / "depths.csv").write_text("id,z\n"),
        "image without depth in depths.csv: 9",
    ),
    "depths-wrong-header": (
        lambda d: _set_line(d.root / "depths.csv", 0, "ident,depth"),
        "found ['ident', 'depth']",
    ),
    "depths-nan": (CORRUPTIONS["depths-nan"], "depth is not a number in depths.csv: 1"),
    "depths-inf": (
        lambda d: _set_line(d.root / "depths.csv", 1, f"{d.train_ids[0]},inf"),
        "depth is not a number in depths.csv: 1",
    ),
    "depths-duplicate-id": (
        lambda d: (d.root / "depths.csv").write_text(
            (d.root / "depths.csv").read_text() + f"{d.train_ids[0]},100\n"
        ),
        "duplicate id in depths.csv: 1",
    ),
    "depths-unknown-id": (
        lambda d: (d.root / "depths.csv").write_text((d.root / "depths.csv").read_text() + "zz_nope,100\n"),
        "id in CSV without image in depths.csv: 1 (zz_nope)",
    ),
    "train-csv-empty-file": (lambda d: (d.root / "train.csv").write_text(""), "train.csv (expected columns"),
    "train-csv-wrong-header": (
        lambda d: _set_line(d.root / "train.csv", 0, "id,mask"),
        "found ['id', 'mask']",
    ),
    "train-csv-duplicate-id": (
        lambda d: (d.root / "train.csv").write_text(
            (d.root / "train.csv").read_text() + _csv_lines(d.root / "train.csv")[1] + "\n"
        ),
        "duplicate id in train.csv: 1",
    ),
    "rle-odd-count": (lambda d: _set_rle(d.root / "train.csv", 3, "1 2 3"), "odd number of values (3)"),
    "rle-overlap": (lambda d: _set_rle(d.root / "train.csv", 3, "1 5 3 5"), "runs overlap"),
    "rle-past-end": (lambda d: _set_rle(d.root / "train.csv", 3, "10200 10"), "past the last pixel 10201"),
    "rle-non-numeric": (lambda d: _set_rle(d.root / "train.csv", 3, "a b"), "non-integer value 'a'"),
    "rle-negative": (lambda d: _set_rle(d.root / "train.csv", 3, "-1 5"), "run start -1 < 1"),
    "rle-disagrees-with-mask": (
        lambda d: _set_rle(d.root / "train.csv", 1 + d.train_ids.index(_first_nonempty(d)), ""),
        "RLE disagrees with mask PNG in",
    ),
    "labelled-tile-missing-from-csv": (
        lambda d: (d.root / "train.csv").write_text("\n".join(_csv_lines(d.root / "train.csv")[:-1]) + "\n"),
        "labelled tile missing from CSV in",
    ),
    "mask-wrong-size": (CORRUPTIONS["mask-wrong-size"], "wrong mask size (expected 101x101)"),
    "mask-not-binary": (CORRUPTIONS["mask-not-binary"], "non-binary mask in"),
    "image-wrong-size": (CORRUPTIONS["image-wrong-size"], "wrong image size (expected 101x101)"),
    "image-zero-bytes": (
        lambda d: d.image(d.train_ids[0]).write_bytes(b""),
        "unreadable or truncated image in",
    ),
    "sample-submission-id-without-image": (
        lambda d: (d.root / "sample_submission.csv").write_text(
            (d.root / "sample_submission.csv").read_text() + "te_ghost,1 1\n"
        ),
        "id in CSV without test image in",
    ),
}


@pytest.mark.parametrize("case", list(DATA_CHECK_CASES))
def test_data_check_lists_each_problem_naming_its_file(
    case: str, data: TinyKaggle, capsys: pytest.CaptureFixture
) -> None:
    damage, expected = DATA_CHECK_CASES[case]
    damage(data)
    assert main(["data", "check", str(data.root)]) == 1
    out = capsys.readouterr().out.replace(f"{data.root}/", "")  # the files named relative to the dataset
    problems = out.split("problems:")[1]
    assert expected in problems, problems
    assert "problems: none" not in out


def test_data_check_reads_train_csv_by_its_named_columns(
    data: TinyKaggle, capsys: pytest.CaptureFixture
) -> None:
    csv = data.root / "train.csv"
    csv.write_text("\n".join(line + ",extra" for line in _csv_lines(csv)) + "\n")
    assert main(["data", "check", str(data.root)]) == 0
    assert "problems: none" in capsys.readouterr().out


def test_data_check_on_a_missing_a_file_or_an_empty_folder(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    one_error(["data", "check", tmp_path / "nope"], capsys, "nope", "data folder not found")
    one_error(["data", "check", data.root / "depths.csv"], capsys, "depths.csv", "not a folder")
    (tmp_path / "empty").mkdir()
    one_error(["data", "check", tmp_path / "empty"], capsys, "empty", "no PNG images found")


# ---------------------------------------------------------------------------------------------------
# train: a bad config or bad data is refused before anything is written


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY_CONFIG)
    return path


CONFIG_OVERRIDES = {
    "stages.0.epochs=-1": "greater than or equal to 1",
    "stages.0.epochs=0": "greater than or equal to 1",
    "stages.0.epochs=1.5": "fractional part",
    "stages.0.epochs=abc": "valid integer",
    "stages.0.optimizer.lrr=0.1": "unknown key 'stages.0.optimizer.lrr'",
    "stages.0.optimizer.lr=-1": "'stages.0.optimizer.lr': Input should be greater than 0",
    "stages.0.optimizer.lr=nan": "'stages.0.optimizer.lr'",
    "stages.0.loss.name=nope": "'stages.0.loss.name'",
    "stages.0.optimizer.name=sgdd": "'stages.0.optimizer.name'",
    "model.base_channels=0": "base_channels must be at least 1",
    "model.depth=0": "depth must be between 1 and 5",
    "train.batch_sizee=3": "unknown key 'train.batch_sizee'",
    "data.folds=0": "'data.folds': Input should be greater than or equal to 2",
    "stages=[]": "at least one stage is needed",
    "seed=-1": "'seed': Input should be greater than or equal to 0",
    "seed=4294967296": "'seed': Input should be less than or equal to 4294967295",
    "data.fold_seed=-1": "'data.fold_seed': Input should be greater than or equal to 0",
}


@pytest.mark.parametrize("override", list(CONFIG_OVERRIDES))
def test_a_bad_config_value_is_one_line_naming_file_and_key(
    override: str, config: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "run"
    one_error(
        ["train", config, "--data", data.root, "--out", out, "--fold", "0", override],
        capsys,
        str(config),
        CONFIG_OVERRIDES[override],
    )
    assert not out.exists()


def test_an_override_index_past_the_list_is_one_line(
    config: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", config, "--data", data.root, "--out", tmp_path / "run", "stages.5.epochs=1"]
    one_error(argv, capsys, "stages.5.epochs", "is not an index of a list of 1")
    assert not (tmp_path / "run").exists()


CONFIG_FILES = {
    "misspelled-nested-key": (
        "model: {arch: vanilla_unet, base_chanels: 8}\n",
        "unknown key 'model.base_chanels'",
    ),
    "misspelled-key-in-a-stage": (
        "stages: [{epochs: 1, optimizer: {name: adam, lrate: 0.1}}]\n",
        "unknown key 'stages.0.optimizer.lrate'",
    ),
    "unknown-loss-key": (
        "stages: [{epochs: 1, loss: {name: lovasz, weight: 2}}]\n",
        "unknown key 'stages.0.loss.weight'",
    ),
    "top-level-list": ("[1, 2]\n", "the top level must be a mapping"),
    "epochs-as-text": ("stages: [{epochs: many}]\n", "'stages.0.epochs'"),
}


@pytest.mark.parametrize("case", list(CONFIG_FILES))
def test_a_bad_config_file_is_one_line_naming_it(
    case: str, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text, expected = CONFIG_FILES[case]
    cfg = tmp_path / f"{case}.yaml"
    cfg.write_text(text)
    one_error(["train", cfg, "--data", data.root, "--out", tmp_path / "run"], capsys, str(cfg), expected)
    assert not (tmp_path / "run").exists()


def test_a_missing_config_names_it_and_the_shipped_ones(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["train", tmp_path / "nope.yaml", "--data", data.root, "--out", tmp_path / "run"]
    one_error(argv, capsys, "nope.yaml", "config file not found", "cpu_fast")


TRAIN_DATA_CASES: dict[str, str] = {  # the corruption, the message train gives
    "mask-wrong-size": "mask is 50x50, expected 101x101",
    "mask-not-binary": "mask is not binary",
    "image-wrong-size": "image is 128x128, expected 101x101",
    "depths-nan": "is not a number",
}


@pytest.mark.parametrize("case", list(TRAIN_DATA_CASES))
def test_train_refuses_bad_tiles_before_writing_a_run(
    case: str, config: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    bad, expected = CORRUPTIONS[case](data), TRAIN_DATA_CASES[case]
    out = tmp_path / "run"
    one_error(["train", config, "--data", data.root, "--out", out, "--fold", "0"], capsys, bad.name, expected)
    assert not (out / "config.yaml").exists()


def test_train_never_writes_into_the_dataset_or_over_a_file(
    config: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(data.root)
    base = ["train", config, "--data", data.root, "--fold", "0"]
    one_error([*base, "--out", data.root], capsys, "lies inside the dataset folder")
    one_error([*base, "--out", data.root / "train" / "run"], capsys, "lies inside the dataset folder")
    assert snapshot(data.root) == before and not (data.root / "train" / "run").exists()
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine\n")
    one_error([*base, "--out", foreign], capsys, str(foreign), "is a file")
    assert foreign.read_text() == "mine\n"
    one_error(
        [*base[:3], tmp_path / "nope", "--out", tmp_path / "run"], capsys, "nope", "data folder not found"
    )


# ---------------------------------------------------------------------------------------------------
# submission check / evaluate / blend


def _submission(data: TinyKaggle, path: Path, rle: str = "1 5") -> Path:
    path.write_text("id,rle_mask\n" + "".join(f"{i},{rle}\n" for i in data.test_ids))
    return path


SUBMISSION_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "odd-rle": (lambda p: _set_rle(p, 1, "1 2 3"), "invalid RLE: 1 (line 2"),
    "overlapping-runs": (lambda p: _set_rle(p, 1, "1 5 3 5"), "runs overlap"),
    "run-past-the-end": (lambda p: _set_rle(p, 1, "10200 9"), "past the last pixel"),
    "non-numeric-rle": (lambda p: _set_rle(p, 1, "x y"), "non-integer value 'x'"),
    "negative-start": (lambda p: _set_rle(p, 1, "-3 5"), "run start -3 < 1"),
    "duplicate-id": (lambda p: p.write_text(p.read_text() + _csv_lines(p)[1] + "\n"), "duplicate ids: 1"),
    "missing-id": (lambda p: p.write_text("\n".join(_csv_lines(p)[:-1]) + "\n"), "ids missing: 1"),
    "unknown-id": (lambda p: p.write_text(p.read_text() + "zzz,1 1\n"), "unknown ids: 1 (zzz)"),
    "header-only": (lambda p: p.write_text("id,rle_mask\n"), "ids missing: 3"),
    "extra-column": (
        lambda p: p.write_text("\n".join(line + ",x" for line in _csv_lines(p)) + "\n"),
        "expected exactly ['id', 'rle_mask']",
    ),
}


@pytest.mark.parametrize("case", list(SUBMISSION_CASES))
def test_submission_check_lists_each_problem(
    case: str, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sub = _submission(data, tmp_path / "sub.csv")
    assert main(["submission", "check", str(sub), str(data.root)]) == 0  # valid before the damage
    capsys.readouterr()
    damage, expected = SUBMISSION_CASES[case]
    damage(sub)
    assert main(["submission", "check", str(sub), str(data.root)]) == 1
    out = capsys.readouterr().out
    assert expected in out and str(sub) in out and "valid submission" not in out


def test_submission_check_of_an_unreadable_csv_is_one_error(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    sub = _submission(data, tmp_path / "sub.csv")
    _set_line(sub, 0, "id,mask")
    one_error(["submission", "check", sub, data.root], capsys, str(sub), "found ['id', 'mask']")
    sub.write_text("")
    one_error(["submission", "check", sub, data.root], capsys, str(sub), "expected columns")
    one_error(["submission", "check", tmp_path / "nope.csv", data.root], capsys, "nope.csv", "file not found")
    (tmp_path / "dir.csv").mkdir()
    one_error(
        ["submission", "check", tmp_path / "dir.csv", data.root], capsys, "dir.csv", "not a readable CSV"
    )


def _train_predictions(data: TinyKaggle, path: Path) -> Path:
    path.write_text("id,rle_mask\n" + "".join(f"{i},1 5\n" for i in data.train_ids))
    return path


EVALUATE_CASES: dict[str, tuple[Callable[[Path], None], str]] = {
    "odd-rle": (lambda p: _set_rle(p, 1, "1 2 3"), "line 2, id"),
    "duplicate-id": (lambda p: p.write_text(p.read_text() + _csv_lines(p)[1] + "\n"), "duplicate ids (1"),
    "wrong-header": (lambda p: _set_line(p, 0, "ids,rle"), "found ['ids', 'rle']"),
    "empty-file": (lambda p: p.write_text(""), "expected columns 'id' and 'rle_mask', found []"),
    "missing-file": (lambda p: p.unlink(), "file not found"),
}


@pytest.mark.parametrize("case", list(EVALUATE_CASES))
def test_evaluate_refuses_a_bad_csv_without_a_score(
    case: str, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred = _train_predictions(data, tmp_path / "pred.csv")
    damage, expected = EVALUATE_CASES[case]
    damage(pred)
    one_error(["evaluate", pred, data.root], capsys, str(pred), expected)
    assert "score:" not in capsys.readouterr().out


def test_evaluate_other_bad_inputs(
    data: TinyKaggle, tiny_kaggle_dir: MakeTiny, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    pred = _train_predictions(data, tmp_path / "pred.csv")
    (tmp_path / "pf").mkdir()
    one_error(["evaluate", tmp_path / "pf", data.root], capsys, "pf", "prediction folder has no masks.csv")
    one_error(["evaluate", pred, tmp_path / "nope"], capsys, "nope", "data folder not found")
    other = tiny_kaggle_dir(n_train=3, n_test=1, seed=5, name="other")  # other ids
    one_error(["evaluate", pred, other.root], capsys, str(pred), "no id of the submission is a labelled tile")


@pytest.fixture
def two_subs(data: TinyKaggle, tmp_path: Path) -> tuple[Path, Path]:
    return _submission(data, tmp_path / "a.csv"), _submission(data, tmp_path / "b.csv", "3 7")


BLEND_WEIGHTS = {
    "1": "1 weights for 2 submissions",
    "1,-1": "non-negative numbers with a positive sum, got [1.0, -1.0]",
    "1,nan": "got [1.0, nan]",
    "0,0": "got [0.0, 0.0]",
    "1,inf": "got [1.0, inf]",
    "1,x": "not a comma-separated list of numbers: '1,x'",
    "1,,2": "not a comma-separated list of numbers: '1,,2'",
}


@pytest.mark.parametrize("weights", list(BLEND_WEIGHTS))
def test_blend_refuses_bad_weights(
    weights: str, two_subs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "o.csv"
    one_error(["blend", *two_subs, "--out", out, "--weights", weights], capsys, BLEND_WEIGHTS[weights])
    assert not out.exists()


def test_blend_refuses_bad_files_and_outputs(
    data: TinyKaggle, two_subs: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    a, b = two_subs
    before = a.read_bytes()
    one_error(["blend", a, "--out", tmp_path / "o.csv"], capsys, "at least two submissions, got 1")
    one_error(["blend", a, b, "--out", a], capsys, str(a), "would overwrite the input")
    assert a.read_bytes() == before
    one_error(
        ["blend", a, b, "--out", data.root / "depths.csv"], capsys, "depths.csv", "inside the dataset folder"
    )
    foreign = tmp_path / "notes.csv"
    foreign.write_text("mine\n")
    one_error(["blend", a, b, "--out", foreign], capsys, str(foreign), "not a submission CSV")
    assert foreign.read_text() == "mine\n"
    (tmp_path / "dir").mkdir()
    one_error(["blend", a, b, "--out", tmp_path / "dir"], capsys, "dir", "the output is a folder")
    one_error(
        ["blend", a, tmp_path / "nope.csv", "--out", tmp_path / "o.csv"], capsys, "nope.csv", "file not found"
    )
    _set_rle(b, 1, "1 2 3")
    one_error(["blend", a, b, "--out", tmp_path / "o.csv"], capsys, str(b), "line 2, id")
    b.write_text("\n".join(_csv_lines(a)[:-1]) + "\n")
    one_error(["blend", a, b, "--out", tmp_path / "o.csv"], capsys, str(b), "lacks 1 id(s)")
    assert not (tmp_path / "o.csv").exists()


# ---------------------------------------------------------------------------------------------------
# data folds --out


def test_data_folds_never_writes_over_a_dataset_or_a_foreign_file(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    before = snapshot(data.root)
    base = ["data", "folds", data.root, "--k", "2", "--out"]
    one_error([*base, data.root / "depths.csv"], capsys, "depths.csv", "inside the dataset folder")
    one_error([*base, data.root / "folds.csv"], capsys, "folds.csv", "never writes into a dataset")
    assert snapshot(data.root) == before
    foreign = tmp_path / "notes.csv"
    foreign.write_text("mine\n")
    one_error([*base, foreign], capsys, str(foreign), "is not a folds CSV")
    assert foreign.read_text() == "mine\n"
    (tmp_path / "dir").mkdir()
    one_error([*base, tmp_path / "dir"], capsys, "dir", "the output is a folder")
    folds = tmp_path / "folds.csv"
    assert main([str(a) for a in [*base, folds]]) == 0
    assert main([str(a) for a in [*base, folds]]) == 0  # its own earlier output is replaced
    assert _csv_lines(folds)[0] == "id,fold" and len(_csv_lines(folds)) == 7


# ---------------------------------------------------------------------------------------------------
# models: predict, export, ensemble


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny checkpoint (predict and export need weights, not a good model)."""
    torch.manual_seed(0)
    cfg = ModelConfig(arch="vanilla_unet", depth=2, base_channels=4, attention=None, hypercolumn=False)
    path = tmp_path_factory.mktemp("model") / "m.safetensors"
    return save_weights(create_model(cfg).eval(), path)


PREDICT_OPTIONS = {
    "threshold-above-1": (["--threshold", "1.5"], "less than 1"),
    "threshold-nan": (["--threshold", "nan"], "--threshold: invalid post-processing settings"),
    "threshold-negative": (["--threshold", "-0.1"], "greater than 0"),
    "batch-size-0": (["--batch-size", "0"], "--batch-size: must be at least 1, got 0"),
}


@pytest.mark.parametrize("case", list(PREDICT_OPTIONS))
def test_predict_refuses_bad_options(
    case: str, ckpt: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    extra, expected = PREDICT_OPTIONS[case]
    out = tmp_path / "p"
    one_error(["predict", ckpt, "--images", data.root, "--out", out, *extra], capsys, expected)
    assert not (out / "masks.csv").exists()


POSTPROCESS_FILES = {
    "unknown-key": ('{"threshold": 0.5, "bogus": 1}', "bogus: unknown key"),
    "wrong-type": ('{"threshold": "x"}', "threshold: Input should be a valid number"),
    "not-json": ("not json", "not valid JSON"),
}


@pytest.mark.parametrize("case", list(POSTPROCESS_FILES))
def test_predict_refuses_a_bad_postprocess_file(
    case: str, ckpt: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    text, expected = POSTPROCESS_FILES[case]
    pp = tmp_path / "pp.json"
    pp.write_text(text)
    argv = ["predict", ckpt, "--images", data.root, "--out", tmp_path / "p", "--postprocess", pp]
    one_error(argv, capsys, str(pp), expected)
    assert not (tmp_path / "p").exists()


def test_predict_refuses_missing_or_odd_inputs(
    ckpt: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "p"
    one_error(
        ["predict", ckpt, "--images", tmp_path / "nope", "--out", out],
        capsys,
        "nope",
        "data folder not found",
    )
    one_error(["predict", ckpt, "--images", data.root / "depths.csv", "--out", out], capsys, "not a folder")
    (tmp_path / "empty").mkdir()
    one_error(["predict", ckpt, "--images", tmp_path / "empty", "--out", out], capsys, "no PNG images found")
    argv = ["predict", ckpt, "--images", data.root, "--out", out, "--postprocess", tmp_path / "nope.json"]
    one_error(argv, capsys, "nope.json", "post-processing file not found")
    npz = tmp_path / "oof.npz"
    np.savez(npz, a=np.zeros(3))
    one_error(
        ["predict", npz, "--images", data.root, "--out", out], capsys, str(npz), "not a readable safetensors"
    )
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine\n")
    one_error(
        ["predict", ckpt, "--images", data.root, "--out", foreign], capsys, "the prediction folder is a file"
    )
    assert foreign.read_text() == "mine\n" and not out.exists()


FOREIGN_PREDICTION_FILES: dict[str, Callable[[Path], None]] = {
    "masks.csv": lambda d: (d / "masks.csv").write_text("my notes\n"),
    "meta.json": lambda d: (d / "meta.json").write_text('{"mine": 1}\n'),
    "probs": lambda d: ((d / "probs").mkdir(), (d / "probs" / "a.txt").write_text("mine\n")),
}


@pytest.mark.parametrize("name", list(FOREIGN_PREDICTION_FILES))
def test_predict_never_replaces_files_it_did_not_write(
    name: str, ckpt: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    FOREIGN_PREDICTION_FILES[name](out)
    before = snapshot(out)
    one_error(["predict", ckpt, "--images", data.root, "--out", out], capsys, str(out), f"holds {name} ")
    assert snapshot(out) == before


def test_the_python_predict_refuses_a_foreign_folder_like_the_cli(
    ckpt: Path, data: TinyKaggle, tmp_path: Path
) -> None:
    from saltseg.errors import DataError
    from saltseg.inference.predict import predict_folder

    out = tmp_path / "mine"
    out.mkdir()
    FOREIGN_PREDICTION_FILES["masks.csv"](out)
    before = snapshot(out)
    with pytest.raises(DataError, match=r"holds masks\.csv that saltseg predict did not write"):
        predict_folder([ckpt], data.root, out, backend="torch")
    assert snapshot(out) == before


def test_predict_replaces_its_own_prediction_even_one_killed_before_its_meta(
    ckpt: Path, data: TinyKaggle, tmp_path: Path
) -> None:
    out = tmp_path / "p"
    out.mkdir()
    (out / "notes.txt").write_text("mine\n")  # other files beside the outputs are left alone
    argv = ["predict", str(ckpt), "--images", str(data.root), "--out", str(out), "--backend", "torch"]
    assert main(argv) == 0
    first = (out / "masks.csv").read_text()
    (out / "meta.json").unlink()  # as if killed between masks.csv and meta.json
    assert main(argv) == 0
    assert (out / "masks.csv").read_text() == first and (out / "meta.json").is_file()
    assert (out / "notes.txt").read_text() == "mine\n"


def test_export_never_replaces_an_input_or_a_foreign_file(
    ckpt: Path, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model_bytes = ckpt.read_bytes()
    one_error(["export", ckpt, "--onnx", ckpt], capsys, str(ckpt), "would overwrite the input")
    run = tmp_path / "run"
    (run / "fold0").mkdir(parents=True)
    best = run / "fold0" / "best.safetensors"
    best.write_bytes(model_bytes)
    one_error(["export", run, "--onnx", best], capsys, str(best), "would overwrite the input")
    assert best.read_bytes() == model_bytes == ckpt.read_bytes()
    before = snapshot(data.root)
    one_error(["export", ckpt, "--onnx", data.root / "train.csv"], capsys, "train.csv", "inside the dataset")
    assert snapshot(data.root) == before
    foreign = tmp_path / "mine.onnx"
    foreign.write_text("mine\n")
    one_error(["export", ckpt, "--onnx", foreign], capsys, str(foreign), "not an ONNX graph saltseg exported")
    assert foreign.read_text() == "mine\n"
    (tmp_path / "dir").mkdir()
    one_error(["export", ckpt, "--onnx", tmp_path / "dir"], capsys, "dir", "the output is a folder")
    one_error(["export", tmp_path / "nope", "--onnx", tmp_path / "x.onnx"], capsys, "nope", "model not found")
    for size in ("0", "-5"):
        one_error(
            ["export", ckpt, "--onnx", tmp_path / "x.onnx", "--size", size], capsys, "size must be positive"
        )
    assert not (tmp_path / "x.onnx").exists()


def test_export_replaces_its_own_graph(ckpt: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    argv = [
        "export",
        str(ckpt),
        "--onnx",
        str(out),
        "--no-verify",
        "--exporter",
        "torchscript",
        "--opset",
        "17",
    ]
    assert main(argv) == 0
    assert main([*argv[:-4], "--no-tta", *argv[-4:]]) == 0  # the second export replaces the first
    import onnx

    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert props["saltseg_hflip"] == "false"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx"]


ENSEMBLE_WEIGHTS = {
    "1": "1 weights for 2 runs",
    "1,2,3": "3 weights for 2 runs",
    "1,-1": "need one non-negative weight per run",
    "1,nan": "need one non-negative weight per run",
    "1,inf": "need one non-negative weight per run",
    "bogus": "equal, cv, optimize or comma-separated numbers, got 'bogus'",
}


@pytest.mark.parametrize("weights", list(ENSEMBLE_WEIGHTS))
def test_ensemble_refuses_bad_weights(weights: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for r in runs:
        r.mkdir()
    out = tmp_path / "ens"
    one_error(["ensemble", *runs, "--out", out, "--weights", weights], capsys, ENSEMBLE_WEIGHTS[weights])
    assert not out.exists()


def test_ensemble_never_writes_over_a_file_or_into_a_foreign_folder(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    runs = [tmp_path / "a", tmp_path / "b"]
    for r in runs:
        r.mkdir()
    before = snapshot(data.root)
    one_error(
        ["ensemble", *runs, "--out", data.root / "train.csv"], capsys, "train.csv", "is a file, not a folder"
    )
    assert snapshot(data.root) == before
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    one_error(["ensemble", *runs, "--out", foreign], capsys, str(foreign), "not an ensemble folder")
    assert snapshot(foreign) == {"notes.txt": b"mine\n"}
    one_error(
        ["ensemble", tmp_path / "nope", "--out", tmp_path / "e"], capsys, "nope", "no out-of-fold predictions"
    )
    (tmp_path / "a" / "config.yaml").write_text("name: x\n")
    (tmp_path / "a" / "folds.csv").write_text("id,fold\n")
    one_error(["ensemble", *runs, "--out", tmp_path / "a"], capsys, "must not be a run folder")


# ---------------------------------------------------------------------------------------------------
# show, report, tune, runs, pseudo


def test_show_never_replaces_a_dataset_file_or_a_foreign_picture(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    tile = data.train_ids[0]
    before = snapshot(data.root)
    one_error(["show", data.root, tile, "--out", data.image(tile)], capsys, "inside the dataset folder")
    assert snapshot(data.root) == before
    foreign = tmp_path / "notes.txt"
    foreign.write_text("mine\n")
    one_error(
        ["show", data.root, tile, "--out", foreign], capsys, str(foreign), "not a picture saltseg show drew"
    )
    copy = tmp_path / "tile.png"
    copy.write_bytes(data.image(tile).read_bytes())
    one_error(["show", data.root, tile, "--out", copy], capsys, str(copy), "not a picture saltseg show drew")
    assert copy.read_bytes() == data.image(tile).read_bytes() and foreign.read_text() == "mine\n"
    (tmp_path / "dir").mkdir()
    one_error(["show", data.root, tile, "--out", tmp_path / "dir"], capsys, "the output is a folder")
    one_error(
        ["show", data.root, "nosuchtile", "--out", tmp_path / "x.png"], capsys, "no tile with id 'nosuchtile'"
    )
    one_error(["show", tmp_path / "nope", tile, "--out", tmp_path / "x.png"], capsys, "data folder not found")
    assert not (tmp_path / "x.png").exists()


def test_show_replaces_its_own_picture(data: TinyKaggle, tmp_path: Path) -> None:
    out = tmp_path / "tiles.png"
    assert main(["show", str(data.root), data.train_ids[0], "--out", str(out)]) == 0
    first = out.read_bytes()
    assert main(["show", str(data.root), *data.train_ids[:2], "--out", str(out)]) == 0
    assert out.read_bytes() != first


def test_report_never_replaces_a_foreign_file_or_a_run_file(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("name: x\n")
    one_error(
        ["report", run, "--out", run / "config.yaml"], capsys, "config.yaml", "would overwrite the input"
    )
    assert (run / "config.yaml").read_text() == "name: x\n"
    foreign = tmp_path / "notes.html"
    foreign.write_text("<p>mine</p>\n")
    one_error(["report", run, "--out", foreign], capsys, str(foreign), "not a report saltseg wrote")
    assert foreign.read_text() == "<p>mine</p>\n"
    (tmp_path / "dir").mkdir()
    one_error(["report", run, "--out", tmp_path / "dir"], capsys, "dir", "the output is a folder")
    one_error(["report", tmp_path / "nope", "--out", tmp_path / "r.html"], capsys, "nope", "folder not found")


def test_tune_and_runs_on_what_is_not_a_run(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for what in (tmp_path / "nope", data.root, data.root / "depths.csv"):
        one_error(["tune", what], capsys, str(what), "no out-of-fold predictions")
    one_error(["runs", tmp_path / "nope"], capsys, "nope", "folder not found")
    one_error(["runs", data.root / "depths.csv"], capsys, "depths.csv", "not a folder")


PSEUDO_OPTIONS = {
    "confidence-above-1": (["--confidence", "2"], "--confidence: must be between 0 and 1, got 2.0"),
    "temperature-0": (["--temperature", "0"], "--temperature must be positive, got 0.0"),
    "temperature-negative": (["--temperature", "-1"], "--temperature must be positive, got -1.0"),
    "temperature-nan": (["--temperature", "nan"], "--temperature must be positive, got nan"),
}


@pytest.mark.parametrize("case", list(PSEUDO_OPTIONS))
def test_pseudo_refuses_bad_options(
    case: str, data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    extra, expected = PSEUDO_OPTIONS[case]
    pred = tmp_path / "pred"
    pred.mkdir()
    out = tmp_path / "ps"
    one_error(["pseudo", pred, "--images", data.root, "--out", out, *extra], capsys, expected)
    assert not out.exists()


def test_pseudo_refuses_missing_predictions(
    data: TinyKaggle, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    argv = ["pseudo", tmp_path / "nope", "--images", data.root, "--out", tmp_path / "ps"]
    one_error(argv, capsys, "nope", "no probabilities")
    assert not (tmp_path / "ps").exists()
