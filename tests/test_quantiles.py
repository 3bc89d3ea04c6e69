"""Exact quantiles out of core: equal to numpy.quantile, in few passes, within the budget."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator

import numpy as np
import polars as pl
import pytest

from bnorm_cli.core import brackets as br
from bnorm_cli.core import keysketch as ks
from bnorm_cli.core.errors import DataError
from bnorm_cli.engines.quantiles import column_quantiles

PROBS = [0.0, 1.0, 0.25, 0.5, 0.75, 0.1, 0.9, 0.01, 0.999, 0.9999, 1 / 3, 0.123456789, 0.5 + 1e-12]
INF = math.inf


def _reader(
    frame: pl.DataFrame, rows: int
) -> tuple[Callable[[], Iterator[pl.DataFrame]], list[int]]:
    """``passes`` over ``frame`` in slices of ``rows``, and a list counting the reads."""
    reads = [0]

    def passes() -> Iterator[pl.DataFrame]:
        reads[0] += 1
        for start in range(0, max(frame.height, 1), rows):
            yield frame.slice(start, rows)

    return passes, reads


def _valid(s: pl.Series) -> np.ndarray:
    a = s.cast(pl.Float64).to_numpy(allow_copy=True)
    return a[~np.isnan(a)]


def _numpy(frame: pl.DataFrame, probs: list[float]) -> np.ndarray:
    """The reference: numpy.quantile of each column's non-null, non-NaN values."""
    out = np.full((len(probs), frame.width), np.nan)
    for j, c in enumerate(frame.columns):
        v = _valid(frame.get_column(c))
        if v.size:
            with np.errstate(invalid="ignore"):
                out[:, j] = np.quantile(v, np.asarray(probs, np.float64))
    return out


def _with_nulls(x: np.ndarray, every: int) -> pl.Series:
    s = pl.Series("x", x)
    mask = np.zeros(x.size, bool)
    mask[::every] = True
    return s.scatter(np.flatnonzero(mask), None) if mask.any() else s


def _columns(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    ties = rng.normal(size=n)
    ties[rng.random(n) < 0.5] = 1.25  # half the values equal
    with_inf = rng.normal(size=n)
    with_inf[:: max(n // 5, 1)] = INF
    with_inf[1 :: max(n // 7, 1)] = -INF
    nan = rng.normal(size=n)
    nan[::3] = np.nan
    zeros = rng.choice(np.array([-0.0, 0.0, 1.0, -1.0]), n)
    return {
        "normal": rng.normal(size=n),
        "ties": ties,
        "cauchy": rng.standard_cauchy(n),
        "lognormal": rng.lognormal(0.0, 4.0, n),
        "near_1e9": 1e9 + rng.uniform(-1e-3, 1e-3, n),
        "constant": np.full(n, -7.5),
        "with_inf": with_inf,
        "nan": nan,
        "zeros": zeros,
        "integers": rng.integers(-3, 4, n).astype(np.float64),
        "tiny": rng.normal(size=n) * 1e-300,
    }


def _frame(rng: np.random.Generator, n: int) -> pl.DataFrame:
    cols = _columns(rng, n)
    f = pl.DataFrame(cols)
    return f.with_columns(
        _with_nulls(cols["normal"], 4).alias("normal"),
        pl.Series("all_null", [None] * n, pl.Float64),
    )


# -- the pure pieces ------------------------------------------------------------
def test_keys_order_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    bits = rng.integers(-(2**63), 2**63 - 1, 20000, dtype=np.int64)
    x = bits.view(np.float64)
    x = x[~np.isnan(x)]
    special = [-INF, -1e308, -1.0, -5e-324, -0.0, 0.0, 5e-324, 2.2e-308, 1.0, 1e308, INF]
    x = np.concatenate([x, special])
    k = ks.to_keys(x)
    back = ks.from_keys(k)
    assert np.array_equal(back, x + 0.0)  # -0.0 comes back as 0.0 (equal values)
    assert not np.signbit(back[x == 0]).any()
    order = np.argsort(x, kind="stable")
    assert np.all(np.diff(k[order]) >= 0)
    assert np.array_equal(np.sign(np.diff(k[order])), np.sign(np.diff(x[order])))
    assert (ks.key_of(-INF), ks.key_of(INF)) == (ks.KEY_MIN, ks.KEY_MAX)
    assert ks.value_of(ks.key_of(1e9) + 1) == np.nextafter(1e9, INF)


def test_every_key_between_the_ends_is_a_float() -> None:
    k = np.array([ks.KEY_MIN, ks.KEY_MIN + 1, -2, 0, 1, ks.KEY_MAX - 1, ks.KEY_MAX], np.int64)
    v = ks.from_keys(k)
    assert not np.isnan(v).any()
    assert np.array_equal(ks.to_keys(v), k)


@pytest.mark.parametrize("batch", [1, 7, 100, 5000])
def test_key_sketch_is_exact_bounded_and_canonical(batch: int) -> None:
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.standard_cauchy(4000), np.full(1000, 2.0)])
    keys = ks.to_keys(x)
    whole = ks.KeySketch(64)
    whole.add(keys)
    parts = ks.KeySketch(64)
    for i in range(0, keys.size, batch):
        parts.add(keys[i : i + batch])
    assert parts.shift == whole.shift and parts.index.size <= 64
    assert np.array_equal(parts.index, whole.index) and np.array_equal(parts.count, whole.count)
    u, c = np.unique(keys >> parts.shift, return_counts=True)
    assert np.array_equal(parts.index, u) and np.array_equal(parts.count, c)
    # the smallest shift that fits
    assert np.unique(keys >> (parts.shift - 1)).size > 64
    # each bucket's smallest and largest key
    b = keys >> parts.shift
    for i, idx in enumerate(parts.index.tolist()):
        inside = keys[b == idx]
        assert parts.bucket(i) == (int(inside.min()), int(inside.max()))


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 10, 11, 100, 1001, 65537])
def test_linear_rule_is_numpy_bit_for_bit(n: int) -> None:
    rng = np.random.default_rng(n)
    probs = np.concatenate([PROBS, rng.random(200)])
    for x in (rng.normal(size=n) * 10.0 ** rng.integers(-5, 5), rng.standard_cauchy(n)):
        s = np.sort(x)
        prev, nxt, gamma = br.linear_rule(n, probs)
        got = br.lerp(s[prev], s[nxt], gamma)
        assert np.array_equal(got, np.quantile(x, probs))


def test_linear_rule_keeps_numpys_nan_at_infinities() -> None:
    # numpy's lerp gives NaN where an order statistic it reads is infinite and the
    # weight makes inf * 0 or inf - inf; the same values must come out.
    for x in ([1.0, 2.0, INF], [1.0, INF], [-INF, 1.0], [INF, INF], [-INF, INF], [INF]):
        s = np.sort(np.asarray(x))
        prev, nxt, gamma = br.linear_rule(s.size, np.asarray(PROBS))
        with np.errstate(invalid="ignore"):
            want = np.quantile(s, PROBS)
        np.testing.assert_array_equal(br.lerp(s[prev], s[nxt], gamma), want)


def test_plan_keeps_what_fits_and_counts_the_rest() -> None:
    b = [br.Bracket(0, 10**6, 0, 500, (3,)), br.Bracket(2 * 10**6, 3 * 10**6, 900, 50, (901,))]
    steps = br.plan(b, 100, 1 << 20)
    assert [s.shift is None for s in steps] == [False, True]
    assert steps[0].buckets <= br.MAX_BUCKETS
    tiny = br.plan(b, 0, 0)
    assert all(s.shift is not None and 2 <= s.buckets <= br.MIN_BUCKETS for s in tiny)


# -- against numpy.quantile ------------------------------------------------------
@pytest.mark.parametrize("rows", [1, 7, 1000, 4999, 5000, 5042])
@pytest.mark.parametrize("budget", [1 << 30, 1 << 14, 256, 0])
def test_equals_numpy_quantile(rows: int, budget: int) -> None:
    f = _frame(np.random.default_rng(rows + budget), 5000 if rows > 1 else 400)
    passes, reads = _reader(f, rows)
    r = column_quantiles(passes, f.columns, PROBS, budget_bytes=budget)
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    assert r.exact and r.rank_error == 0.0
    assert r.passes == reads[0]
    assert r.peak_kept_bytes <= budget
    assert r.columns == tuple(f.columns) and r.probs == tuple(PROBS)
    if budget >= 1 << 30:
        assert r.passes == 1  # everything fitted: one read
    else:
        assert r.passes >= 2


@pytest.mark.parametrize("size", [0, 1, 2, 3, 17])
def test_small_and_empty_columns(size: int) -> None:
    rng = np.random.default_rng(size)
    f = pl.DataFrame({"a": rng.normal(size=size), "b": np.full(size, np.nan)})
    for budget in (1 << 20, 0):
        r = column_quantiles(_reader(f, 2)[0], ["a", "b"], PROBS, budget_bytes=budget)
        np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    r = column_quantiles(_reader(f, 2)[0], [], PROBS)
    assert r.values.shape == (len(PROBS), 0)
    r = column_quantiles(_reader(f, 2)[0], ["a"], [])
    assert r.values.shape == (0, 1)


def test_tiny_budget_refines_within_the_budget() -> None:
    rng = np.random.default_rng(5)
    n = 200_000
    f = pl.DataFrame({"x": rng.lognormal(0, 2, n), "y": 1e9 + rng.uniform(-1e-3, 1e-3, n)})
    passes, reads = _reader(f, 30_000)
    r = column_quantiles(passes, ["x", "y"], PROBS, budget_bytes=512)
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    assert r.peak_kept_bytes <= 512
    assert 3 <= r.passes == reads[0]
    # the bound on passes: 16 counters narrow a bracket at least 8-fold per pass
    assert r.passes <= 1 + math.ceil(64 / 3) + 1
    roomy = column_quantiles(_reader(f, 30_000)[0], ["x", "y"], PROBS, budget_bytes=1 << 20)
    np.testing.assert_array_equal(roomy.values, r.values)
    assert roomy.passes == 2 and roomy.peak_kept_bytes <= 1 << 20


def test_values_at_1e9_do_not_share_one_bracket() -> None:
    rng = np.random.default_rng(6)
    n = 100_000
    f = pl.DataFrame({"y": 1e9 + rng.uniform(-1e-3, 1e-3, n)})
    budget = 64 << 10  # 8192 values: far fewer than n
    r = column_quantiles(_reader(f, 10_000)[0], ["y"], PROBS, budget_bytes=budget)
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    assert r.passes == 2 and r.peak_kept_bytes <= budget


def test_ties_are_resolved_by_counts_not_kept() -> None:
    rng = np.random.default_rng(7)
    n = 100_000
    x = rng.normal(size=n)
    x[: n // 2] = 0.5  # the median and more are this one value
    x[n // 2 : n // 2 + n // 5] = -2.0
    f = pl.DataFrame({"x": rng.permutation(x)})
    r = column_quantiles(_reader(f, 9_999)[0], ["x"], PROBS, budget_bytes=4096)
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    assert r.peak_kept_bytes <= 4096  # far below the 50,000 tied values


def test_budget_is_shared_between_columns() -> None:
    rng = np.random.default_rng(8)
    f = pl.DataFrame({f"c{i}": rng.standard_cauchy(20_000) for i in range(6)})
    for budget in (8 * 20_000 * 3, 8 * 1000):
        r = column_quantiles(_reader(f, 3000)[0], f.columns, PROBS, budget_bytes=budget)
        np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
        assert r.peak_kept_bytes <= budget


def test_first_pass_keeps_the_columns_that_fit() -> None:
    rng = np.random.default_rng(9)
    big = rng.normal(size=50_000)
    small = np.full(50_000, np.nan)
    small[:100] = rng.normal(size=100)
    f = pl.DataFrame({"big": big, "small": small, "none": np.full(50_000, np.nan)})

    def run(cols: list[str]) -> int:
        r = column_quantiles(_reader(f, 5000)[0], cols, PROBS, budget_bytes=8 * 1000)
        np.testing.assert_array_equal(r.values, _numpy(f.select(cols), PROBS))
        assert r.peak_kept_bytes <= 8000
        return r.passes

    assert run(["small"]) == 1
    # the same passes as with a column of no values (the sketch gets the same room)
    assert run(["big", "small"]) == run(["small", "big"]) == run(["big", "none"]) >= 2


def test_input_that_changes_between_reads_is_an_error() -> None:
    rng = np.random.default_rng(10)
    frames = [pl.DataFrame({"x": rng.normal(size=10_000)}) for _ in range(2)]
    calls = [0]

    def passes() -> Iterator[pl.DataFrame]:
        calls[0] += 1
        yield frames[min(calls[0] - 1, 1)]

    with pytest.raises(DataError, match="'x' changed between reads"):
        column_quantiles(passes, ["x"], [0.5], budget_bytes=64)


def test_probabilities_outside_0_1_are_refused() -> None:
    f = pl.DataFrame({"x": [1.0, 2.0]})
    for bad in ([1.5], [-0.1], [math.nan]):
        with pytest.raises(ValueError, match=r"in \[0, 1\]"):
            column_quantiles(_reader(f, 1)[0], ["x"], bad)


# -- one pass (a pipe) -------------------------------------------------------------
def _assert_within_rank_bound(x: np.ndarray, probs: list[float], got: np.ndarray, e: float) -> None:
    """Each estimate lies between the order statistics ``h - e n`` and ``h + e n``."""
    s = np.sort(x)
    n = s.size
    for p, q in zip(probs, got, strict=True):
        h = (n - 1) * p
        lo = s[max(0, math.ceil(h - e * n))]
        hi = s[min(n - 1, math.floor(h + e * n))]
        assert lo <= q <= hi, (p, q, lo, hi)


@pytest.mark.parametrize("kind", ["normal", "ties", "cauchy", "lognormal", "near_1e9", "integers"])
@pytest.mark.parametrize("budget", [1 << 20, 1 << 12, 0])
def test_one_pass_estimate_is_within_its_stated_bound(kind: str, budget: int) -> None:
    rng = np.random.default_rng(len(kind) + budget)
    x = _columns(rng, 300_000)[kind]
    f = pl.DataFrame({"x": x})
    passes, reads = _reader(f, 40_000)
    r = column_quantiles(passes, ["x"], PROBS, budget_bytes=budget, one_pass=True)
    assert r.passes == reads[0] == 1
    if kind == "integers":  # seven distinct values: every bucket is one key
        assert r.exact and r.rank_error == 0.0
        np.testing.assert_array_equal(r.values[:, 0], np.quantile(x, PROBS))
        return
    assert not r.exact and 0 < r.rank_error < 1
    if budget >= 1 << 20 and kind != "ties":
        assert r.rank_error < 0.003  # a 16,384-bucket sketch: not a vacuous bound
    # (ties: the bucket holding the tied value holds half the values, and the bound says so)
    _assert_within_rank_bound(x, PROBS, r.values[:, 0], r.rank_error)
    # the sketch does not depend on the batching, so neither does the estimate
    again = column_quantiles(_reader(f, 777)[0], ["x"], PROBS, budget_bytes=budget, one_pass=True)
    np.testing.assert_array_equal(again.values, r.values)
    assert again.rank_error == r.rank_error


def test_one_pass_is_exact_when_everything_fits() -> None:
    f = _frame(np.random.default_rng(11), 3000)
    r = column_quantiles(_reader(f, 500)[0], f.columns, PROBS, one_pass=True)
    assert r.exact and r.rank_error == 0.0 and r.passes == 1
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))


# -- 10M rows --------------------------------------------------------------------
def test_ten_million_rows_with_ties_nulls_and_heavy_tails() -> None:
    rng = np.random.default_rng(12)
    n = 10_000_000
    x = rng.standard_cauchy(n)
    x[rng.random(n) < 0.3] = 0.0  # ties at the centre
    x[::1000] = np.nan
    y = rng.lognormal(0.0, 3.0, n)
    y[rng.random(n) < 0.2] = 1.0
    f = pl.DataFrame({"x": x, "y": y}).with_columns(_with_nulls(x, 17).alias("x"))
    probs = [0.0, 0.25, 0.5, 0.75, 1.0, 0.001, 0.999]
    budget = 8 << 20  # a million values: a tenth of one column
    t = time.perf_counter()
    r = column_quantiles(_reader(f, 1 << 20)[0], ["x", "y"], probs, budget_bytes=budget)
    took = time.perf_counter() - t
    np.testing.assert_array_equal(r.values, _numpy(f, probs))
    assert r.passes == 2 and r.peak_kept_bytes <= budget
    assert took < 30, f"{took:.1f} s"


@pytest.mark.parametrize("order", ["sorted", "reversed"])
def test_sorted_input_exact_and_one_pass_bound(order: str) -> None:
    rng = np.random.default_rng(13)
    x = np.sort(rng.standard_cauchy(100_000))
    x = x if order == "sorted" else x[::-1].copy()
    f = pl.DataFrame({"x": x})
    r = column_quantiles(_reader(f, 4096)[0], ["x"], PROBS, budget_bytes=2048)
    np.testing.assert_array_equal(r.values, _numpy(f, PROBS))
    est = column_quantiles(_reader(f, 4096)[0], ["x"], PROBS, budget_bytes=2048, one_pass=True)
    _assert_within_rank_bound(x, PROBS, est.values[:, 0], est.rank_error)
