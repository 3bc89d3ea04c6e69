"""Property-based tests: random frames, nulls, NaN, scales, batch sizes, chunkings."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bnorm_cli import BatchNorm
from bnorm_cli.io import stats_file

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def columns(draw: st.DrawFn) -> list[float | None]:
    n = draw(st.integers(1, 60))
    scale = 10.0 ** draw(st.integers(-140, 140))  # squares stay in float64's normal range
    offset = draw(st.sampled_from([0.0, 1.0, 1e6, -1e9, 1e15])) * scale
    values = draw(
        st.lists(
            st.one_of(
                st.floats(-1e3, 1e3, allow_nan=False).map(lambda v: offset + v * scale),
                st.none(),
                st.just(math.nan),
            ),
            min_size=n,
            max_size=n,
        )
    )
    return values


def exact(values: list[float | None]) -> tuple[int, Fraction | None, Fraction | None]:
    q = [Fraction(v) for v in values if v is not None and not math.isnan(v)]
    if not q:
        return 0, None, None
    mean = sum(q, Fraction(0)) / len(q)
    return len(q), mean, sum(((v - mean) ** 2 for v in q), Fraction(0)) / len(q)


def close(actual: float | None, expected: Fraction | None, rtol: float) -> bool:
    if expected is None or actual is None:
        return actual is None and expected is None
    if expected == 0:
        return abs(actual) <= 1e-300
    return float(abs(Fraction(actual) - expected) / abs(expected)) <= rtol


@SETTINGS
@given(values=columns(), batch_size=st.integers(1, 70), chunk=st.integers(1, 70))
def test_statistics_equal_the_exact_reference(
    values: list[float | None], batch_size: int, chunk: int
) -> None:
    frame = pl.DataFrame({"x": pl.Series(values, dtype=pl.Float64)})
    pieces = [frame.slice(i, chunk) for i in range(0, frame.height, chunk)]
    model = BatchNorm(batch_size=batch_size).fit(pieces)
    whole = BatchNorm(batch_size=batch_size).fit(frame)
    assert model.population_ == whole.population_ and model.running_ == whole.running_
    n, mean, var = exact(values)
    pop = model.population_["x"]
    assert pop.n == n and pop.missing == len(values) - n
    if mean is not None:  # error bound relative to the values, not to a mean near 0
        spread = max(abs(v) for v in values if v is not None and not math.isnan(v))
        assert abs(Fraction(pop.mean or 0.0) - mean) <= Fraction(spread) * Fraction(1e-15)
    if var is not None and var < Fraction(1e-290):  # subnormal territory: only absolutely
        assert abs(Fraction(pop.var or 0.0) - var) <= Fraction(1e-300)
    else:
        assert close(pop.var, var, 1e-12)


@SETTINGS
@given(
    values=columns(), batch_size=st.integers(1, 70), gamma=st.floats(0.1, 10), beta=st.floats(-5, 5)
)
def test_transform_then_inverse_returns_the_input(
    values: list[float | None], batch_size: int, gamma: float, beta: float
) -> None:
    frame = pl.DataFrame({"x": pl.Series(values, dtype=pl.Float64)})
    model = BatchNorm(batch_size=batch_size, gamma=gamma, beta=beta).fit(frame)
    model = stats_file.from_dict(stats_file.to_dict(model))  # through the file format
    for use in ("population", "running"):
        out = model.transform(frame, use=use)  # type: ignore[arg-type]
        back = model.inverse_transform(out, use=use)  # type: ignore[arg-type]
        # y carries ulp(|y|) of absolute precision, i.e. ulp(|y|) / scale in x units
        scale = model.maps(use)["x"].scale  # type: ignore[arg-type]
        y_max = float(np.nanmax(np.abs(out.get_column("x").to_numpy()), initial=0.0))
        x = frame.get_column("x").to_numpy()
        y = back.get_column("x").to_numpy()
        assert np.array_equal(np.isnan(x), np.isnan(y))
        assert back.get_column("x").is_null().to_list() == frame.get_column("x").is_null().to_list()
        ok = ~np.isnan(x)
        if ok.any():
            spread = float(np.max(np.abs(x[ok])))
            lost = 4 * np.finfo(float).eps * y_max / scale
            np.testing.assert_allclose(y[ok], x[ok], rtol=1e-9, atol=1e-9 * spread + lost)
