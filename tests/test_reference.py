"""Checks of the plain reference (tests/reference.py) against hand-computed
numbers, against itself (exact Fraction vs fsum) and, when torch is
installed, against torch.nn.BatchNorm1d."""

import math

import numpy as np
import pytest
from numpy.typing import NDArray

try:  # works whether or not tests/ is a package
    from tests import reference as ref
except ImportError:
    import reference as ref  # type: ignore[no-redef]

NAN = math.nan


def assert_same(actual: NDArray[np.float64], expected: list[float]) -> None:
    """Exact elementwise equality, NaN == NaN."""
    np.testing.assert_array_equal(actual, np.array(expected, dtype=np.float64))


# --------------------------------------------------------------------------
# hand-computed tiny examples
# --------------------------------------------------------------------------

X4 = [1.0, 2.0, 3.0, 4.0]  # B=2 -> [1,2] (mean 1.5), [3,4] (mean 3.5)


def test_batches_slices_in_order_last_shorter() -> None:
    got = ref.batches([1.0, 2.0, 3.0, 4.0, 5.0], 2)
    assert [b.tolist() for b in got] == [[1.0, 2.0], [3.0, 4.0], [5.0]]
    assert ref.batches([], 3) == []
    assert ref.num_batches([1.0] * 5, 2) == 3
    assert ref.num_batches([1.0] * 4, 2) == 2
    assert ref.num_batches([], 2) == 0


def test_bad_arguments_raise() -> None:
    with pytest.raises(ValueError):
        ref.batches(X4, 0)
    with pytest.raises(ValueError):
        ref.running(X4, 2, "cumulativ")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        ref.normalize_with(X4, 0.0, 0.0, eps=0.0)


def test_batch_stats_hand() -> None:
    st = ref.batch_stats(np.array([1.0, 2.0]))
    assert st == {
        "n": 2,
        "nulls": 0,
        "mean": 1.5,
        "m2": 0.5,
        "var_biased": 0.25,
        "var_unbiased": 0.5,
        "min": 1.0,
        "max": 2.0,
    }
    st = ref.batch_stats(np.array([2.0, NAN, 4.0]))
    assert st == {
        "n": 2,
        "nulls": 1,
        "mean": 3.0,
        "m2": 2.0,
        "var_biased": 1.0,
        "var_unbiased": 2.0,
        "min": 2.0,
        "max": 4.0,
    }
    st = ref.batch_stats(np.array([6.0, NAN, NAN]))
    assert st == {
        "n": 1,
        "nulls": 2,
        "mean": 6.0,
        "m2": 0.0,
        "var_biased": 0.0,
        "var_unbiased": None,
        "min": 6.0,
        "max": 6.0,
    }
    st = ref.batch_stats(np.array([NAN, NAN]))
    assert st == {
        "n": 0,
        "nulls": 2,
        "mean": None,
        "m2": None,
        "var_biased": None,
        "var_unbiased": None,
        "min": None,
        "max": None,
    }


def test_population_hand() -> None:
    p = ref.population(X4)
    assert p == {
        "count": 4,
        "null_count": 0,
        "mean": 2.5,
        "var": 1.25,
        "std": math.sqrt(1.25),
        "min": 1.0,
        "max": 4.0,
    }
    # valid [2, 4, 6, 10]: mean 5.5, deviations -3.5 -1.5 .5 4.5, var 35/4
    p = ref.population([2.0, NAN, 4.0, 6.0, NAN, NAN, 10.0])
    assert p == {
        "count": 4,
        "null_count": 3,
        "mean": 5.5,
        "var": 8.75,
        "std": math.sqrt(8.75),
        "min": 2.0,
        "max": 10.0,
    }
    p = ref.population([NAN, NAN])
    assert p == {
        "count": 0,
        "null_count": 2,
        "mean": None,
        "var": None,
        "std": None,
        "min": None,
        "max": None,
    }
    assert ref.population_fsum([2.0, NAN, 4.0, 6.0, NAN, NAN, 10.0])["var"] == 8.75


def test_running_momentum_hand() -> None:
    # batch 1: mean 1.5, unbiased var 0.5 -> rm = .1*1.5 = .15, rv = .9 + .05 = .95
    # batch 2: mean 3.5, unbiased var 0.5 -> rm = .135 + .35 = .485, rv = .855 + .05
    r = ref.running(X4, 2, 0.1)
    assert r["running_mean"] == pytest.approx(0.485, rel=1e-15)
    assert r["running_var"] == pytest.approx(0.905, rel=1e-15)
    assert r["batches_used"] == 2
    trace = ref.running_trace(X4, 2, 0.1)
    assert trace[0] == pytest.approx((0.15, 0.95), rel=1e-15)
    assert trace[1] == pytest.approx((0.485, 0.905), rel=1e-15)
    # momentum 1 forgets everything but the last batch
    assert ref.running(X4, 2, 1.0) == {"running_mean": 3.5, "running_var": 0.5, "batches_used": 2}


def test_running_cumulative_hand() -> None:
    # cumulative = equal-weight mean of batch means (1.5, 3.5) and of
    # batch unbiased variances (0.5, 0.5)
    assert ref.running_trace(X4, 2, "cumulative") == [(1.5, 0.5), (2.5, 0.5)]
    assert ref.running(X4, 2, "cumulative") == {
        "running_mean": 2.5,
        "running_var": 0.5,
        "batches_used": 2,
    }


def test_running_skips_batches_with_fewer_than_two_values() -> None:
    x = [2.0, NAN, 4.0, 6.0, NAN, NAN, 10.0]  # B=3: n = 2, 1, 1
    # only batch 1 (mean 3, unbiased var 2) is used
    assert ref.running_trace(x, 3, 0.5) == [(1.5, 1.5)] * 3
    assert ref.running(x, 3, 0.5) == {"running_mean": 1.5, "running_var": 1.5, "batches_used": 1}
    assert ref.running(x, 3, "cumulative") == {
        "running_mean": 3.0,
        "running_var": 2.0,
        "batches_used": 1,
    }
    assert ref.num_batches(x, 3) == 3
    # an all-NaN first batch leaves the initial (0, 1)
    assert ref.running_trace([NAN, NAN, 1.0, 3.0], 2, 0.5) == [(0.0, 1.0), (1.0, 1.5)]


def test_cumulative_k_counts_only_used_batches() -> None:
    # batches [1,3] (mean 2, u 2), [5,NaN] skipped, [7,11] (mean 9, u 8)
    # third batch is the 2nd USED one: factor 1/2, not 1/3
    x = [1.0, 3.0, 5.0, NAN, 7.0, 11.0]
    assert ref.running_trace(x, 2, "cumulative") == [(2.0, 2.0), (2.0, 2.0), (5.5, 5.0)]
    assert ref.running(x, 2, "cumulative")["batches_used"] == 2


def test_running_empty_column() -> None:
    assert ref.running([], 4, 0.1) == {"running_mean": 0.0, "running_var": 1.0, "batches_used": 0}
    assert ref.running_trace([], 4, 0.1) == []


def test_normalize_batch_hand() -> None:
    # each batch +-0.5 around its mean with biased var .25 -> -1, 1 (eps 0)
    assert_same(ref.normalize_batch(X4, 2, eps=0.0), [-1.0, 1.0, -1.0, 1.0])
    # with eps: -0.5 / sqrt(0.25 + 1e-5)
    y = ref.normalize_batch(X4, 2)
    s = 0.5 / math.sqrt(0.25 + 1e-5)
    np.testing.assert_allclose(y, [-s, s, -s, s], rtol=1e-15)
    # gamma 2, beta 1; NaN stays NaN; 1-valid batches map to beta
    x = [2.0, NAN, 4.0, 6.0, NAN, NAN, 10.0]
    assert_same(
        ref.normalize_batch(x, 3, eps=0.0, gamma=2.0, beta=1.0),
        [-1.0, NAN, 3.0, 1.0, NAN, NAN, 1.0],
    )
    # all-NaN batch stays all NaN
    assert_same(ref.normalize_batch([NAN, NAN, 1.0, 3.0], 2, eps=0.0), [NAN, NAN, -1.0, 1.0])
    assert ref.normalize_batch([], 2).shape == (0,)


def test_normalize_batch_constant_is_exactly_beta() -> None:
    # np.mean of three 0.7 is not exactly 0.7, so x - mean would not be 0:
    # the policy still demands exactly beta, even with eps = 0
    assert float(np.mean([0.7, 0.7, 0.7])) != 0.7  # the trap is real
    x = [0.7, 0.7, 0.7, 1.0, NAN, 3.0]
    y = ref.normalize_batch(x, 3, eps=0.0, gamma=3.0, beta=0.25)
    assert_same(y, [0.25, 0.25, 0.25, -3.0 + 0.25, NAN, 3.0 + 0.25])
    y = ref.normalize_batch(x, 3, eps=1e-5, gamma=3.0, beta=0.25)
    assert_same(y[:3], [0.25] * 3)


def test_normalize_running_hand() -> None:
    # cumulative: after batch 1 (rm, rv) = (1.5, .5), after batch 2 (2.5, .5)
    r2 = math.sqrt(2.0)
    y = ref.normalize_running(X4, 2, "cumulative", eps=0.0)
    np.testing.assert_allclose(y, [-0.5 * r2, 0.5 * r2, 0.5 * r2, 1.5 * r2], rtol=1e-15)
    # momentum .1: (.15, .95) then (.485, .905); gamma 2, beta -1
    y = ref.normalize_running(X4, 2, 0.1, eps=0.0, gamma=2.0, beta=-1.0)
    expected = [
        2.0 * (1 - 0.15) / math.sqrt(0.95) - 1,
        2.0 * (2 - 0.15) / math.sqrt(0.95) - 1,
        2.0 * (3 - 0.485) / math.sqrt(0.905) - 1,
        2.0 * (4 - 0.485) / math.sqrt(0.905) - 1,
    ]
    np.testing.assert_allclose(y, expected, rtol=1e-14)
    # a skipped batch is normalized with the stats as they stand (here 0, 1)
    y = ref.normalize_running([NAN, 5.0, 1.0, 3.0], 2, 0.5, eps=0.0)
    assert_same(y, [NAN, 5.0, (1.0 - 1.0) / math.sqrt(1.5), (3.0 - 1.0) / math.sqrt(1.5)])


def test_normalize_with_hand() -> None:
    assert_same(
        ref.normalize_with([1.0, NAN, 5.0], 3.0, 4.0, eps=0.0, gamma=2.0, beta=1.0),
        [-1.0, NAN, 3.0],
    )


def test_large_offset_two_pass_is_accurate() -> None:
    # |mean|/std = 1e8: the naive E[x^2]-E[x]^2 loses everything here, the
    # two-pass batch formula and the exact population must agree
    rng = np.random.default_rng(1)
    x = 1e6 + rng.normal(0.0, 1e-2, 1000)
    exact = ref.population(x)
    assert exact["var"] is not None
    assert ref.batch_stats(x)["var_biased"] == pytest.approx(exact["var"], rel=1e-10)
    naive = float(np.mean(x * x) - np.mean(x) ** 2)
    assert abs(naive - exact["var"]) > 1e-3 * exact["var"]  # the data do discriminate


# --------------------------------------------------------------------------
# exact Fraction vs fsum
# --------------------------------------------------------------------------


def _datasets() -> dict[str, NDArray[np.float64]]:
    rng = np.random.default_rng(2015)
    with_nan = rng.normal(15.0, 8.0, 3000)
    with_nan[rng.random(3000) < 0.05] = np.nan
    return {
        "normal": rng.normal(0.0, 1.0, 3000),
        "offset": 1e6 + rng.normal(0.0, 1e-2, 3000),
        "pressure": 101325.0 + rng.normal(0.0, 300.0, 3000),
        "tiny": rng.normal(1e-3, 1e-4, 3000),
        "lognormal": rng.lognormal(0.0, 2.0, 3000),
        "with_nan": with_nan,
        "big": rng.normal(1e300, 1e298, 500),
    }


@pytest.mark.parametrize("name", list(_datasets()))
def test_fraction_and_fsum_agree(name: str) -> None:
    x = _datasets()[name]
    exact, fs = ref.population(x), ref.population_fsum(x)
    assert exact["count"] == fs["count"]
    assert exact["null_count"] == fs["null_count"]
    assert exact["min"] == fs["min"]
    assert exact["max"] == fs["max"]
    for key in ("mean", "var", "std"):
        assert fs[key] == pytest.approx(exact[key], rel=1e-13), key
    # and the plain two-pass single-batch formula is close too
    if name != "big":
        st = ref.batch_stats(x)
        assert st["mean"] == pytest.approx(exact["mean"], rel=1e-12)
        assert st["var_biased"] == pytest.approx(exact["var"], rel=1e-10)


def test_population_extreme_magnitudes() -> None:
    # values near the float limit: sum(x) overflows, the Fraction path does not
    x = np.array([1e306, -1e306, 1e306])
    p = ref.population(x)
    assert p["mean"] == pytest.approx(1e306 / 3, rel=1e-15)
    assert p["var"] == math.inf  # 8/9 * 1e612 is beyond float64
    assert p["std"] == pytest.approx(2.0 * math.sqrt(2.0) / 3.0 * 1e306, rel=1e-15)


def test_population_std_is_correctly_rounded() -> None:
    x = np.array([0.0, 2.0])  # var 1
    assert ref.population(x)["std"] == 1.0
    x = np.array([1e-200, 3e-200])  # var 1e-400 underflows, std = 1e-200
    assert ref.population(x)["std"] == pytest.approx(1e-200, rel=1e-15)


# --------------------------------------------------------------------------
# torch.nn.BatchNorm1d (optional)
# --------------------------------------------------------------------------

TORCH_CASES = [
    # (name, n rows, batch size); every batch has >= 2 rows
    ("even", 100, 10),
    ("short_last", 103, 10),
    ("single_batch", 7, 64),
    ("pairs", 40, 2),
]


def _torch_data(name: str, n: int) -> NDArray[np.float64]:
    rng = np.random.default_rng(len(name) * 1000 + n)
    return 1000.0 + rng.normal(0.0, 3.0, n) * rng.uniform(0.5, 2.0, n)


@pytest.mark.parametrize("momentum", [0.1, 0.5, "cumulative"])
@pytest.mark.parametrize("eps", [1e-5, 1e-3])
@pytest.mark.parametrize(("name", "n", "B"), TORCH_CASES)
def test_against_torch_batchnorm1d(
    momentum: ref.Momentum, eps: float, name: str, n: int, B: int
) -> None:
    torch = pytest.importorskip("torch", exc_type=ImportError)
    x = _torch_data(name, n)
    bn = torch.nn.BatchNorm1d(
        1,
        momentum=None if momentum == "cumulative" else momentum,
        eps=eps,
        affine=False,
        dtype=torch.float64,
    )
    batch_out: list[NDArray[np.float64]] = []
    online_out: list[NDArray[np.float64]] = []
    with torch.no_grad():
        for xb in ref.batches(x, B):
            assert len(xb) >= 2
            t = torch.from_numpy(xb.copy()).reshape(-1, 1)
            bn.train()
            batch_out.append(bn(t).reshape(-1).numpy())
            bn.eval()  # online mode: apply the just-updated running stats
            online_out.append(bn(t).reshape(-1).numpy())

    r = ref.running(x, B, momentum)
    assert float(bn.running_mean[0]) == pytest.approx(r["running_mean"], rel=1e-12)
    assert float(bn.running_var[0]) == pytest.approx(r["running_var"], rel=1e-12)
    assert int(bn.num_batches_tracked) == ref.num_batches(x, B) == r["batches_used"]
    # outputs are standardized (O(1)), so a tiny atol covers values near 0
    np.testing.assert_allclose(
        np.concatenate(batch_out), ref.normalize_batch(x, B, eps=eps), rtol=1e-12, atol=1e-12
    )
    np.testing.assert_allclose(
        np.concatenate(online_out),
        ref.normalize_running(x, B, momentum, eps=eps),
        rtol=1e-12,
        atol=1e-12,
    )
