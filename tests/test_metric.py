"""The competition metric at every threshold boundary, against an independent loop, and its breakdowns."""

from __future__ import annotations

import numpy as np
import pytest

from saltseg.metrics.kaggle import (
    COVERAGE_BINS,
    DEPTH_BANDS,
    THRESHOLDS,
    coverage,
    coverage_class,
    depth_band,
    dice_scores,
    iou_scores,
    kaggle_score,
    kaggle_scores,
    score_breakdown,
)


def pair(inter: int, union: int, shape: tuple[int, int] = (101, 101)) -> tuple[np.ndarray, np.ndarray]:
    """(pred, truth) with exactly ``inter`` common pixels and ``union`` pixels in either."""
    n = shape[0] * shape[1]
    assert 0 <= inter <= union <= n
    only_truth = (union - inter) // 2
    truth, pred = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    truth[:inter] = pred[:inter] = True
    truth[inter : inter + only_truth] = True
    pred[inter + only_truth : union] = True
    pred, truth = pred.reshape(shape), truth.reshape(shape)
    assert np.count_nonzero(pred & truth) == inter and np.count_nonzero(pred | truth) == union
    return pred, truth


def reference_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """The README's metric, one image at a time, with float IoU and thresholds k/20."""
    total = 0.0
    for p, t in zip(pred, truth, strict=True):
        if not t.any():
            s = 1.0 if not p.any() else 0.0
        elif not p.any():
            s = 0.0
        else:
            iou = np.logical_and(p, t).sum() / np.logical_or(p, t).sum()
            s = sum(1 for k in range(10, 20) if iou > k / 20) / 10
        total += s
    return total / len(pred)


def test_thresholds() -> None:
    assert THRESHOLDS.tolist() == [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]


@pytest.mark.parametrize(
    ("inter", "union", "hits"),
    [
        (10, 20, 0),  # IoU exactly 0.50: not > 0.50
        (9, 20, 0),
        (101, 200, 1),  # 0.505
        (11, 20, 1),  # exactly 0.55: > 0.50 only
        (111, 200, 2),  # 0.555
        (12, 20, 2),  # exactly 0.60
        (3, 4, 5),  # exactly 0.75: 0.50..0.70
        (17, 20, 7),  # exactly 0.85
        (18, 20, 8),  # exactly 0.90
        (19, 20, 9),  # exactly 0.95: 0.50..0.90
        (191, 200, 10),  # 0.955
        (24, 25, 10),  # 0.96
        (20, 20, 10),  # IoU 1
        (10201, 10201, 10),  # full masks
        (0, 7, 0),  # disjoint
    ],
)
def test_each_threshold_boundary(inter: int, union: int, hits: int) -> None:
    pred, truth = pair(inter, union)
    assert kaggle_scores(pred[None], truth[None]).tolist() == [hits / 10]
    assert kaggle_score(pred, truth) == pytest.approx(hits / 10, abs=1e-12)
    assert reference_score(pred[None], truth[None]) == pytest.approx(hits / 10, abs=1e-12)


def test_empty_cases() -> None:
    empty = np.zeros((1, 101, 101), dtype=bool)
    some = empty.copy()
    some[0, 50, 50] = True
    assert kaggle_scores(empty, empty).tolist() == [1.0]  # empty truth, empty prediction
    assert kaggle_scores(some, empty).tolist() == [0.0]  # empty truth, one false-positive pixel
    assert kaggle_scores(empty, some).tolist() == [0.0]  # salt missed entirely
    assert kaggle_scores(some, some).tolist() == [1.0]
    batch_pred = np.concatenate([empty, some, empty, some])
    batch_truth = np.concatenate([empty, empty, some, some])
    assert kaggle_scores(batch_pred, batch_truth).tolist() == [1.0, 0.0, 0.0, 1.0]
    assert kaggle_score(batch_pred, batch_truth) == 0.5


def test_agrees_with_independent_loop_on_random_masks() -> None:
    rng = np.random.default_rng(12)
    n = 300
    truth = np.zeros((n, 24, 24), dtype=bool)
    pred = np.zeros_like(truth)
    for k in range(n):
        kind = k % 5
        if kind != 0:  # a fifth of the truths are empty
            r, c = rng.integers(0, 20, 2)
            truth[k, r : r + rng.integers(1, 12), c : c + rng.integers(1, 12)] = True
        if kind == 4:
            pred[k] = rng.random((24, 24)) < 0.3
        elif kind != 3:  # kind 3: empty prediction
            pred[k] = truth[k]
            flips = rng.random((24, 24)) < rng.uniform(0, 0.15)
            pred[k] ^= flips & (rng.random((24, 24)) < 0.5)
    ref = reference_score(pred, truth)
    assert 0.05 < ref < 0.95  # the cases are mixed, not all trivially 0 or 1
    assert abs(kaggle_score(pred, truth) - ref) < 1e-9
    per_image = kaggle_scores(pred, truth)
    for k in range(0, n, 7):
        assert per_image[k] == pytest.approx(reference_score(pred[k : k + 1], truth[k : k + 1]), abs=1e-12)


def test_all_exact_ious_on_a_small_grid_match_the_loop() -> None:
    """Every (inter, union) with union <= 40: exact-integer and float comparisons agree."""
    preds, truths = [], []
    for union in range(1, 41):
        for inter in range(union + 1):
            p, t = pair(inter, union, (8, 8))
            preds.append(p)
            truths.append(t)
    pred, truth = np.stack(preds), np.stack(truths)
    got = kaggle_scores(pred, truth)
    want = np.array([reference_score(pred[k : k + 1], truth[k : k + 1]) for k in range(len(pred))])
    assert np.array_equal(got, want)


def test_iou_and_dice_values() -> None:
    pred, truth = pair(11, 20)
    assert iou_scores(pred, truth)[0] == pytest.approx(0.55)
    assert dice_scores(pred, truth)[0] == pytest.approx(22 / 31)  # 2|PnT| / (|P| + |T|)
    empty = np.zeros((2, 5, 5), dtype=bool)
    assert iou_scores(empty, empty).tolist() == [1.0, 1.0]
    assert dice_scores(empty, empty).tolist() == [1.0, 1.0]
    one = empty.copy()
    one[:, 0, 0] = True
    assert iou_scores(one, empty).tolist() == [0.0, 0.0]
    assert dice_scores(empty, one).tolist() == [0.0, 0.0]
    rng = np.random.default_rng(0)
    p, t = rng.random((20, 9, 9)) < 0.4, rng.random((20, 9, 9)) < 0.4
    iou, dice = iou_scores(p, t), dice_scores(p, t)
    assert np.allclose(dice, 2 * iou / (1 + iou))  # the identity between the two


def test_shape_checks() -> None:
    with pytest.raises(ValueError, match="differs"):
        kaggle_scores(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        kaggle_scores(np.zeros((1, 1, 4, 4), bool), np.zeros((1, 1, 4, 4), bool))
    # a probability-like non-bool input is read as "non-zero is salt"
    assert kaggle_scores(np.ones((3, 3), np.uint8) * 255, np.ones((3, 3), bool)).tolist() == [1.0]


def test_coverage_and_coverage_class_boundaries() -> None:
    counts = [0, 1, 10, 11, 25, 26, 50, 51, 75, 76, 100]
    want = [0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    masks = np.zeros((len(counts), 10, 10), dtype=bool)
    for k, c in enumerate(counts):
        masks[k].reshape(-1)[:c] = True
    assert np.allclose(coverage(masks), np.array(counts) / 100)
    assert coverage_class(masks).tolist() == want
    names = ["empty", "(0,10%]", "(10,25%]", "(25,50%]", "(50,75%]", "(75,100%]"]
    assert [b[0] for b in COVERAGE_BINS] == names


def test_depth_band() -> None:
    z = [50, 199.9, 200, 399, 400, 600, 799, 800, 959, float("nan")]
    assert depth_band(z).tolist() == [0, 0, 1, 1, 2, 3, 3, 4, 4, -1]
    assert len(DEPTH_BANDS) == 5


def test_score_breakdown_counts_scores_and_losses() -> None:
    truth = np.zeros((6, 10, 10), dtype=bool)
    truth[2].reshape(-1)[:5] = True  # (0,10%]
    truth[3].reshape(-1)[:5] = True  # (0,10%]
    truth[4].reshape(-1)[:60] = True  # (50,75%]
    truth[5].reshape(-1)[:] = True  # (75,100%]
    scores = np.array([1.0, 0.0, 0.5, 0.3, 0.9, 1.0])
    depths = np.array([100, 150, 250, np.nan, 900, 650])
    b = score_breakdown(scores, truth, depths)
    cov = {r["group"]: r for r in b["coverage"]}
    assert list(cov) == ["empty", "(0,10%]", "(50,75%]", "(75,100%]"]  # groups with no tile are left out
    assert [cov[g]["count"] for g in cov] == [2, 2, 1, 1]
    assert cov["empty"]["score"] == pytest.approx(0.5)
    assert cov["(0,10%]"]["score"] == pytest.approx(0.4)
    assert cov["empty"]["lost"] == pytest.approx(1.0 / 6)
    assert cov["(0,10%]"]["lost"] == pytest.approx(1.2 / 6)
    assert sum(r["lost"] for r in b["coverage"]) == pytest.approx(1 - scores.mean())
    dep = {r["group"]: r["count"] for r in b["depth"]}
    assert dep == {"z<200": 2, "200-400": 1, "600-800": 1, "z>=800": 1}  # the NaN depth is in no band
    assert "depth" not in score_breakdown(scores, truth)
