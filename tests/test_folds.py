"""K-fold splits: stratification by depth and coverage, seeding, order independence, save/load."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from saltseg.data.folds import coverage_strata, load_folds, make_folds, save_folds
from saltseg.errors import DataError


def _ids(n: int) -> list[str]:
    return [f"id{k:04d}" for k in range(n)]


def _sizes(folds: dict[str, int], k: int) -> list[int]:
    c = Counter(folds.values())
    return [c.get(i, 0) for i in range(k)]


def test_depth_rank_mod_k_with_distinct_depths() -> None:
    rng = np.random.default_rng(0)
    ids = _ids(53)
    z = rng.permutation(np.arange(100, 100 + 53 * 3, 3)).astype(float)
    folds = make_folds(ids, k=5, by="depth", depths=z, seed=3)
    by_depth = [ids[i] for i in np.argsort(z)]
    assert [folds[i] for i in by_depth] == [r % 5 for r in range(53)]
    # consecutive depths always go to different folds
    assert all(folds[a] != folds[b] for a, b in itertools.pairwise(by_depth))


def test_depth_with_ties_balances_each_depth_range_and_uses_the_seed() -> None:
    rng = np.random.default_rng(1)
    ids = _ids(200)
    z = rng.integers(50, 70, 200).astype(float)  # many ties
    folds = make_folds(ids, k=4, by="depth", depths=z, seed=0)
    assert _sizes(folds, 4) == [50, 50, 50, 50]
    # sorted by depth, the folds are rank mod k, ties in any order: the tiles of a depth occupying ranks
    # a..b-1 have exactly the folds {r mod k for r in a..b-1}
    start = 0
    for value in np.unique(z):
        group = [ids[i] for i in np.flatnonzero(z == value)]
        want = sorted(r % 4 for r in range(start, start + len(group)))
        assert sorted(folds[i] for i in group) == want, value
        start += len(group)
    # each fold's depth distribution matches: the mean depths differ by less than one tie group
    means = [z[[folds[i] == f for i in ids]].mean() for f in range(4)]
    assert max(means) - min(means) < 1.0
    assert make_folds(ids, k=4, by="depth", depths=z, seed=0) == folds  # seeded: reproducible
    assert make_folds(ids, k=4, by="depth", depths=z, seed=1) != folds  # ties broken differently


def _coverages(rng: np.random.Generator, n: int) -> np.ndarray:
    cov = rng.random(n)
    cov[rng.random(n) < 0.4] = 0.0  # about 40% empty, as in the real data
    return cov


def test_coverage_strata_classes() -> None:
    cov = np.array([0.0, 1e-4, 0.1, 0.1001, 0.55, 0.9, 1.0])
    assert coverage_strata(cov).tolist() == [0, 1, 1, 2, 6, 9, 10]


def test_coverage_stratification_balances_each_class() -> None:
    rng = np.random.default_rng(2)
    ids = _ids(301)
    cov = _coverages(rng, 301)
    folds = make_folds(ids, k=5, by="coverage", coverages=cov, seed=4)
    assert max(_sizes(folds, 5)) - min(_sizes(folds, 5)) <= 1
    strata = coverage_strata(cov)
    for s in np.unique(strata):
        per_fold = Counter(folds[ids[i]] for i in np.flatnonzero(strata == s))
        counts = [per_fold.get(f, 0) for f in range(5)]
        assert max(counts) - min(counts) <= 1, (s, counts)


def test_depth_coverage_stratification() -> None:
    rng = np.random.default_rng(3)
    n, k = 240, 4
    ids = _ids(n)
    cov = _coverages(rng, n)
    z = rng.permutation(n).astype(float) + 50  # distinct depths
    folds = make_folds(ids, k=k, by="depth_coverage", depths=z, coverages=cov, seed=0)
    assert _sizes(folds, k) == [60, 60, 60, 60]
    strata = coverage_strata(cov)
    order = np.lexsort([z, strata])  # coverage class first, then depth
    ranked = [folds[ids[i]] for i in order]
    assert ranked == [r % k for r in range(n)]
    for s in np.unique(strata):
        members = [i for i in order if strata[i] == s]
        # within a coverage class, consecutive depths go to different folds
        assert all(folds[ids[a]] != folds[ids[b]] for a, b in itertools.pairwise(members))


def test_random_folds_are_seeded_and_balanced() -> None:
    ids = _ids(103)
    a = make_folds(ids, k=5, by="random", seed=7)
    assert a == make_folds(ids, k=5, by="random", seed=7)
    assert a != make_folds(ids, k=5, by="random", seed=8)
    assert sorted(_sizes(a, 5)) == [20, 20, 21, 21, 21]


@pytest.mark.parametrize("by", ["depth", "coverage", "depth_coverage", "random"])
def test_fold_of_an_id_does_not_depend_on_input_order(by: str) -> None:
    rng = np.random.default_rng(5)
    n = 97
    ids = [f"t{v:08x}" for v in rng.integers(0, 2**31, n)]
    assert len(set(ids)) == n
    z = rng.integers(50, 80, n).astype(float)
    cov = _coverages(rng, n)
    folds = make_folds(ids, k=5, by=by, depths=z, coverages=cov, seed=11)
    assert set(folds) == set(ids) and set(folds.values()) == set(range(5))
    for trial in range(3):
        perm = np.random.default_rng(100 + trial).permutation(n)
        shuffled = make_folds(
            [ids[i] for i in perm], k=5, by=by, depths=z[perm], coverages=cov[perm], seed=11
        )
        assert shuffled == folds


@pytest.mark.parametrize(("n", "k"), [(10, 2), (11, 3), (3199, 5), (7, 3)])
def test_fold_sizes_balanced(n: int, k: int) -> None:
    z = np.random.default_rng(n).integers(50, 960, n).astype(float)
    sizes = _sizes(make_folds(_ids(n), k=k, depths=z), k)
    assert sum(sizes) == n and max(sizes) - min(sizes) <= 1


def test_make_folds_errors() -> None:
    ids = _ids(10)
    z = np.arange(10, dtype=float)
    with pytest.raises(DataError, match="at least 2"):
        make_folds(ids, k=1, depths=z)
    with pytest.raises(DataError, match="use at most 5 folds"):  # 1-tile validation folds score nothing
        make_folds(ids, k=6, depths=z)
    assert len(set(make_folds(ids, k=5, depths=z).values())) == 5
    with pytest.raises(DataError, match="duplicate ids"):
        make_folds([*ids[:9], ids[0]], depths=z)
    with pytest.raises(DataError, match="need depths"):
        make_folds(ids, by="depth")
    with pytest.raises(DataError, match="need masks"):
        make_folds(ids, by="coverage")
    z_nan = z.copy()
    z_nan[3] = np.nan
    with pytest.raises(DataError, match="1 tiles have no depth"):
        make_folds(ids, depths=z_nan)
    with pytest.raises(ValueError, match="one value per id"):
        make_folds(ids, depths=z[:9])
    with pytest.raises(ValueError, match="unknown stratification"):
        make_folds(ids, by="colour", depths=z)  # type: ignore[arg-type]


def test_save_load_round_trip(tmp_path: Path) -> None:
    z = np.random.default_rng(9).integers(50, 960, 40).astype(float)
    folds = make_folds(_ids(40), k=5, depths=z)
    path = tmp_path / "sub" / "folds.csv"
    save_folds(path, folds)
    assert load_folds(path) == folds
    lines = path.read_text().splitlines()
    assert lines[0] == "id,fold" and len(lines) == 41
    assert [p.name for p in path.parent.iterdir()] == ["folds.csv"]  # no temporary file left


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name,fold\na,1\n", "expected columns"),
        ("id,fold\na,one\n", "expected columns"),
        ("id,fold\na\n", "expected columns"),
        ("id,fold\na,1\na,2\n", "duplicate ids"),
        ("id,fold\na,-1\n", "0 or more"),
    ],
)
def test_load_folds_errors_name_the_file(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "folds.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as info:
        load_folds(path)
    assert str(path) in str(info.value)


def test_load_folds_missing_or_unreadable(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="folds file not found"):
        load_folds(tmp_path / "none.csv")
    bad = tmp_path / "bin.csv"
    bad.write_bytes(b"id,fold\n\xff\xfe\x00,1\n")
    with pytest.raises(DataError, match="unreadable folds file"):
        load_folds(bad)
