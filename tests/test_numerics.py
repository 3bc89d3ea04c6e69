"""Exact numerics: population and running statistics against exact rationals.

The reference here is `fractions.Fraction` arithmetic on the float64 inputs
(never the engine's algorithm); the target is a relative error <= 1e-9, and in
practice the engine is within a few ulps.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import polars as pl
import pytest

from bnorm_cli import BatchNorm
from bnorm_cli.core.errors import DataError
from bnorm_cli.io import stats_file

N = 20_000
B = 4096
TARGET = 1e-9


def exact_mean_var(x: np.ndarray) -> tuple[Fraction, Fraction]:
    q = [Fraction(float(v)) for v in x]
    n = len(q)
    s1 = sum(q, Fraction(0))
    mean = s1 / n
    s2 = sum((v * v for v in q), Fraction(0))
    return mean, (s2 - s1 * s1 / n) / n  # exact: no cancellation in rationals


def exact_running(x: np.ndarray, batch_size: int, momentum: float) -> tuple[Fraction, Fraction]:
    m = Fraction(momentum)
    rm, rv = Fraction(0), Fraction(1)
    for start in range(0, x.size, batch_size):
        xb = x[start : start + batch_size]
        if xb.size < 2:
            continue
        mean, var = exact_mean_var(xb)
        rm = (1 - m) * rm + m * mean
        rv = (1 - m) * rv + m * var * xb.size / (xb.size - 1)
    return rm, rv


def rel_err(actual: float, exact: Fraction) -> float:
    if exact == 0:
        return abs(actual)
    return float(abs(Fraction(actual) - exact) / abs(exact))


rng = np.random.default_rng(1234)
CASES = {
    "1e9 + noise (std 1e-3)": 1e9 + rng.normal(0.0, 1e-3, N),
    "integers near 2^52": (2**52 + rng.integers(0, 10_000, N)).astype(np.float64),
    "magnitudes near 1e-150": rng.normal(3e-150, 1e-151, N),
    "mixed signs and scales": rng.choice([-1.0, 1.0], N) * 10.0 ** rng.uniform(-5, 5, N),
    "long runs of identical values": np.repeat(rng.normal(7.0, 1e-6, N // 1000), 1000),
    "jump from 0 to 1e9": np.concatenate(
        [rng.normal(0, 1, N // 2), 1e9 + rng.normal(0, 1, N // 2)]
    ),
    "values near 1e152 (scaled path)": rng.normal(1e152, 1e151, N),
    # the one-pass sums keep their shift until the mean moves a standard deviation
    "slow drift (0.4 std per batch)": 1e6 + np.arange(N) * (0.4 / B) + rng.normal(0, 1, N),
    "fast drift (30 std per batch)": np.arange(N) * (30.0 / B) + rng.normal(0, 1, N),
}


@pytest.mark.parametrize("name", list(CASES))
def test_population_statistics_are_exact(name: str) -> None:
    x = CASES[name]
    model = BatchNorm(batch_size=B).fit(pl.DataFrame({"x": x}))
    pop = model.population_["x"]
    mean, var = exact_mean_var(x)
    assert rel_err(pop.mean_hi + pop.mean_lo, mean) <= 1e-15
    assert rel_err(pop.var, var) <= TARGET  # type: ignore[arg-type]
    assert rel_err(pop.var, var) <= 1e-13, "far better than the target in practice"  # type: ignore[arg-type]


@pytest.mark.parametrize("name", list(CASES))
def test_running_statistics_are_exact(name: str) -> None:
    x = CASES[name]
    model = BatchNorm(batch_size=B, momentum=0.1).fit(pl.DataFrame({"x": x}))
    rm, rv = exact_running(x, B, 0.1)
    assert rel_err(model.running_["x"].mean, rm) <= TARGET
    assert rel_err(model.running_["x"].var, rv) <= TARGET


@pytest.mark.parametrize(
    "name", ["1e9 + noise (std 1e-3)", "integers near 2^52", "magnitudes near 1e-150"]
)
def test_normalized_output_has_mean_0_and_std_1(name: str) -> None:
    x = CASES[name]
    frame = pl.DataFrame({"x": x})
    fitted = BatchNorm(batch_size=B, eps=0.0).fit(frame)
    y = fitted.transform(frame).get_column("x").to_numpy()
    assert abs(math.fsum(y) / y.size) < 1e-9
    assert abs(np.std(y) - 1.0) < 1e-9
    # the same through the statistics file (mean + mean_residual)
    reloaded = stats_file.from_dict(stats_file.to_dict(fitted))
    assert np.array_equal(reloaded.transform(frame).get_column("x").to_numpy(), y)
    step = BatchNorm(batch_size=B, eps=0.0)
    for batch in step.iter_batches(frame):
        yb = step.train_step(batch).get_column("x").to_numpy()
        assert abs(math.fsum(yb) / yb.size) < 1e-9
        assert abs(np.std(yb) - 1.0) < 1e-9


def test_huge_values_mean_is_finite_and_exact_but_variance_is_refused() -> None:
    x = 1.5e304 + rng.normal(0.0, 1e300, N)  # the float64 sum overflows
    frame = pl.DataFrame({"x": x})
    model = BatchNorm(batch_size=B).fit(frame)
    mean, _ = exact_mean_var(x)
    assert rel_err(model.population_["x"].mean, mean) <= 1e-15  # type: ignore[arg-type]
    assert math.isinf(model.population_["x"].var)  # type: ignore[arg-type]
    with pytest.raises(DataError, match='"x": its variance exceeds the float64 range'):
        stats_file.to_dict(model)


def test_huge_constant_column_is_fine() -> None:
    frame = pl.DataFrame({"x": [1.5e304] * 100, "y": [-1.7e308, 1.7e308] * 50})
    model = BatchNorm(batch_size=7, columns=["x"]).fit(frame)
    assert model.population_["x"].mean == 1.5e304 and model.population_["x"].var == 0.0
    assert model.transform(frame).get_column("x").to_list() == [0.0] * 100
