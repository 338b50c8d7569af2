"""Reading tiles and masks, finding datasets, and ``check_dataset`` on every kind of broken input."""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MakeTiny, TinyKaggle, kaggle_image, kaggle_mask_pixels, write_png
from saltseg.data.rle import rle_decode, rle_encode
from saltseg.data.tiles import load_images, load_masks, open_dataset, read_image, read_mask
from saltseg.data.validate import check_dataset, format_report
from saltseg.errors import DataError

# ---------------------------------------------------------------------------------------------------
# read_image / read_mask


def test_read_image_rgb_with_identical_channels(tmp_path: Path) -> None:
    rgb = kaggle_image(np.random.default_rng(0))
    img = read_image(write_png(tmp_path / "a.png", rgb))
    assert img.dtype == np.uint8 and img.shape == (101, 101)
    assert np.array_equal(img, rgb[..., 0])


def test_read_image_grayscale_and_16_bit(tmp_path: Path) -> None:
    gray = np.random.default_rng(1).integers(0, 256, (101, 101), dtype=np.uint8)
    assert np.array_equal(read_image(write_png(tmp_path / "l.png", gray)), gray)
    wide = gray.astype(np.uint16) * 257  # 16-bit covering the full range
    path = write_png(tmp_path / "i16.png", wide)
    assert Image.open(path).mode.startswith("I")
    img = read_image(path)
    assert img.dtype == np.uint8 and np.array_equal(img, gray)


def test_read_image_rgb_with_differing_channels_is_luminance(tmp_path: Path) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (7, 9, 3), dtype=np.uint8)
    img = read_image(write_png(tmp_path / "c.png", rgb))
    assert img.shape == (7, 9)
    assert np.array_equal(img, np.asarray(Image.fromarray(rgb).convert("L")))


def test_read_image_palette_is_converted(tmp_path: Path) -> None:
    gray = np.random.default_rng(3).integers(0, 256, (101, 101), dtype=np.uint8)
    path = tmp_path / "p.png"
    Image.fromarray(gray).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=256).save(path)
    want = np.asarray(Image.open(path).convert("L"))
    assert np.array_equal(read_image(path), want)


def test_read_mask_8_and_16_bit(tmp_path: Path) -> None:
    m = np.zeros((101, 101), dtype=bool)
    m[10:30, 40:90] = True
    p16 = write_png(tmp_path / "m16.png", kaggle_mask_pixels(m))
    assert Image.open(p16).mode.startswith("I")
    assert np.array_equal(read_mask(p16), m) and read_mask(p16).dtype == np.bool_
    p8 = write_png(tmp_path / "m8.png", m.astype(np.uint8) * 255)
    assert np.array_equal(read_mask(p8), m)
    p01 = write_png(tmp_path / "m01.png", m.astype(np.uint8))
    assert np.array_equal(read_mask(p01), m)
    empty = write_png(tmp_path / "e.png", kaggle_mask_pixels(np.zeros((101, 101), bool)))
    assert Image.open(empty).mode == "L" and not read_mask(empty).any()


def test_read_mask_non_binary(tmp_path: Path) -> None:
    arr = np.zeros((101, 101), dtype=np.uint8)
    arr[0, :3] = [100, 200, 255]
    path = write_png(tmp_path / "nb.png", arr)
    with pytest.raises(DataError, match="not binary") as info:
        read_mask(path)
    assert str(path) in str(info.value)
    assert read_mask(path, strict=False).sum() == 3
    two_nonzero = np.full((5, 5), 7, dtype=np.uint8)
    two_nonzero[0, 0] = 9
    with pytest.raises(DataError, match="not binary"):
        read_mask(write_png(tmp_path / "nz.png", two_nonzero))


def _truncations(tmp_path: Path) -> list[Path]:
    good = write_png(tmp_path / "good.png", kaggle_image(np.random.default_rng(4)))
    data = good.read_bytes()
    out = []
    cuts = {"header": 30, "half": len(data) // 2, "no_iend": len(data) - 12, "tail": len(data) - 3}
    for name, cut in cuts.items():
        p = tmp_path / f"cut_{name}.png"
        p.write_bytes(data[:cut])
        out.append(p)
    garbage = tmp_path / "garbage.png"
    garbage.write_bytes(b"this is not a PNG at all" * 10)
    zero = tmp_path / "zero.png"
    zero.write_bytes(b"")
    return [*out, garbage, zero]


@pytest.mark.parametrize("reader", [read_image, read_mask])
def test_unreadable_and_truncated_files_name_the_file(tmp_path: Path, reader: Callable) -> None:
    for path in _truncations(tmp_path):
        with pytest.raises(DataError) as info:
            reader(path)
        msg = str(info.value)
        assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
        assert "unreadable" in msg or "truncated" in msg
    with pytest.raises(DataError, match="file not found") as info:
        reader(tmp_path / "missing.png")
    assert "missing.png" in str(info.value)
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(DataError, match=r"dir\.png"):
        reader(tmp_path / "dir.png")


def test_load_images_and_masks_check_size(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    good = write_png(tmp_path / "g.png", kaggle_image(rng))
    small = write_png(tmp_path / "s.png", kaggle_image(rng)[:100])
    assert load_images([good, good]).shape == (2, 101, 101)
    with pytest.raises(DataError, match="101x100, expected 101x101") as info:
        load_images([good, small])
    assert "s.png" in str(info.value)
    m = write_png(tmp_path / "m.png", np.zeros((99, 101), np.uint8))
    with pytest.raises(DataError, match=r"m\.png"):
        load_masks([m])
    assert load_images([]).shape == (0, 101, 101)


# ---------------------------------------------------------------------------------------------------
# open_dataset


def test_open_dataset_kaggle_layout(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=5, n_test=3)
    src = open_dataset(d.root)
    assert src.layout == "kaggle"
    assert src.labelled_ids == sorted(d.train_ids) and src.test_ids == sorted(d.test_ids)
    assert src.unlabelled_ids == sorted(d.test_ids)
    assert src.image_path(d.test_ids[0]) == d.image(d.test_ids[0])
    assert src.mask_path(d.train_ids[0]) == d.mask(d.train_ids[0])
    assert src.depths == {k: float(v) for k, v in d.depths.items()}
    assert src.train_csv == d.root / "train.csv" and src.sample_submission == d.root / "sample_submission.csv"
    with pytest.raises(DataError, match="no image with id 'nope'"):
        src.image_path("nope")


def test_open_dataset_plain_and_flat_folders(tmp_path: Path) -> None:
    rng = np.random.default_rng(6)
    for i in ("a", "b", "c"):
        write_png(tmp_path / "plain" / "images" / f"{i}.png", kaggle_image(rng))
    write_png(tmp_path / "plain" / "masks" / "a.png", np.zeros((101, 101), np.uint8))
    write_png(tmp_path / "plain" / "masks" / "z.png", np.zeros((101, 101), np.uint8))
    src = open_dataset(tmp_path / "plain")
    assert src.layout == "folder" and src.labelled_ids == ["a"] and src.unlabelled_ids == ["b", "c"]
    assert src.orphan_masks == ["z"]
    for i in ("x", "y"):
        write_png(tmp_path / "flat" / f"{i}.png", kaggle_image(rng))
    (tmp_path / "flat" / "notes.txt").write_text("not an image")
    flat = open_dataset(tmp_path / "flat")
    assert flat.labelled_ids == [] and flat.unlabelled_ids == ["x", "y"] and flat.mask_dir is None


def test_upper_case_suffix_and_bom_csv(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=3, n_test=1)
    tile_id = d.train_ids[2]
    d.image(tile_id).rename(d.image(tile_id).with_suffix(".PNG"))
    d.mask(tile_id).rename(d.mask(tile_id).with_suffix(".PNG"))
    train_csv = d.root / "train.csv"
    train_csv.write_bytes(b"\xef\xbb\xbf" + train_csv.read_bytes())  # saved by a spreadsheet
    src = open_dataset(d.root)
    assert tile_id in src.labelled_ids
    assert (
        src.image_path(tile_id).name == f"{tile_id}.PNG" and src.mask_path(tile_id).name == f"{tile_id}.PNG"
    )
    assert np.array_equal(read_mask(src.mask_path(tile_id)), d.masks[tile_id])
    rep = check_dataset(d.root)
    assert rep.ok, [p.line() for p in rep.problems]


def test_csv_that_is_a_folder(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=1)
    (d.root / "depths.csv").unlink()
    (d.root / "depths.csv").mkdir()
    with pytest.raises(DataError, match="not a readable CSV"):
        open_dataset(d.root)
    rep = check_dataset(d.root)
    assert [p.kind for p in rep.problems] == ["unreadable CSV"] and "depths.csv" in rep.problems[0].line()


def test_open_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        open_dataset(tmp_path / "absent")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        open_dataset(tmp_path / "file.txt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no PNG images found"):
        open_dataset(tmp_path / "empty")


def test_open_dataset_bad_depth(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=2, n_test=1)
    d.rewrite_csv("depths.csv", ["id", "z"], [[d.train_ids[0], "deep"], [d.train_ids[1], "5"]])
    with pytest.raises(DataError, match="depth 'deep'") as info:
        open_dataset(d.root)
    assert "depths.csv" in str(info.value)
    src = open_dataset(d.root, strict=False)
    assert src.depths == {d.train_ids[1]: 5.0} and len(src.bad_depths) == 1


# ---------------------------------------------------------------------------------------------------
# check_dataset


def test_check_valid_tiny_dataset(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=8, n_test=3, n_empty=2)
    rep = check_dataset(d.root)
    assert rep.ok and rep.problems == []
    assert rep.n_labelled == 8 and rep.n_unlabelled == 3
    assert rep.empty_fraction == pytest.approx(2 / 8)
    assert sum(rep.coverage_hist.values()) == 8 and rep.coverage_hist["empty"] == 2
    assert rep.n_depths == 11 and rep.depth_range == (min(d.depths.values()), max(d.depths.values()))
    lines = format_report(rep)
    assert "empty masks: 25.0%" in lines and lines[-1] == "problems: none"


def _rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def _edit_csv(d: TinyKaggle, name: str, edit: Callable[[list[list[str]]], list[list[str]]]) -> None:
    rows = _rows(d.root / name)
    d.rewrite_csv(name, rows[0], edit(rows[1:]))


def _garbage(path: Path) -> None:
    path.write_bytes(b"\x89PNG\r\n\x1a\n garbage")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _also_in_test(d: TinyKaggle, tile_id: str) -> str:
    write_png(d.root / "test" / "images" / f"{tile_id}.png", kaggle_image(np.random.default_rng(1)))
    _edit_csv(d, "sample_submission.csv", lambda r: [*r, [tile_id, ""]])
    return f"{tile_id}.png"


def _nonempty(d: TinyKaggle) -> str:
    return next(i for i in d.train_ids if d.masks[i].any())


# each case: (breaks the dataset and returns the file name a problem line must show, expected kinds)
CASES: dict[str, tuple[Callable[[TinyKaggle], str], set[str]]] = {
    "garbage image": (
        lambda d: (_garbage(d.image(d.train_ids[0])), f"{d.train_ids[0]}.png")[1],
        {"unreadable or truncated image"},
    ),
    "truncated test image": (
        lambda d: (_truncate(d.image(d.test_ids[0])), f"{d.test_ids[0]}.png")[1],
        {"unreadable or truncated image"},
    ),
    "truncated mask": (
        lambda d: (_truncate(d.mask(_nonempty(d))), f"{_nonempty(d)}.png")[1],
        {"unreadable or truncated mask"},
    ),
    "wrong image size": (
        lambda d: (write_png(d.image(d.train_ids[1]), kaggle_image(np.random.default_rng(), 64)), "64x64")[1],
        {"wrong image size (expected 101x101)"},
    ),
    "wrong mask size": (
        lambda d: (write_png(d.mask(d.train_ids[0]), np.zeros((101, 100), np.uint8)), "100x101")[1],
        {"wrong mask size (expected 101x101)"},
    ),
    "non-binary mask": (
        lambda d: (
            write_png(d.mask(d.train_ids[0]), np.arange(101 * 101, dtype=np.uint16).reshape(101, 101)),
            f"{d.train_ids[0]}.png",
        )[1],
        {"non-binary mask"},
    ),
    "image without mask": (
        lambda d: (d.mask(d.train_ids[0]).unlink(), f"{d.train_ids[0]}.png")[1],
        {"image without mask", "id in CSV without mask"},
    ),
    "mask without image": (
        lambda d: (d.image(d.train_ids[0]).unlink(), f"{d.train_ids[0]}.png")[1],
        {"mask without image", "id in CSV without image"},
    ),
    "id in train.csv without files": (
        lambda d: (_edit_csv(d, "train.csv", lambda r: [*r, ["ghost", ""]]), "ghost")[1],
        {"id in CSV without image and mask"},
    ),
    "labelled tile missing from train.csv": (
        lambda d: (_edit_csv(d, "train.csv", lambda r: r[1:]), d.train_ids[0])[1],
        {"labelled tile missing from CSV"},
    ),
    "duplicate id in train.csv": (
        lambda d: (_edit_csv(d, "train.csv", lambda r: [*r, r[2]]), d.train_ids[2])[1],
        {"duplicate id"},
    ),
    "RLE disagrees with mask": (
        lambda d: (_edit_csv(d, "train.csv", lambda r: [[r[0][0], "1 5"], *r[1:]]), d.train_ids[0])[1],
        {"RLE disagrees with mask PNG"},
    ),
    "bad RLE in train.csv": (
        lambda d: (_edit_csv(d, "train.csv", lambda r: [*r[:-1], [r[-1][0], "5 3 1"]]), d.train_ids[-1])[1],
        {"bad RLE"},
    ),
    "train.csv bad header": (
        lambda d: (
            d.rewrite_csv("train.csv", ["image", "mask"], [[i, ""] for i in d.train_ids]),
            "train.csv",
        )[1],
        {"unreadable CSV"},
    ),
    "depths.csv not UTF-8": (
        lambda d: ((d.root / "depths.csv").write_bytes(b"id,z\n\xff\xfe,1\n"), "depths.csv")[1],
        {"unreadable CSV"},
    ),
    "depths.csv bad header": (
        lambda d: (
            d.rewrite_csv("depths.csv", ["id", "depth"], [[i, "1"] for i in d.train_ids]),
            "depths.csv",
        )[1],
        {"unreadable CSV"},
    ),
    "id in depths.csv without image": (
        lambda d: (_edit_csv(d, "depths.csv", lambda r: [*r, ["nowhere", "100"]]), "nowhere")[1],
        {"id in CSV without image"},
    ),
    "image without depth": (
        lambda d: (
            _edit_csv(d, "depths.csv", lambda r: [x for x in r if x[0] != d.test_ids[1]]),
            d.test_ids[1],
        )[1],
        {"image without depth"},
    ),
    "duplicate id in depths.csv": (
        lambda d: (_edit_csv(d, "depths.csv", lambda r: [*r, r[0]]), d.train_ids[0])[1],
        {"duplicate id"},
    ),
    "depth not a number": (
        lambda d: (_edit_csv(d, "depths.csv", lambda r: [[r[0][0], "deep"], *r[1:]]), "'deep'")[1],
        {"depth is not a number"},
    ),
    "id in sample_submission without test image": (
        lambda d: (_edit_csv(d, "sample_submission.csv", lambda r: [*r, ["phantom", "1 1"]]), "phantom")[1],
        {"id in CSV without test image"},
    ),
    "test image missing from sample_submission": (
        lambda d: (_edit_csv(d, "sample_submission.csv", lambda r: r[:-1]), d.test_ids[-1])[1],
        {"test image missing from CSV"},
    ),
    "duplicate id in sample_submission": (
        lambda d: (_edit_csv(d, "sample_submission.csv", lambda r: [*r, r[0]]), d.test_ids[0])[1],
        {"duplicate id"},
    ),
    "id both in train and test": (
        lambda d: _also_in_test(d, d.train_ids[0]),
        {"id both in train and test"},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_check_dataset_reports_each_problem_naming_the_file(tiny_kaggle_dir: MakeTiny, case: str) -> None:
    d = tiny_kaggle_dir(n_train=5, n_test=3, n_empty=1)
    breaker, kinds = CASES[case]
    name = breaker(d)
    rep = check_dataset(d.root)
    assert not rep.ok
    assert {p.kind for p in rep.problems} == kinds, [p.line() for p in rep.problems]
    lines = [p.line() for p in rep.problems]
    assert any(name in line for line in lines), lines
    for p, line in zip(rep.problems, lines, strict=True):
        assert str(d.root) in line  # every line names the file or folder it is about
        assert "\n" not in line and line.startswith(p.kind)
    report = format_report(rep)
    assert report[-len(rep.problems) - 1] == f"problems: {len(rep.problems)}"


def test_check_dataset_several_problems_one_line_per_kind(tiny_kaggle_dir: MakeTiny) -> None:
    d = tiny_kaggle_dir(n_train=6, n_test=2, n_empty=1)
    _garbage(d.image(d.train_ids[0]))
    _garbage(d.image(d.train_ids[1]))
    _edit_csv(d, "train.csv", lambda r: [[r[0][0], "1 2 3"], *r[1:]])
    rep = check_dataset(d.root)
    kinds = [p.kind for p in rep.problems]
    assert sorted(kinds) == ["bad RLE", "unreadable or truncated image"]
    images = next(p for p in rep.problems if p.kind.startswith("unreadable"))
    assert len(images.items) == 2 and images.where == str(d.root / "train" / "images")
    assert images.line().startswith(f"unreadable or truncated image in {d.root / 'train' / 'images'}: 2 (")
    bad = next(p for p in rep.problems if p.kind == "bad RLE")
    assert "odd number of values" in bad.line() and "line 2" in bad.line()


def test_check_dataset_flat_tiles_and_plain_folder(tmp_path: Path) -> None:
    write_png(tmp_path / "images" / "flat.png", np.full((101, 101), 7, np.uint8))
    write_png(tmp_path / "images" / "busy.png", kaggle_image(np.random.default_rng(8)))
    write_png(tmp_path / "masks" / "busy.png", np.zeros((101, 101), np.uint8))
    rep = check_dataset(tmp_path)
    assert rep.ok and rep.layout == "folder"
    assert rep.flat_tiles == ["flat"] and rep.n_labelled == 1 and rep.n_unlabelled == 1
    assert any(line.startswith("depths: none") for line in format_report(rep))


def test_check_dataset_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="data folder not found"):
        check_dataset(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------
# the real data (skipped where absent)


@pytest.mark.realdata
def test_real_data_check(real_data: Path) -> None:
    rep = check_dataset(real_data)
    assert rep.layout == "kaggle"
    assert rep.n_labelled == 3199 and rep.n_unlabelled == 18000
    assert f"{rep.empty_fraction:.1%}" == "39.0%"
    assert rep.ok, [p.line() for p in rep.problems]
    assert rep.depth_range == (50.0, 959.0)


@pytest.mark.realdata
def test_real_train_csv_equals_mask_pngs(real_data: Path) -> None:
    with open(real_data / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3199
    n_empty = 0
    for row in rows:
        mask = read_mask(real_data / "train" / "masks" / f"{row['id']}.png")
        decoded = rle_decode(row["rle_mask"])
        assert np.array_equal(decoded, mask), row["id"]
        assert rle_encode(mask) == row["rle_mask"], row["id"]  # the CSV is in canonical form
        n_empty += not mask.any()
    assert n_empty == 1249
