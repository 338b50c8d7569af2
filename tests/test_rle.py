"""Kaggle run-length encoding: round trips, pixel order, and rejection of malformed strings."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from saltseg.data.rle import TILE_SHAPE, rle_decode, rle_encode
from saltseg.errors import DataError, RLEError

shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))
masks = shapes.flatmap(lambda s: arrays(np.bool_, s))


def _reference_encode(mask: np.ndarray) -> str:
    """Plain-loop Kaggle RLE: walk pixels column by column, top to bottom, numbered from 1."""
    h, w = mask.shape
    runs: list[int] = []
    start = None
    for k in range(h * w):
        on = bool(mask[k % h, k // h])
        if on and start is None:
            start = k + 1
        if not on and start is not None:
            runs += [start, k + 1 - start]
            start = None
    if start is not None:
        runs += [start, h * w + 1 - start]
    return " ".join(map(str, runs))


@settings(max_examples=150, deadline=None)
@given(masks)
def test_round_trip_random(mask: np.ndarray) -> None:
    rle = rle_encode(mask)
    back = rle_decode(rle, mask.shape)
    assert back.dtype == np.bool_ and back.shape == mask.shape
    assert np.array_equal(back, mask)
    assert rle == _reference_encode(mask)


@settings(max_examples=100, deadline=None)
@given(st.data())
def test_decode_encode_round_trip_from_runs(data: st.DataObject) -> None:
    """Any valid non-touching sorted run list decodes and re-encodes to itself."""
    h, w = data.draw(shapes)
    n = h * w
    cuts = sorted(data.draw(st.sets(st.integers(1, n + 1), max_size=12)))
    if len(cuts) % 2:
        cuts = cuts[:-1]
    # runs [a, b) with a gap of at least one pixel between runs (so the canonical encoding is unique)
    pairs = [(a, b) for a, b in zip(cuts[0::2], cuts[1::2], strict=True)]
    pairs = [(a, b) for k, (a, b) in enumerate(pairs) if k == 0 or a > pairs[k - 1][1]]
    rle = " ".join(f"{a} {b - a}" for a, b in pairs)
    mask = rle_decode(rle, (h, w))
    assert int(mask.sum()) == sum(b - a for a, b in pairs)
    assert rle_encode(mask) == rle


def test_empty_full_and_single_pixels() -> None:
    empty = np.zeros(TILE_SHAPE, dtype=bool)
    assert rle_encode(empty) == ""
    assert not rle_decode("").any() and not rle_decode("   ").any()
    assert not rle_decode(None).any() and not rle_decode(float("nan")).any()
    full = np.ones(TILE_SHAPE, dtype=bool)
    assert rle_encode(full) == "1 10201"
    assert rle_decode("1 10201").all()
    for r, c in [(0, 0), (100, 0), (0, 100), (100, 100), (50, 37)]:
        m = empty.copy()
        m[r, c] = True
        rle = rle_encode(m)
        assert rle == f"{c * 101 + r + 1} 1"
        assert np.array_equal(rle_decode(rle), m)


def test_column_major_one_indexed_hand_example() -> None:
    # pixel numbers of a 3x3 image:   1 4 7
    #                                 2 5 8
    #                                 3 6 9
    m = np.array([[1, 0, 0], [1, 0, 1], [0, 1, 1]], dtype=bool)
    assert rle_encode(m) == "1 2 6 1 8 2"
    assert np.array_equal(rle_decode("1 2 6 1 8 2", (3, 3)), m)
    # non-square: 2 rows x 3 columns, numbered 1 3 5 / 2 4 6
    r = np.array([[0, 1, 1], [0, 0, 1]], dtype=bool)
    assert rle_encode(r) == "3 1 5 2"
    assert np.array_equal(rle_decode("3 1 5 2", (2, 3)), r)
    # the docstring example
    assert rle_encode(np.array([[0, 1], [1, 1]], dtype=bool)) == "2 3"


def test_runs_wrap_across_columns_and_touch_borders() -> None:
    m = np.zeros(TILE_SHAPE, dtype=bool)
    m[99:, 0] = True  # bottom of column 0 ...
    m[:3, 1] = True  # ... continues at the top of column 1: one run
    m[100, 100] = True  # the very last pixel
    assert rle_encode(m) == "100 5 10201 1"
    assert np.array_equal(rle_decode("100 5 10201 1"), m)
    last_column = np.zeros(TILE_SHAPE, dtype=bool)
    last_column[:, 100] = True
    assert rle_encode(last_column) == "10101 101"


def test_encode_accepts_0_1_and_255_arrays_and_rejects_3d() -> None:
    m = np.zeros((4, 4), dtype=np.uint8)
    m[1:3, 2] = 255
    assert rle_encode(m) == "10 2"
    assert rle_encode(m.astype(np.uint16) * 257) == "10 2"
    with pytest.raises(ValueError, match="2-D"):
        rle_encode(np.zeros((1, 4, 4), dtype=bool))


def test_extra_whitespace_is_accepted() -> None:
    assert np.array_equal(rle_decode(" 1  2\t5 1 \n", (3, 3)), rle_decode("1 2 5 1", (3, 3)))


@pytest.mark.parametrize(
    ("rle", "message"),
    [
        ("1 2 3", "odd number of values"),
        ("5", "odd number of values"),
        ("1 x", "non-integer value 'x'"),
        ("1.0 2", "non-integer value '1.0'"),
        ("1 2.5", "non-integer value '2.5'"),
        ("1_0 2", "non-integer value '1_0'"),
        ("1e3 2", "non-integer value '1e3'"),
        ("\u0661 2", "non-integer value"),  # an Arabic-Indic digit that int() would accept
        ("0 3", "run start 0 < 1"),
        ("-4 3", "run start -4 < 1"),
        ("1 0", "run length 0 < 1"),
        ("7 -2", "run length -2 < 1"),
        ("1 5 3 2", "runs overlap"),
        ("5 2 5 3", "runs overlap"),
        ("1 3 3 1", "runs overlap"),
        ("10 2 1 2", "not sorted"),
        ("20 1 10 2 30 1", "not sorted"),
        ("10201 2", "past the last pixel 10201"),
        ("10202 1", "past the last pixel"),
        ("1 10202", "past the last pixel"),
        ("99999999999999999999999 1", "out of range"),
        ("1 99999999999999999999999", "out of range"),
    ],
)
def test_malformed_rle_is_rejected_with_clear_message(rle: str, message: str) -> None:
    with pytest.raises(RLEError, match=message) as info:
        rle_decode(rle)
    assert isinstance(info.value, DataError)  # the CLI turns it into one `error:` line
    assert "\n" not in str(info.value)


def test_touching_runs_decode_to_their_union() -> None:
    # not canonical (an encoder merges them) but not overlapping either: accepted
    assert np.array_equal(rle_decode("1 2 3 1", (3, 3)), rle_decode("1 3", (3, 3)))


def test_out_of_range_depends_on_shape() -> None:
    assert rle_decode("9 1", (3, 3))[2, 2]
    with pytest.raises(RLEError, match="past the last pixel 9"):
        rle_decode("9 2", (3, 3))
