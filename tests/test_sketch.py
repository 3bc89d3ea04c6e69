"""The distribution summary: exact, mergeable in any order, bounded, position-free."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from bnorm_cli import BatchNorm
from bnorm_cli.core import sketch as sk
from bnorm_cli.core.errors import StatsFileError
from bnorm_cli.core.fold import Fold
from bnorm_cli.core.moments import MomentsTable, table_moments
from bnorm_cli.io import stats_file


def _hist_of(x: np.ndarray, batch: int = 1000) -> sk.Histogram:
    t = table_moments(pl.DataFrame({"x": x}), ["x"], batch)
    assert t.sketch is not None
    return t.sketch[0]


def _exact_counts(x: np.ndarray, exp: int) -> dict[int, int]:
    keys, counts = np.unique(np.floor(np.ldexp(x, -exp)).astype(np.int64), return_counts=True)
    return dict(zip(keys.tolist(), counts.tolist(), strict=True))


def test_counts_are_exact_floor_of_scaled_values() -> None:
    x = np.random.default_rng(0).normal(3.0, 2.0, 5000)
    h = _hist_of(x)
    assert h.total == x.size
    assert dict(zip(h.index.tolist(), h.count.tolist(), strict=True)) == _exact_counts(x, h.exp)
    # width: at most std/32, at least std/64 (per batch; batches look alike here)
    assert x.std() / 70 < h.width <= x.std() / 30


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.normal(0, 1, 500) * 2.0**-40,
        lambda r: 2.0**-1000 * r.integers(-300, 300, 500),
        lambda r: 2.0**1000 * r.integers(-300, 300, 500),
        lambda r: -(2.0**52) - r.integers(0, 900, 500).astype(float),  # 2^52 - first odd: no float
        lambda r: -(2.0**52) - 2 * r.integers(0, 900, 500).astype(float),
        lambda r: 2.0**52 + r.integers(0, 900, 500).astype(float),
        lambda r: r.integers(-5, 5, 500) + np.where(r.random(500) < 0.5, -0.0, 0.0),
    ],
)
def test_count_values_against_exact_rationals(make: object) -> None:
    """Each bucket index is floor(x / 2^exp), computed here in exact rationals."""
    from fractions import Fraction

    x = make(np.random.default_rng(5))  # type: ignore[operator]
    low, high = float(x.min()), float(x.max())
    # widths at which the values span fewer than 2^20 buckets (the dense path)
    fine = max(sk.exp_for_range(low, high), math.frexp(high - low)[1] - 19)
    for exp in (fine, fine + 5):
        index = [math.floor(Fraction(v) / Fraction(2) ** exp) for v in x.tolist()]
        assert max(index) - min(index) < 1 << 20  # the dense path (not np.unique's)
        want: dict[int, int] = {}
        for i in index:
            want[i] = want.get(i, 0) + 1
        h = sk.count_values(x.copy(), exp, cap=1 << 30, low=low, high=high)
        assert h.exp == exp and h.index.dtype == np.int64 and h.count.dtype == np.int64
        assert dict(zip(h.index.tolist(), h.count.tolist(), strict=True)) == want


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ((0.0, 1.0), (0.5, 1.0)),  # overlapping: neighbouring buckets (added densely)
        ((0.0, 1.0), (2.0, 0.01)),  # disjoint, close: one span, with a gap
        ((0.0, 1.0), (1e9, 1.0)),  # far apart: keys sorted instead
        ((-1e9, 1.0), (0.0, 1e-3)),  # another width (coarsened), far apart
    ],
)
def test_merge_counts_equal_the_counts_of_the_union(
    a: tuple[float, float], b: tuple[float, float]
) -> None:
    rng = np.random.default_rng(3)
    xa, xb = rng.normal(*a, 3000), rng.normal(*b, 2000)
    ha, hb = _hist_of(xa), _hist_of(xb)
    merged = sk.merge(ha, hb, cap=1 << 30)
    assert merged.exp == max(ha.exp, hb.exp)
    assert np.all(np.diff(merged.index) > 0) and np.all(merged.count > 0)
    got = dict(zip(merged.index.tolist(), merged.count.tolist(), strict=True))
    assert got == _exact_counts(np.concatenate([xa, xb]), merged.exp)
    assert sk.merge(hb, ha, cap=1 << 30) == merged


@pytest.mark.parametrize("seed", range(5))
def test_merge_in_any_order_is_the_whole_bit_for_bit(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.normal(0, 1, 20_000), rng.standard_cauchy(3000), [1e9] * 7])
    batch = 500
    whole = table_moments(pl.DataFrame({"x": x}), ["x"], batch)
    assert whole.sketch is not None
    # shards cut at batch boundaries, computed alone, merged in a random order
    cuts = np.sort(rng.choice(np.arange(1, x.size // batch), 6, replace=False)) * batch
    pieces = np.split(x, cuts)
    tables = [table_moments(pl.DataFrame({"x": p}), ["x"], batch) for p in pieces]
    order = rng.permutation(len(tables))
    merged = sk.Histogram.empty()
    for i in order:
        merged = sk.merge(merged, tables[i].sketch[0])  # type: ignore[index]
    assert merged == whole.sketch[0]
    # and a tree of merges
    pair = [sk.merge(tables[i].sketch[0], tables[i + 1].sketch[0]) for i in (0, 2, 4)]  # type: ignore[index]
    tree = sk.merge(sk.merge(pair[2], tables[6].sketch[0]), sk.merge(pair[1], pair[0]))  # type: ignore[index]
    assert tree == whole.sketch[0]
    assert whole.sketch[0].index.size <= sk.MAX_BUCKETS


def test_fit_summary_does_not_depend_on_chunking() -> None:
    rng = np.random.default_rng(1)
    df = pl.DataFrame({"a": rng.normal(5, 2, 30_000), "b": rng.exponential(1, 30_000)})
    ref = BatchNorm(batch_size=256).fit(df).summary_
    assert ref is not None
    for rows in (256, 512, 2560, 30_000):
        model = BatchNorm(batch_size=256)
        model.fit([df.slice(i, rows) for i in range(0, df.height, rows)])
        got = model.summary_
        assert got is not None
        assert got.hist == ref.hist
        assert np.array_equal(got.zeros, ref.zeros) and np.array_equal(got.nulls, ref.nulls)


def test_fold_of_shards_equals_serial_fold() -> None:
    rng = np.random.default_rng(2)
    df = pl.DataFrame({"x": rng.normal(0, 1, 8192)})
    serial = Fold(["x"], 128, 0.1)
    serial.add(table_moments(df, ["x"], 128))
    shards = [
        table_moments(df.slice(a, 1024), ["x"], 128, first_batch=a // 128, first_row=a)
        for a in range(0, 8192, 1024)
    ]
    fold = Fold(["x"], 128, 0.1)
    fold.add(MomentsTable.concat(shards[:3]))
    for s in shards[3:]:
        fold.add(MomentsTable.from_arrow(s.to_arrow()))  # across a process boundary
    assert fold.summary is not None and serial.summary is not None
    assert fold.summary.hist == serial.summary.hist


def test_resolution_does_not_depend_on_where_values_lie() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1e-3, 10_000)
    near, far = _hist_of(noise), _hist_of(1e9 + noise)
    assert near.width == far.width <= 1e-3 / 30
    assert far.index.size > 100  # not one bucket (DDSketch at 1%: all in one)
    epoch = _hist_of(1.7e9 + rng.normal(0, 3600.0, 10_000))  # epoch seconds, std 1 h
    assert epoch.width <= 3600 / 30


def test_a_column_that_jumps_keeps_both_places() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.normal(0, 1, 5000), 1e9 + rng.normal(0, 1, 5000)])
    h = _hist_of(x)  # batches of 1000: none straddles the jump
    assert h.width <= 1 / 30
    low = h.index < 2**20
    assert h.count[low].sum() == 5000 and h.count[~low].sum() == 5000


def test_bounded_buckets_and_exact_coarsening() -> None:
    rng = np.random.default_rng(5)
    x = rng.standard_cauchy(50_000)  # heavy tails: would occupy ~30k buckets
    h = _hist_of(x, batch=50_000)
    assert h.index.size <= sk.MAX_BUCKETS and h.total == x.size
    assert dict(zip(h.index.tolist(), h.count.tolist(), strict=True)) == _exact_counts(x, h.exp)


@pytest.mark.parametrize(
    "make",
    [
        lambda r: r.normal(10, 3, 100_000),
        lambda r: r.lognormal(0, 1, 100_000),
        lambda r: np.concatenate([r.normal(-5, 1, 50_000), r.normal(5, 1, 50_000)]),
        lambda r: r.integers(0, 20, 100_000).astype(float),
    ],
)
def test_quantiles_within_one_bucket(make: object) -> None:
    x = make(np.random.default_rng(6))  # type: ignore[operator]
    h = _hist_of(x, batch=65536)
    for q in (0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        exact = np.quantile(x, q, method="inverted_cdf")
        assert abs(h.quantile(q) - exact) <= h.width / 2


def test_exact_null_nan_zero_counts() -> None:
    x = pl.Series("x", [0.0, None, math.nan, -0.0, 1.5, None, 0.0, 2.0])
    model = BatchNorm(batch_size=3).fit(pl.DataFrame({"x": x}))
    s = model.summary_
    assert s is not None
    assert int(s.nulls[0]) == 2 and int(s.zeros[0]) == 3
    doc = stats_file.to_dict(model)["columns"]["x"]
    assert doc["sketch"]["nulls"] == 2 and doc["sketch"]["nans"] == 1
    assert doc["sketch"]["zeros"] == 3


def test_statistics_file_round_trip_and_files_without_a_summary(tmp_path) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(7)
    df = pl.DataFrame(
        {"a": rng.normal(0, 1, 3000), "e": [None] * 3000}, schema={"a": pl.Float64, "e": pl.Float64}
    )
    model = BatchNorm(batch_size=1000).fit(df)
    path = tmp_path / "s.json"
    stats_file.save(model, path)
    back = stats_file.load(path)
    assert back.summary_ is not None and model.summary_ is not None
    assert back.summary_.hist == model.summary_.hist
    assert stats_file.dumps(back) == stats_file.dumps(model)
    # a file written before the summary existed still loads, without one
    doc = json.loads(path.read_text())
    for col in doc["columns"].values():
        del col["sketch"]
    old = stats_file.from_dict(doc)
    assert old.summary_ is None
    assert old.transform(df).height == 3000
    # a summary that does not add up is refused
    doc = json.loads(path.read_text())
    doc["columns"]["a"]["sketch"]["buckets"][0][1][0] += 1
    with pytest.raises(Exception, match="sketch counts"):
        stats_file.from_dict(doc)
    # a count that is not a non-negative integer is named by its place in the file
    for bad, says in [(-1, "-1 is less than the minimum of 0"), (2.5, "2.5 is not of type")]:
        doc = json.loads(path.read_text())
        counts = doc["columns"]["a"]["sketch"]["buckets"][-1][1]
        counts[-1] = bad
        where = f"columns/a/sketch/buckets/{len(doc['columns']['a']['sketch']['buckets']) - 1}"
        with pytest.raises(StatsFileError, match=f"{where}/1/{len(counts) - 1}: {says}"):
            stats_file.from_dict(doc)
    doc = json.loads(path.read_text())
    doc["columns"]["a"]["sketch"]["buckets"][0][1] = "7"
    with pytest.raises(StatsFileError, match="buckets/0/1: '7' is not of type 'array'"):
        stats_file.from_dict(doc)


def _reference_text(doc: dict[str, object]) -> str:
    """The statistics file's text as json writes it indented, each list of integers
    then joined onto one line (the layout bnorm has always written)."""
    import re

    text = json.dumps(doc, indent=2, allow_nan=False)
    ints = re.compile(r"\[\s*(-?\d+(?:,\s*-?\d+)*)\s*\]")
    joined = ints.sub(lambda m: "[" + ", ".join(x.strip() for x in m[1].split(",")) + "]", text)
    return joined + "\n"


def test_the_statistics_file_text_is_json_indented_with_counts_on_one_line() -> None:
    """`dumps` writes the sketches' runs itself (json's indenting encoder is slow over
    many counts): the same text as the reference, whatever the runs."""
    rng = np.random.default_rng(11)
    n = 5_000
    df = pl.DataFrame(
        {
            "wide": rng.standard_cauchy(n),  # many runs with gaps
            "const": np.full(n, 2.5),  # one bucket
            "null": pl.Series([None] * n, dtype=pl.Float64),  # no values: no runs
            "jump": np.where(np.arange(n) < n // 2, 0.0, 1e9) + rng.normal(size=n),
            "ints": rng.integers(-3, 4, n).astype(np.float64),
        }
    )
    for batch in (7, 1000):
        model = BatchNorm(batch_size=batch).fit(df)
        assert stats_file.dumps(model) == _reference_text(stats_file.to_dict(model))
        back = stats_file.from_dict(json.loads(stats_file.dumps(model)))
        assert back.summary_ is not None and model.summary_ is not None
        assert back.summary_.hist == model.summary_.hist


def test_scalar_and_vector_batch_exponents_agree() -> None:
    rng = np.random.default_rng(8)
    n = rng.integers(0, 4, 2000)
    var = np.where(rng.random(2000) < 0.2, 0.0, rng.lognormal(0, 30, 2000))
    low = -rng.lognormal(0, 30, 2000) * (rng.random(2000) < 0.5)
    high = rng.lognormal(0, 30, 2000)
    vec = sk.batch_exponents(n, var, low, high)
    for i in range(2000):
        assert sk.batch_exponent(int(n[i]), float(var[i]), float(low[i]), float(high[i])) == vec[i]
