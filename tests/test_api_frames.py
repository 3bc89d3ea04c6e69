"""The Python API takes polars, pandas and pyarrow in every method and gives back
the kind it got: the same bits as the polars path, whatever the table type."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from polars.testing import assert_frame_equal

from bnorm_cli import BatchNorm
from bnorm_cli.core.errors import UsageError

pd = pytest.importorskip("pandas")

rng = np.random.default_rng(7)
N = 37
BASE = pl.DataFrame(
    {
        "a": rng.normal(1e6, 3.0, N),
        "b": np.where(rng.random(N) < 0.2, np.nan, rng.normal(0, 1, N)),
        "n": pl.Series(rng.integers(-5, 5, N), dtype=pl.Int32),
        "k": [f"s{i}" for i in range(N)],
    }
).with_columns(pl.when(pl.col("n") == 0).then(None).otherwise(pl.col("n")).alias("n"))


def to_pandas(f: pl.DataFrame) -> Any:
    out = f.to_pandas(use_pyarrow_extension_array=False)
    out.index = pd.RangeIndex(100, 100 + f.height)  # not the default index: it must survive
    return out


KINDS: dict[str, Callable[[pl.DataFrame], Any]] = {
    "polars": lambda f: f,
    "pandas": to_pandas,
    "pandas_arrow": lambda f: f.to_pandas(use_pyarrow_extension_array=True),
    "pyarrow": lambda f: f.to_arrow(),
    "recordbatch": lambda f: f.to_arrow().to_batches(max_chunksize=f.height)[0],
}


def back(out: Any) -> pl.DataFrame:
    """Any returned table as polars, for comparing bits."""
    if isinstance(out, pl.DataFrame):
        return out
    if isinstance(out, pd.DataFrame):
        return pl.from_pandas(out, nan_to_null=False)
    return pl.from_arrow(out)  # type: ignore[return-value]


def same(got: Any, ref: pl.DataFrame, kind: str) -> None:
    """Equal bits; numpy-backed pandas has no null in a float column (NaN stands for it)."""
    frame = back(got)
    if kind.startswith("pandas"):
        frame, ref = (f.with_columns(pl.selectors.float().fill_nan(None)) for f in (frame, ref))
    assert_frame_equal(frame, ref, check_dtypes=False)


def expected_kind(kind: str) -> type:
    return {"polars": pl.DataFrame, "pandas": pd.DataFrame, "pandas_arrow": pd.DataFrame}.get(
        kind, pa.Table
    )


def fitted(kind: str, how: str) -> BatchNorm:
    conv = KINDS[kind]
    m = BatchNorm(batch_size=8)
    if how == "fit":
        return m.fit(conv(BASE))
    if how == "fit_iterable":
        return m.fit([conv(BASE[:10]), conv(BASE[10:])])
    for i in range(0, N, 8):
        m.partial_fit(conv(BASE[i : i + 8]))
    return m


def stats(m: BatchNorm) -> list[tuple[Any, ...]]:
    return [(repr(m.population_[c]), repr(m.running_[c])) for c in m.columns_]


@pytest.mark.parametrize("how", ["fit", "fit_iterable", "partial_fit"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_fitting_gives_the_polars_bits(kind: str, how: str) -> None:
    got, ref = fitted(kind, how), fitted("polars", how)
    assert got.columns_ == ["a", "b", "n"]
    if kind != "pandas":  # numpy-backed pandas holds a nullable Int32 as float64 with NaN
        assert got.dtypes_ == ref.dtypes_
    assert stats(got) == stats(ref)  # exact, NaN-free statistics compared as bits
    assert got.num_batches_tracked_ == ref.num_batches_tracked_ == 5


@pytest.mark.parametrize("use", ["population", "running"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_transform_and_inverse_return_the_kind_given(kind: str, use: str) -> None:
    m = fitted("polars", "fit")
    data = KINDS[kind](BASE)
    out = m.transform(data, use=use)  # type: ignore[arg-type]
    assert isinstance(out, expected_kind(kind))
    ref = m.transform(BASE, use=use)  # type: ignore[arg-type]
    same(out, ref, kind)
    if kind.startswith("pandas"):
        assert list(out.index) == list(data.index)
    inv = m.inverse_transform(out, use=use)  # type: ignore[arg-type]
    assert isinstance(inv, expected_kind(kind))
    same(inv, m.inverse_transform(ref, use=use), kind)  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["batch", "running"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_train_step_returns_the_kind_given(kind: str, mode: str) -> None:
    m, ref = BatchNorm(batch_size=8), BatchNorm(batch_size=8)
    for i in range(0, N, 8):
        chunk = BASE[i : i + 8]
        out = m.train_step(KINDS[kind](chunk), mode=mode)  # type: ignore[arg-type]
        assert isinstance(out, expected_kind(kind))
        same(out, ref.train_step(chunk, mode=mode), kind)  # type: ignore[arg-type]
    assert stats(m) == stats(ref)


@pytest.mark.parametrize("kind", list(KINDS))
def test_iter_batches_cuts_any_kind(kind: str) -> None:
    m = BatchNorm(batch_size=8)
    got = list(m.iter_batches(KINDS[kind](BASE)))
    assert [b.height for b in got] == [8, 8, 8, 8, 5]
    same(pl.concat(got), BASE, kind)


def test_pandas_with_non_string_column_names_is_one_clear_error() -> None:
    frame = pd.DataFrame(np.ones((3, 2)))
    with pytest.raises(UsageError, match="column names must be strings"):
        BatchNorm().fit(frame)


def test_other_objects_are_refused_by_name() -> None:
    with pytest.raises(UsageError, match="got ndarray"):
        BatchNorm().partial_fit(np.ones((3, 2)))  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["batch", "running"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_batch_methods_take_any_kind(kind: str, mode: str) -> None:
    """moments / fit_batches / normalize_batches: the engine's methods, any table too."""
    m, ref = BatchNorm(batch_size=8), BatchNorm(batch_size=8)
    m.start(BASE.schema)
    ref.start(BASE.schema)
    table = m.moments(KINDS[kind](BASE))
    if kind != "pandas":  # numpy-backed pandas has NaN where the Int32 column has null
        assert table.to_arrow().equals(ref.moments(BASE).to_arrow())
    out, _, trace = m.normalize_batches(KINDS[kind](BASE), mode=mode)  # type: ignore[arg-type]
    want, _, want_trace = ref.normalize_batches(BASE, mode=mode)  # type: ignore[arg-type]
    assert isinstance(out, expected_kind(kind))
    same(out, want, kind)
    np.testing.assert_array_equal(trace[0], want_trace[0])
    m.fit_batches(KINDS[kind](BASE))
    ref.fit_batches(BASE)
    assert stats(m) == stats(ref)
