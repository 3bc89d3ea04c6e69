"""The seam: per-batch moment records are pure, the table is vectorized, the fold
depends only on the records; the numerics at the edges (issue: cancellation,
±1e153, variances near the float64 limit) against exact rationals."""

from __future__ import annotations

import math
import pickle
import subprocess
import sys
from fractions import Fraction

import numpy as np
import polars as pl
import pytest

from bnorm_cli import BatchNorm
from bnorm_cli.core import fold as fd
from bnorm_cli.core import moments as mom
from bnorm_cli.core.errors import DataError
from bnorm_cli.io import stats_file

rng = np.random.default_rng(7)


def hostile_frame(n: int = 3000) -> pl.DataFrame:
    x = rng.normal(5.0, 2.0, n)
    with_nan = x.copy()
    with_nan[::7] = np.nan
    return pl.DataFrame(
        {
            "plain": x,
            "nan": with_nan,
            "big": 1e9 + rng.normal(0, 1e-3, n),
            "const": np.full(n, 3.25),
            "jump": np.concatenate([rng.normal(0, 1, n // 2), 1e9 + rng.normal(0, 1, n - n // 2)]),
            "ints": np.arange(n),
            "huge": rng.normal(1e153, 1e152, n),
        }
    ).with_columns(
        pl.when(pl.int_range(pl.len()) % 11 == 0).then(None).otherwise(pl.col("plain")).alias("nul")
    )


def exact(values: list[float]) -> tuple[Fraction, Fraction]:
    q = [Fraction(v) for v in values]
    mean = sum(q, Fraction(0)) / len(q)
    return mean, sum(((v - mean) ** 2 for v in q), Fraction(0)) / len(q)


def rel(actual: float, expected: Fraction) -> float:
    if expected == 0:
        return abs(actual)
    return float(abs(Fraction(actual) - expected) / abs(expected))


def same(a: mom.MomentsTable, b: mom.MomentsTable) -> bool:
    return all(np.array_equal(a[f], b[f], equal_nan=True) for f in mom.FIELDS) and np.array_equal(
        a.batch, b.batch
    )


@pytest.mark.parametrize("batch_size", [1, 2, 7, 64, 1000, 2999, 3000, 5000])
def test_each_record_is_a_pure_function_of_its_batch(batch_size: int) -> None:
    frame = hostile_frame()
    cols = frame.columns
    whole = mom.table_moments(frame, cols, batch_size)
    k = len(whole)
    assert k == -(-frame.height // batch_size)
    # each batch alone, in reverse order, gives the same bits as within the table
    for i in reversed(range(0, k, max(1, k // 13))):
        alone = mom.table_moments(frame.slice(i * batch_size, batch_size), cols, batch_size, i)
        assert same(alone, whole.take(i, i + 1)), i
    # chunks of whole batches (any number of them) give the same table
    per = max(1, 3 * batch_size)
    parts = [
        mom.table_moments(frame.slice(s, per), cols, batch_size, s // batch_size, s)
        for s in range(0, frame.height, per)
    ]
    assert same(mom.MomentsTable.concat(parts), whole)


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 5000])
def test_every_numeric_type_gives_the_records_of_its_float64_values(batch_size: int) -> None:
    """A column is read as float64 with nulls missing, whatever its type: the same
    records (and null counts) as its values converted one by one by Python."""
    n = 3000
    ints = rng.integers(-(2**62), 2**62, n)
    ints[:4] = [2**63 - 1, -(2**63), 2**53 + 1, -(2**53) - 1]
    nulls = pl.int_range(n, eager=True) % 9 == 0
    frame = pl.DataFrame(
        {
            "f64": rng.normal(1e9, 1.0, n),
            "f32": rng.normal(3.0, 2.0, n).astype(np.float32),
            "i64": ints,
            "u64": rng.integers(2**63, 2**64 - 1, n, dtype=np.uint64, endpoint=True),
            "u8": rng.integers(0, 255, n).astype(np.uint8),
            "i16": rng.integers(-300, 300, n).astype(np.int16),
            "i128": pl.Series([int(v) * 2**40 + 1 for v in ints], dtype=pl.Int128),
        }
    )
    frame = frame.with_columns(
        *[pl.when(nulls).then(None).otherwise(pl.col(c)).alias(f"{c}_nul") for c in frame.columns]
    )
    t = mom.table_moments(frame, frame.columns, batch_size)
    reference = pl.DataFrame(
        {
            c: pl.Series([math.nan if v is None else float(v) for v in frame[c].to_list()])
            for c in frame.columns
        }
    )
    r = mom.table_moments(reference, frame.columns, batch_size)
    assert same(t, r)
    for j, c in enumerate(frame.columns):
        per_batch = [frame[c].slice(i * batch_size, batch_size).null_count() for i in range(len(t))]
        assert t["nulls"][:, j].tolist() == per_batch, c


def test_records_are_the_same_bits_in_another_process() -> None:
    frame = hostile_frame()
    here = mom.table_moments(frame, frame.columns, 37)
    code = (
        "import sys, pickle, polars as pl\n"
        "from bnorm_cli.core import moments as mom\n"
        "frame = pl.read_ipc(sys.stdin.buffer)\n"
        "t = mom.table_moments(frame, frame.columns, 37)\n"
        "sys.stdout.buffer.write(pickle.dumps(t.to_arrow()))\n"
    )
    import io

    buf = io.BytesIO()
    frame.write_ipc(buf)
    out = subprocess.run(
        [sys.executable, "-c", code], input=buf.getvalue(), capture_output=True, check=True
    )
    there = mom.MomentsTable.from_arrow(pickle.loads(out.stdout))
    assert same(here, there)
    assert here.columns == there.columns


@pytest.mark.parametrize("batch_size", [1, 3, 50, 1000, 3000])
def test_records_match_exact_rationals(batch_size: int) -> None:
    frame = hostile_frame(1500)
    t = mom.table_moments(frame, frame.columns, batch_size)
    for j, c in enumerate(frame.columns):
        values = frame.get_column(c).cast(pl.Float64).to_numpy()
        for i in range(0, len(t), max(1, len(t) // 5)):
            xb = values[i * batch_size : (i + 1) * batch_size]
            ok = xb[~np.isnan(xb)]
            assert t["n"][i, j] == ok.size and t["missing"][i, j] == xb.size - ok.size
            if not ok.size:
                continue
            mean, var = exact(ok.tolist())
            assert t["min"][i, j] == ok.min() and t["max"][i, j] == ok.max()
            got = Fraction(float(t["mean_hi"][i, j])) + Fraction(float(t["mean_lo"][i, j]))
            spread = Fraction(float(np.abs(ok).max()))
            assert abs(got - mean) <= spread * Fraction(1e-16), (c, i)
            if var:
                assert rel(float(t["var"][i, j]), var) <= 1e-12, (c, i)
            else:
                assert t["var"][i, j] == 0.0


def test_cancelling_values_are_summed_exactly() -> None:
    """[1e16, 1, -1e16, 3]: a float sum gives 0.75; the exact mean is 1."""
    values = [1e16, 1.0, -1e16, 3.0]
    for batch_size in (1, 2, 4):
        model = BatchNorm(batch_size=batch_size).fit(pl.DataFrame({"x": values}))
        pop = model.population_["x"]
        assert Fraction(pop.mean_hi) + Fraction(pop.mean_lo) == Fraction(1), batch_size
        assert rel(pop.var, exact(values)[1]) <= 1e-15  # type: ignore[arg-type]
    # spread over many batches, mixed with noise: the guarantee is relative to the
    # magnitudes (a batch's own float sum of 1e16 + 0.3 keeps no more than float64 does)
    x = np.concatenate([[1e16, -1e16] * 50, rng.normal(0, 1, 100)])
    rng.shuffle(x)
    for batch_size in (1, 8, 200):
        model = BatchNorm(batch_size=batch_size).fit(pl.DataFrame({"x": x}))
        pop = model.population_["x"]
        mean, var = exact(x.tolist())
        error = abs(Fraction(pop.mean_hi) + Fraction(pop.mean_lo) - mean)
        assert error <= Fraction(1e16) * Fraction(2.0**-52), batch_size
        if batch_size == 1:  # every batch is one value: the sum of the values is exact
            assert error <= abs(mean) * Fraction(2.0**-104)
        assert rel(pop.var, var) <= 1e-13  # type: ignore[arg-type]


def test_variance_near_the_float64_limit_is_kept() -> None:
    """±1e153: the variance (1e306) fits float64 although its M2 would not."""
    x = np.array([1e153, -1e153] * 40000)
    frame = pl.DataFrame({"x": x})
    model = BatchNorm(batch_size=65536).fit(frame)
    pop = model.population_["x"]
    assert pop.mean == 0.0 and rel(pop.var, Fraction(1e153) ** 2) <= 1e-15  # type: ignore[arg-type]
    y = model.transform(frame).get_column("x").to_numpy()
    assert np.allclose(np.abs(y), 1.0, rtol=1e-12)
    step = BatchNorm(batch_size=1000)
    out = pl.concat([step.train_step(b) for b in step.iter_batches(frame)])
    assert np.allclose(np.abs(out.get_column("x").to_numpy()), 1.0, rtol=1e-12)
    again = stats_file.from_dict(stats_file.to_dict(model))
    assert np.array_equal(again.transform(frame).get_column("x").to_numpy(), y)


def test_a_variance_beyond_float64_is_refused_by_every_path() -> None:
    frame = pl.DataFrame({"x": [1e308, -1e308] * 10})
    model = BatchNorm(batch_size=4).fit(frame)
    assert math.isinf(model.population_["x"].var)  # type: ignore[arg-type]
    with pytest.raises(DataError, match='"x": its population variance exceeds'):
        model.transform(frame)
    with pytest.raises(DataError, match='"x": its variance exceeds the float64 range'):
        stats_file.to_dict(model)
    step = BatchNorm(batch_size=4)
    with pytest.raises(DataError, match='"x": its batch variance exceeds'):
        step.train_step(frame.head(4))
    with pytest.raises(DataError, match='"x": its batch variance exceeds'):
        BatchNorm(batch_size=4).fit(frame.head(0)).normalize_batches(frame.head(8))


def test_a_statistics_file_with_variance_1e308_loads_without_overflow() -> None:
    doc = stats_file.to_dict(BatchNorm(batch_size=10).fit(pl.DataFrame({"x": [0.0, 2.0] * 500})))
    col = doc["columns"]["x"]
    col.update(mean=0.0, mean_residual=0.0, var=1e308, std=math.sqrt(1e308), min=-1e154, max=1e154)
    model = stats_file.from_dict(doc)
    y = model.transform(pl.DataFrame({"x": [1e154, -1e154, 0.0]})).get_column("x").to_list()
    assert y[2] == 0.0 and y[0] == pytest.approx(1.0, rel=1e-12) and y[1] == -y[0]


@pytest.mark.parametrize("batch_size", [1, 5, 33, 1000])
def test_fold_depends_only_on_the_records(batch_size: int) -> None:
    """partial_fit batch by batch, fit, and tables folded in odd chunks: same bits."""
    frame = hostile_frame(2000).drop("huge")
    fitted = BatchNorm(batch_size=batch_size).fit(frame)
    stepped = BatchNorm(batch_size=batch_size)
    for batch in stepped.iter_batches(frame):
        assert stepped.partial_fit(batch) is stepped
    assert stepped.population_ == fitted.population_
    assert stepped.running_ == fitted.running_
    table = mom.table_moments(frame, frame.columns, batch_size)
    fold = fd.Fold(frame.columns, batch_size, 0.1)
    at = 0
    for size in [1, 2, 3, 5, 8, 13] * 1000:
        if at >= len(table):
            break
        fold.add(table.take(at, at + size))
        at += size
    assert [fold.population.at(j) for j in range(len(frame.columns))] == list(
        fitted.population_.values()
    )


def test_running_statistics_follow_the_pytorch_recurrence() -> None:
    x = rng.normal(3.0, 2.0, 1003)
    x[500:520] = np.nan  # a batch with fewer than 2 values does not update
    b = 10
    t = mom.table_moments(pl.DataFrame({"x": x}), ["x"], b)
    for momentum in (0.1, 0.5, None):
        run, means, variances = fd.update_running(fd.RunningState.start(1), t, momentum, True)
        rm, rv, k = 0.0, 1.0, 0
        for i in range(len(t)):
            xb = x[i * b : (i + 1) * b]
            ok = xb[~np.isnan(xb)]
            if ok.size >= 2:
                k += 1
                f = 1.0 / k if momentum is None else momentum
                rm = (1 - f) * rm + f * float(np.mean(ok))
                rv = (1 - f) * rv + f * float(np.var(ok, ddof=1))
            assert means is not None and variances is not None
            assert means[i, 0] == pytest.approx(rm, rel=1e-13, abs=1e-15)
            assert variances[i, 0] == pytest.approx(rv, rel=1e-13)
        assert int(run.updates[0]) == k


def test_a_table_crosses_arrow_and_back() -> None:
    frame = hostile_frame(500)
    t = mom.table_moments(frame, frame.columns, 64, first_batch=3, first_row=192)
    back = mom.MomentsTable.from_arrow(t.to_arrow())
    assert same(t, back) and back.columns == t.columns
    assert np.array_equal(back.first_row, t.first_row) and np.array_equal(back.rows, t.rows)
    assert t.to_arrow().num_rows == len(t) * len(frame.columns)


def test_a_thousand_columns_fold_without_a_python_loop_per_column() -> None:
    frame = pl.DataFrame({f"c{i}": rng.normal(i, 1.0, 300) for i in range(1000)})
    model = BatchNorm(batch_size=32).fit(frame)
    pop = model.population_
    assert pop["c999"].mean == pytest.approx(frame.get_column("c999").mean(), rel=1e-14)
    assert pop["c0"].var == pytest.approx(frame.get_column("c0").var(ddof=0), rel=1e-12)


def test_a_file_that_requires_an_unknown_feature_is_refused() -> None:
    from bnorm_cli.core.errors import StatsFileError

    doc = stats_file.to_dict(BatchNorm(batch_size=10).fit(pl.DataFrame({"x": [0.0, 2.0] * 5})))
    assert "requires" not in doc  # a plain mean/std file requires nothing
    doc["requires"] = ["robust-scale"]
    with pytest.raises(StatsFileError, match="requires robust-scale, which this bnorm"):
        stats_file.from_dict(doc, "s.json")
    doc["requires"] = []
    stats_file.from_dict(doc)
    doc["some_new_informational_field"] = {"a": 1}  # only adds information: still read
    stats_file.from_dict(doc)


def test_a_wide_file_fitted_by_column_groups_gives_the_same_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Column groups in separate passes: byte-identical statistics to one pass."""
    from typer.testing import CliRunner

    from bnorm_cli.cli.app import app
    from bnorm_cli.engines import serial

    x = rng.normal(0, 1, (3000, 40))
    x[::17, 3] = np.nan
    frame = pl.DataFrame({f"c{i}": x[:, i] + i * 1e6 for i in range(40)})
    data = tmp_path / "wide.parquet"
    frame.write_parquet(data, row_group_size=700)
    runner = CliRunner()
    one = tmp_path / "one.json"
    assert runner.invoke(app, ["fit", str(data), "-s", str(one), "-b", "64", "-q"]).exit_code == 0
    groups = tmp_path / "groups.json"
    old = serial.GROUP_BYTES
    serial.GROUP_BYTES = 8 * 65536 * 7  # 7 columns a group: 6 passes
    try:
        result = runner.invoke(app, ["fit", str(data), "-s", str(groups), "-b", "64", "-q"])
    finally:
        serial.GROUP_BYTES = old
    assert result.exit_code == 0, result.output
    assert groups.read_bytes() == one.read_bytes()
