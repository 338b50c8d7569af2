"""The pixel rule of ``saltseg.data.tiles``: every bit depth and colour mode of tiles and masks, read the
same way by ``data check``, training and prediction, and a clear error for any other pixel format."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MakeTiny, kaggle_image, write_png
from saltseg.cli import main
from saltseg.data.tiles import read_image, read_mask
from saltseg.data.validate import check_dataset
from saltseg.errors import DataError

RNG = np.random.default_rng(13)
GREY = RNG.integers(0, 256, (101, 101), dtype=np.uint8)
MASK = np.zeros((101, 101), dtype=bool)
MASK[20:60, 30:80] = True


def raw_png(path: Path, samples: np.ndarray, depth: int, colour_type: int) -> Path:
    """Write a PNG byte by byte (Pillow cannot write 16-bit colour or 2-bit grey).

    ``samples`` is (H, W) or (H, W, C) of integers below ``2**depth``; rows are packed MSB first.
    """
    h, w = samples.shape[:2]
    if depth == 16:
        rows = [samples[r].astype(">u2").tobytes() for r in range(h)]
    elif depth == 8:
        rows = [samples[r].astype(np.uint8).tobytes() for r in range(h)]
    else:
        bits = np.unpackbits(samples.astype(np.uint8)[..., None], axis=-1)[..., 8 - depth :]
        rows = [np.packbits(bits[r].ravel()).tobytes() for r in range(h)]

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, depth, colour_type, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + row for row in rows))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )
    return path


# ---------------------------------------------------------------------------------------------------
# images: bit depths


@pytest.mark.parametrize(
    ("low", "high"),
    [(100, 300), (50, 250), (0, 65535), (1000, 1100), (40000, 65535)],
    ids=["100-300", "50-250", "full", "narrow", "bright"],
)
def test_16_bit_tile_is_scaled_by_a_fixed_rule_never_per_tile(tmp_path: Path, low: int, high: int) -> None:
    """16-bit grey keeps the high byte: a tile's own range never changes how its values read."""
    wide = np.linspace(low, high, 101 * 101).reshape(101, 101).astype(np.uint16)
    path = write_png(tmp_path / "t16.png", wide)
    assert Image.open(path).mode == "I;16"
    img = read_image(path)
    assert img.dtype == np.uint8
    np.testing.assert_array_equal(img, (wide >> 8).astype(np.uint8))


def test_the_same_16_bit_value_reads_the_same_in_every_tile(tmp_path: Path) -> None:
    dim = write_png(tmp_path / "dim.png", np.full((4, 4), 200, np.uint16) + np.eye(4, dtype=np.uint16))
    bright = np.full((4, 4), 200, np.uint16)
    bright[0, 0] = 60000
    bright_path = write_png(tmp_path / "bright.png", bright)
    assert read_image(dim)[1, 2] == read_image(bright_path)[1, 2] == 0  # 200 >> 8
    assert read_image(bright_path)[0, 0] == 60000 >> 8


def test_16_bit_with_the_full_range_equals_its_8_bit_source(tmp_path: Path) -> None:
    path = write_png(tmp_path / "i16.png", GREY.astype(np.uint16) * 257)
    np.testing.assert_array_equal(read_image(path), GREY)


def test_1_bit_image_reads_0_and_255_not_black(tmp_path: Path) -> None:
    path = tmp_path / "b.png"
    Image.fromarray(MASK).save(path)
    assert Image.open(path).mode == "1"
    img = read_image(path)
    assert img.dtype == np.uint8 and set(np.unique(img).tolist()) == {0, 255}
    np.testing.assert_array_equal(img, MASK.astype(np.uint8) * 255)


@pytest.mark.parametrize("depth", [2, 4])
def test_2_and_4_bit_grey_are_scaled_to_the_full_8_bit_range(tmp_path: Path, depth: int) -> None:
    top = 2**depth - 1
    levels = np.arange(top + 1, dtype=np.uint8).repeat(3)[None, :].repeat(2, axis=0)
    img = read_image(raw_png(tmp_path / f"g{depth}.png", levels, depth, 0))
    np.testing.assert_array_equal(img, (levels.astype(int) * 255 // top).astype(np.uint8))


def test_16_bit_rgb_with_equal_channels_is_grey_by_the_same_rule(tmp_path: Path) -> None:
    wide = np.linspace(100, 65535, 12).reshape(3, 4).astype(np.uint16)
    path = raw_png(tmp_path / "rgb16.png", np.repeat(wide[..., None], 3, axis=2), 16, 2)
    np.testing.assert_array_equal(read_image(path), (wide >> 8).astype(np.uint8))


# ---------------------------------------------------------------------------------------------------
# images: colour modes


def test_rgba_with_equal_channels_is_grey_and_alpha_is_ignored(tmp_path: Path) -> None:
    alpha = RNG.integers(0, 256, GREY.shape, dtype=np.uint8)
    rgba = np.dstack([GREY, GREY, GREY, alpha])
    img = read_image(write_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(img, GREY)


def test_grey_with_alpha_is_grey(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([GREY, 255 - GREY]), mode="LA").save(path)
    assert Image.open(path).mode == "LA"
    np.testing.assert_array_equal(read_image(path), GREY)


def test_rgb_with_differing_channels_is_luminance(tmp_path: Path) -> None:
    rgb = np.zeros((2, 3, 3), np.uint8)
    rgb[0, 0] = [255, 0, 0]
    rgb[0, 1] = [0, 255, 0]
    rgb[0, 2] = [0, 0, 255]
    rgb[1] = [200, 100, 50]
    img = read_image(write_png(tmp_path / "c.png", rgb))
    want = np.round(rgb @ np.array([0.299, 0.587, 0.114]))
    assert np.abs(img.astype(int) - want).max() <= 1, img  # Pillow's integer ITU-R 601 luminance


def test_rgba_with_differing_channels_is_luminance_of_its_colours(tmp_path: Path) -> None:
    rgb = RNG.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    rgba = np.dstack([rgb, np.zeros((5, 6), np.uint8)])  # fully transparent: alpha still ignored
    img = read_image(write_png(tmp_path / "rgba.png", rgba))
    np.testing.assert_array_equal(img, np.asarray(Image.fromarray(rgb).convert("L")))


def test_palette_grey_tile_reads_its_grey_values(tmp_path: Path) -> None:
    path = tmp_path / "p.png"
    Image.fromarray(GREY).convert("P").save(path)  # a palette of greys
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_image(path), GREY)


def test_palette_with_transparency_reads_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "pt.png"
    im = Image.fromarray(GREY).convert("P")
    im.save(path, transparency=0)
    assert "transparency" in Image.open(path).info
    np.testing.assert_array_equal(read_image(path), GREY)


# ---------------------------------------------------------------------------------------------------
# masks


def test_1_bit_mask_reads_0_and_1(tmp_path: Path) -> None:
    path = tmp_path / "m1.png"
    Image.fromarray(MASK).save(path)
    m = read_mask(path)
    assert m.dtype == np.bool_ and m.sum() == MASK.sum()
    np.testing.assert_array_equal(m.astype(np.uint8), MASK.astype(np.uint8))


@pytest.mark.parametrize("value", [1, 255, 65535], ids=["16bit-1", "16bit-255", "16bit-65535"])
def test_16_bit_grey_mask_is_salt_above_0_whatever_the_value(tmp_path: Path, value: int) -> None:
    path = write_png(tmp_path / "m16.png", MASK.astype(np.uint16) * np.uint16(value))
    np.testing.assert_array_equal(read_mask(path), MASK)


@pytest.mark.parametrize("channel", [0, 1, 2], ids=["red", "green", "blue"])
def test_rgb_mask_is_salt_where_any_channel_is_above_0(tmp_path: Path, channel: int) -> None:
    rgb = np.zeros((101, 101, 3), np.uint8)
    rgb[MASK, channel] = 255
    np.testing.assert_array_equal(read_mask(write_png(tmp_path / "m.png", rgb)), MASK)


def test_rgba_mask_ignores_alpha(tmp_path: Path) -> None:
    rgba = np.zeros((101, 101, 4), np.uint8)
    rgba[MASK, 1] = 255
    rgba[..., 3] = 255 * ~MASK  # alpha opposite to the colours: must not matter
    np.testing.assert_array_equal(read_mask(write_png(tmp_path / "m.png", rgba)), MASK)


def test_palette_mask_reads_its_colours(tmp_path: Path) -> None:
    path = tmp_path / "pm.png"
    im = Image.fromarray(MASK.astype(np.uint8), mode="L").convert("P")
    im.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)  # index 1 is green
    im.save(path)
    assert Image.open(path).mode == "P"
    np.testing.assert_array_equal(read_mask(path), MASK)


def test_grey_with_alpha_mask_reads_its_grey(tmp_path: Path) -> None:
    path = tmp_path / "la.png"
    Image.fromarray(np.dstack([MASK.astype(np.uint8) * 255, np.full(MASK.shape, 7, np.uint8)]), "LA").save(
        path
    )
    np.testing.assert_array_equal(read_mask(path), MASK)


@pytest.mark.parametrize(
    "colours",
    [
        [(255, 0, 0), (0, 255, 0)],
        [(0, 0, 0), (255, 0, 0), (0, 255, 0)],
        [(0, 0, 0), (255, 255, 255), (9, 9, 9)],
    ],
    ids=["two-colours-no-black", "black-and-two-colours", "black-and-two-greys"],
)
def test_colour_mask_with_more_than_black_and_one_colour_is_not_binary(
    tmp_path: Path, colours: list[tuple[int, int, int]]
) -> None:
    rgb = np.zeros((4, 4, 3), np.uint8)
    for k, c in enumerate(colours):
        rgb[k] = c
    path = write_png(tmp_path / "nb.png", rgb)
    with pytest.raises(DataError, match="mask is not binary: colours") as info:
        read_mask(path)
    assert str(info.value).startswith(f"{path}: ")
    assert read_mask(path, strict=False).sum() == 4 * sum(any(c) for c in colours)


def test_16_bit_colour_mask_is_refused(tmp_path: Path) -> None:
    samples = np.zeros((3, 3, 3), np.uint16)
    samples[1, 1] = [1, 1, 1]  # would read as 0 (the high byte): a silently empty mask
    path = raw_png(tmp_path / "m.png", samples, 16, 2)
    with pytest.raises(DataError, match="unsupported mask: 16-bit colour") as info:
        read_mask(path)
    assert str(info.value).startswith(f"{path}: ")


# ---------------------------------------------------------------------------------------------------
# other pixel formats


def _float_tiff(path: Path) -> Path:
    Image.fromarray(np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)).save(path, format="TIFF")
    return path


def _int32_tiff(path: Path) -> Path:
    Image.fromarray(np.array([[1, 70000]], np.int32)).save(path, format="TIFF")
    return path


def _cmyk_jpeg(path: Path) -> Path:
    Image.new("CMYK", (4, 4), (10, 20, 30, 40)).save(path, format="JPEG")
    return path


@pytest.mark.parametrize("reader", [read_image, read_mask], ids=["image", "mask"])
@pytest.mark.parametrize(
    ("write", "what"),
    [
        (_float_tiff, "F (32-bit float, TIFF)"),
        (_int32_tiff, "I (32-bit integer, TIFF)"),
        (_cmyk_jpeg, "CMYK"),
    ],
    ids=["float-tiff", "int32-tiff", "cmyk-jpeg"],
)
def test_other_pixel_formats_are_refused_naming_the_file(tmp_path: Path, reader, write, what: str) -> None:
    path = write(tmp_path / "odd.png")  # a .png name does not make it one
    with pytest.raises(DataError) as info:
        reader(path)
    msg = str(info.value)
    assert msg.startswith(f"{path}: unsupported pixel format {what}") and "\n" not in msg, msg


# ---------------------------------------------------------------------------------------------------
# one rule in data check, training and prediction


def _odd_encodings(root: Path) -> dict[str, np.ndarray]:
    """A plain-folder dataset whose tiles and masks use every accepted encoding; the expected pixels."""
    expected = {}
    wide = np.linspace(100, 300, 101 * 101).reshape(101, 101).astype(np.uint16)
    write_png(root / "images" / "i16.png", wide)
    write_png(root / "masks" / "i16.png", MASK.astype(np.uint16))  # a 16-bit {0, 1} mask
    expected["i16"] = (wide >> 8).astype(np.uint8)
    Image.fromarray(MASK).save(root / "images" / "b1.png")
    green = np.zeros((101, 101, 3), np.uint8)
    green[MASK, 1] = 255
    write_png(root / "masks" / "b1.png", green)  # red channel all 0
    expected["b1"] = MASK.astype(np.uint8) * 255
    write_png(root / "images" / "rgba.png", np.dstack([GREY, GREY, GREY, np.full(GREY.shape, 9, np.uint8)]))
    Image.fromarray(MASK).save(root / "masks" / "rgba.png")
    expected["rgba"] = GREY
    return expected


def test_data_check_training_and_prediction_read_every_encoding_alike(tmp_path: Path) -> None:
    from saltseg.inference.predict import _batches, tile_ids
    from saltseg.training.data import LabelledTiles, TileDataset

    root = tmp_path / "odd"
    expected = _odd_encodings(root)
    rep = check_dataset(root)
    assert rep.ok, rep.problems
    assert rep.coverage_hist["(25,50%]"] == 0 and sum(rep.coverage_hist.values()) == 3
    assert rep.empty_fraction == 0.0  # the green mask and the 16-bit {0, 1} mask are not empty

    cached = LabelledTiles.load(root, cache=True)
    assert cached.images is not None and cached.masks is not None
    for k, tile_id in enumerate(cached.ids):
        np.testing.assert_array_equal(cached.images[k], expected[tile_id])
        np.testing.assert_array_equal(cached.masks[k], MASK)
    lazy = LabelledTiles.load(root, cache=False)
    dataset = TileDataset(
        [lazy.source.image_path(i) for i in lazy.ids], [lazy.source.mask_path(i) for i in lazy.ids]
    )
    for k, tile_id in enumerate(lazy.ids):
        x, y = dataset[k]
        np.testing.assert_allclose(x[0].numpy(), expected[tile_id] / 255.0, atol=1e-6)
        np.testing.assert_array_equal(y[0].numpy().astype(bool), MASK)

    ids, paths = tile_ids(root, split="all")
    for chunk, imgs in _batches(ids, paths, size=8):
        for tile_id, img in zip(chunk, imgs, strict=True):
            np.testing.assert_array_equal(img, expected[tile_id])


def test_data_check_reports_an_unsupported_format_and_a_red_less_mask_is_fine(
    tiny_kaggle_dir: MakeTiny, capsys: pytest.CaptureFixture[str]
) -> None:
    d = tiny_kaggle_dir(n_train=4, n_test=1, n_empty=1)
    tile = d.train_ids[-1]
    green = np.zeros((101, 101, 3), np.uint8)
    green[d.masks[tile], 1] = 255
    write_png(d.mask(tile), green)
    assert check_dataset(d.root).ok  # train.csv's RLE still agrees with the green mask
    _float_tiff(d.image(d.test_ids[0]))
    assert main(["data", "check", str(d.root)]) == 1
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "unsupported image format" in x)
    assert f"{d.test_ids[0]}.png" in line and "32-bit float" in line
    assert "RLE disagrees" not in out


def test_train_refuses_an_unsupported_tile_naming_it(tmp_path: Path) -> None:
    from saltseg.training.data import LabelledTiles

    root = tmp_path / "d"
    write_png(root / "images" / "a.png", kaggle_image(RNG))
    write_png(root / "masks" / "a.png", MASK.astype(np.uint8))
    _float_tiff(root / "images" / "b.png")
    write_png(root / "masks" / "b.png", MASK.astype(np.uint8))
    with pytest.raises(DataError, match="unsupported pixel format F") as info:
        LabelledTiles.load(root, cache=True)
    assert "b.png" in str(info.value)
