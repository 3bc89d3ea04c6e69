"""The engine (BatchNorm API) against the plain-numpy reference of design.md §2.

Every formula is compared across batch sizes 1, 2, 7, n and n + 42, on columns
with nulls, NaN, constant runs, large offsets and tiny scales.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from bnorm_cli import BatchNorm
from bnorm_cli.core.errors import DataError, UsageError

try:
    from tests import reference as ref
except ImportError:  # pragma: no cover
    import reference as ref  # type: ignore[no-redef]

N = 157
RTOL = 1e-12


def make_frame(n: int = N, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    normal = rng.normal(3.0, 2.0, n)
    offset = 1e6 + rng.normal(0.0, 1e-2, n)
    tiny = rng.normal(0.0, 1e-9, n)
    with_nan = rng.normal(-5.0, 10.0, n)
    with_nan[rng.random(n) < 0.15] = np.nan
    nulls = rng.normal(0.0, 1.0, n).tolist()
    for i in rng.choice(n, n // 5, replace=False):
        nulls[i] = None
    constant = np.full(n, 42.5)
    runs = np.repeat(rng.normal(0, 1, n // 10 + 1), 10)[:n]  # long runs of identical values
    ints = rng.integers(-1000, 1000, n)
    return pl.DataFrame(
        {
            "label": [f"r{i}" for i in range(n)],
            "normal": normal,
            "offset": offset,
            "tiny": tiny,
            "with_nan": with_nan,
            "nulls": pl.Series(nulls, dtype=pl.Float64),
            "constant": constant,
            "runs": runs,
            "ints": ints,
        }
    )


NUMERIC = ["normal", "offset", "tiny", "with_nan", "nulls", "constant", "runs", "ints"]
BATCH_SIZES = [1, 2, 7, N, N + 42]


def column(frame: pl.DataFrame, name: str) -> np.ndarray:
    return frame.get_column(name).cast(pl.Float64).to_numpy()


def exact_batch_normalize(
    x: np.ndarray, batch_size: int, eps: float, gamma: float, beta: float
) -> np.ndarray:
    """Per-batch normalization with the centering done in exact rationals.

    The float reference rounds each batch mean before subtracting it, which costs
    up to ulp(mean)/std in the output (1e-8 for 1e6 +- 1e-2); the engine keeps
    the mean to twice float64 precision, so compare it with exact centering.
    """
    out = np.full(x.shape, np.nan)
    for start in range(0, x.size, batch_size):
        xb = x[start : start + batch_size]
        valid = ~np.isnan(xb)
        if not valid.any():
            continue
        q = [Fraction(float(v)) for v in xb[valid]]
        mean = sum(q, Fraction(0)) / len(q)
        var = sum(((v - mean) ** 2 for v in q), Fraction(0)) / len(q)
        denom = math.sqrt(float(var) + eps) or 1.0
        ys = [float(v - mean) * (gamma / denom) + beta for v in q]
        block = out[start : start + batch_size]
        block[valid] = ys
    return out


def exact_normalize_with(
    x: np.ndarray, mean_hi: float, mean_lo: float, var: float | None, gamma: float, beta: float
) -> np.ndarray:
    center = Fraction(mean_hi) + Fraction(mean_lo)
    scale = gamma / (math.sqrt((var or 0.0) + 1e-5) or 1.0)
    return np.array([v if math.isnan(v) else float(Fraction(v) - center) * scale + beta for v in x])


def close(a: float | None, b: float | None, rtol: float = RTOL, atol: float = 0.0) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_population_statistics_match_exact_reference(batch_size: int) -> None:
    frame = make_frame()
    model = BatchNorm(batch_size=batch_size).fit(frame)
    assert model.columns_ == NUMERIC
    for c in NUMERIC:
        expected = ref.population(column(frame, c))
        pop = model.population_[c]
        assert pop.n == expected["count"]
        assert pop.missing == expected["null_count"]
        assert close(pop.mean, expected["mean"], atol=1e-300), c
        assert close(pop.var, expected["var"], atol=1e-300), c
        assert pop.min == expected["min"] and pop.max == expected["max"]


@pytest.mark.parametrize("momentum", [0.1, 0.5, 0.0, 1.0, "cumulative"])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_running_statistics_match_reference(batch_size: int, momentum: float | str) -> None:
    frame = make_frame()
    model = BatchNorm(batch_size=batch_size, momentum=momentum).fit(frame)
    assert model.num_batches_tracked_ == ref.num_batches(column(frame, "normal"), batch_size)
    for c in NUMERIC:
        expected = ref.running(column(frame, c), batch_size, momentum)  # type: ignore[arg-type]
        run = model.running_[c]
        # running means of columns near 0 sum positive and negative terms: allow an
        # absolute error of a few ulps of the batch means involved.
        scale = float(np.nanmax(np.abs(column(frame, c))))
        assert close(run.mean, expected["running_mean"], atol=1e-14 * scale), c
        assert close(run.var, expected["running_var"], rtol=1e-10, atol=1e-300), c
        assert run.updates == expected["batches_used"]


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_batch_mode_output_matches_reference(batch_size: int) -> None:
    frame = make_frame()
    model = BatchNorm(batch_size=batch_size, gamma={"normal": 2.0}, beta=0.5)
    outs = [model.train_step(b, "batch") for b in model.iter_batches(frame)]
    out = pl.concat(outs)
    assert out.get_column("label").to_list() == frame.get_column("label").to_list()
    for c in NUMERIC:
        gamma = 2.0 if c == "normal" else 1.0
        expected = ref.normalize_batch(column(frame, c), batch_size, 1e-5, gamma, 0.5)
        exact = exact_batch_normalize(column(frame, c), batch_size, 1e-5, gamma, 0.5)
        np.testing.assert_allclose(column(out, c), exact, rtol=1e-12, atol=1e-12, err_msg=c)
        # the float reference agrees to its own precision: ulp(mean) / std
        np.testing.assert_allclose(column(out, c), expected, rtol=0, atol=1e-7, err_msg=c)
        assert out.schema[c] == pl.Float64


@pytest.mark.parametrize("momentum", [0.1, "cumulative"])
@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_running_mode_output_matches_reference(batch_size: int, momentum: float | str) -> None:
    frame = make_frame().drop("offset")  # 1e6 +- 1e-2: see test_offset_column_running_mode
    model = BatchNorm(batch_size=batch_size, momentum=momentum)
    out = pl.concat([model.train_step(b, "running") for b in model.iter_batches(frame)])
    for c in [c for c in NUMERIC if c != "offset"]:
        expected = ref.normalize_running(column(frame, c), batch_size, momentum, 1e-5)  # type: ignore[arg-type]
        np.testing.assert_allclose(column(out, c), expected, rtol=1e-9, atol=1e-9, err_msg=c)


@pytest.mark.parametrize("use", ["population", "running"])
def test_transform_matches_reference_and_inverts(use: str) -> None:
    frame = make_frame()
    model = BatchNorm(batch_size=16, gamma=1.5, beta={"ints": -1.0}).fit(frame)
    out = model.transform(frame, use=use)  # type: ignore[arg-type]
    back = model.inverse_transform(out, use=use)  # type: ignore[arg-type]
    for c in NUMERIC:
        x = column(frame, c)
        beta = -1.0 if c == "ints" else 0.0
        if use == "population":
            pop = model.population_[c]
            exact = ref.population(x)
            spread = float(np.nanmax(np.abs(x)))  # a mean near 0 is exact relative to the data
            assert close(pop.mean_hi + pop.mean_lo, exact["mean"], 2.0**-52, 2.0**-52 * spread), c
            # center on the exact mean: the rounded one is off by ulp(mean)/std
            expected = exact_normalize_with(x, pop.mean_hi, pop.mean_lo, pop.var, 1.5, beta)
            approx = ref.normalize_with(x, pop.mean, pop.var, 1e-5, 1.5, beta)  # type: ignore[arg-type]
            np.testing.assert_allclose(column(out, c), approx, rtol=0, atol=1e-7, err_msg=c)
        else:
            run = model.running_[c]
            expected = ref.normalize_with(x, run.mean, run.var, 1e-5, 1.5, beta)
        np.testing.assert_allclose(column(out, c), expected, rtol=1e-12, atol=1e-12, err_msg=c)
        np.testing.assert_allclose(
            column(back, c), x, rtol=1e-12, atol=1e-12 * np.nanmax(np.abs(x))
        )
        # nulls stay null and NaN stays NaN
        assert out.get_column(c).is_null().to_list() == frame.get_column(c).is_null().to_list()
        assert np.array_equal(np.isnan(column(out, c)), np.isnan(x))


def test_constant_column_gives_beta_exactly() -> None:
    frame = pl.DataFrame({"k": [1e9 + 0.1] * 50, "z": [0.0] * 50})
    for eps in (1e-5, 0.0):
        model = BatchNorm(batch_size=7, eps=eps, beta=0.25).fit(frame)
        assert model.transform(frame).get_column("k").to_list() == [0.25] * 50
        step = BatchNorm(batch_size=7, eps=eps, beta=0.25)
        for b in step.iter_batches(frame):
            assert set(step.train_step(b).get_column("k").to_list()) == {0.25}
        assert model.population_["k"].var == 0.0
        assert model.population_["k"].mean == 1e9 + 0.1


def test_one_value_batches_leave_running_stats_unchanged() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0, 3.0, 4.0, 100.0]})  # last batch has one row
    model = BatchNorm(batch_size=2, momentum="cumulative").fit(frame)
    assert model.num_batches_tracked_ == 3
    assert model.running_["a"].updates == 2
    assert model.running_["a"].mean == pytest.approx(2.5)
    assert model.running_["a"].var == pytest.approx(0.5)
    last = BatchNorm(batch_size=2)
    ys = pl.concat([last.train_step(b) for b in last.iter_batches(frame)])
    assert ys.get_column("a").to_list()[-1] == 0.0  # lone value maps to beta


def test_all_missing_column() -> None:
    frame = pl.DataFrame({"a": pl.Series([None, None, None], dtype=pl.Float64), "b": [1.0, 2, 3]})
    model = BatchNorm(batch_size=2).fit(frame)
    pop = model.population_["a"]
    assert (pop.n, pop.missing, pop.mean, pop.var) == (0, 3, None, None)
    assert model.running_["a"].updates == 0
    assert model.transform(frame).get_column("a").null_count() == 3


def test_statistics_do_not_depend_on_chunking() -> None:
    frame = make_frame(n=1000)
    results = []
    for chunk in (1, 3, 64, 999, 1000):
        pieces = [frame.slice(i, chunk) for i in range(0, frame.height, chunk)]
        model = BatchNorm(batch_size=37).fit(pieces)
        results.append({c: (model.population_[c], model.running_[c]) for c in model.columns_})
    assert all(r == results[0] for r in results[1:])  # bit for bit


def test_inf_is_an_error_naming_column_and_row() -> None:
    frame = pl.DataFrame({"a": [1.0, 2.0, 3.0, math.inf, 5.0]})
    with pytest.raises(DataError, match=r'column "a", row 4: .*inf=.missing.'):
        BatchNorm(batch_size=2).fit(frame)
    model = BatchNorm(batch_size=2, inf="missing").fit(frame)
    assert model.population_["a"].n == 4 and model.population_["a"].missing == 1
    assert model.population_["a"].mean == pytest.approx(2.75)


def test_column_selection_and_errors() -> None:
    frame = make_frame(n=10)
    assert BatchNorm(columns=["ints", "normal"]).fit(frame).columns_ == ["normal", "ints"]
    assert "tiny" not in BatchNorm(exclude=["tiny"]).fit(frame).columns_
    with pytest.raises(UsageError, match='did you mean "normal"'):
        BatchNorm(columns=["normall"]).fit(frame)
    with pytest.raises(UsageError, match="not numeric"):
        BatchNorm(columns=["label"]).fit(frame)
    with pytest.raises(UsageError, match="gamma"):
        BatchNorm(gamma={"nope": 1.0}).fit(frame)
    fitted = BatchNorm().fit(frame)
    with pytest.raises(DataError, match='"normal" was fitted but is missing'):
        fitted.transform(frame.drop("normal"))
    with pytest.raises(DataError, match='"normal" was fitted as Float64 but is now String'):
        fitted.transform(frame.with_columns(pl.col("normal").cast(pl.String)))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "^batch_size must be a positive integer"),
        ({"eps": -1.0}, "eps"),
        ({"momentum": 1.5}, "momentum"),
        ({"momentum": "fast"}, "momentum"),
    ],
)
def test_invalid_parameters(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(UsageError, match=match):
        BatchNorm(**kwargs)  # type: ignore[arg-type]


def test_integers_beyond_2_53_are_rounded_with_a_warning() -> None:
    frame = pl.DataFrame({"big": [2**60, 2**60 + 1, 3], "small": [1, 2, 3]})
    model = BatchNorm(batch_size=2).fit(frame)
    assert len(model.warnings_) == 1 and '"big"' in model.warnings_[0]
    assert model.population_["big"].max == float(2**60)


def test_pyarrow_in_pyarrow_out() -> None:
    frame = make_frame(n=100)
    table = frame.to_arrow()
    by_polars = BatchNorm(batch_size=16).fit(frame)
    by_arrow = BatchNorm(batch_size=16).fit(table.to_batches(max_chunksize=30))
    assert by_arrow.population_ == by_polars.population_
    out = by_arrow.transform(table)
    assert isinstance(out, pa.Table)
    assert pl.from_arrow(out).equals(by_polars.transform(frame))  # type: ignore[union-attr]
    back = by_arrow.inverse_transform(table.to_batches()[0])
    assert isinstance(back, pa.Table) and back.num_rows == 100
