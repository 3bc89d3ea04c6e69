"""Parquet output: polars' sink (every core) and pyarrow's writer give the same table.

`writers.write_batches` writes a regular Parquet file through polars' sink when
polars stores every column as pyarrow would (`polars_writes`), and records the
input's Arrow schema in the file; everything else goes through pyarrow's
writer. Either way the file must read back as the same table, bit for bit.
"""

from __future__ import annotations

import datetime as dt
import decimal
import io
import math
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bnorm_cli.core.errors import DataError
from bnorm_cli.core.maps import AffineMap, MappedBatches, map_exprs
from bnorm_cli.io import readers, writers

N = 5


def _columns() -> dict[str, pa.Array]:
    ts = [1, None, 3, 4, 5]
    return {
        "f64": pa.array([1.5, None, math.nan, -0.0, 1e300]),
        "f32": pa.array([1.5, None, 3.0, -0.0, 1e30], pa.float32()),
        "i8": pa.array([1, None, 3, -128, 127], pa.int8()),
        "u64": pa.array([1, None, 3, 0, 2**64 - 1], pa.uint64()),
        "bool": pa.array([True, None, False, True, False]),
        "str": pa.array(["a", None, "", "é", "x" * 100]),
        "large_str": pa.array(["a", None, "", "é", "z"], pa.large_string()),
        "bin": pa.array([b"a", None, b"", b"\x00", b"z"]),
        "dict": pa.array(["a", None, "a", "b", "b"]).dictionary_encode(),
        "date": pa.array([dt.date(2020, 1, 1), None, dt.date(1, 1, 1), dt.date(9999, 1, 1), None]),
        "ts_us": pa.array(ts, pa.timestamp("us")),
        "ts_ns_utc": pa.array(ts, pa.timestamp("ns", "UTC")),
        "ts_s": pa.array(ts, pa.timestamp("s")),
        "dur": pa.array(ts, pa.duration("us")),
        "time": pa.array(ts, pa.time64("us")),
        "dec": pa.array([decimal.Decimal("1.23"), None, None, decimal.Decimal("-4.56"), None]),
        "list": pa.array([[1], None, [], [2, 3], [None]]),
        "struct": pa.array([{"x": 1}, None, {"x": None}, {"x": 2}, {"x": 3}]),
        "fixed": pa.array([b"ab", None, b"cd", b"ef", b"gh"], pa.binary(2)),
        "null": pa.nulls(N),
    }


#: Types bnorm's users' files hold that must take polars' sink (the fast path).
SINK = ["f64", "f32", "i8", "u64", "bool", "str", "large_str", "bin", "dict", "date"]
SINK += ["ts_us", "ts_ns_utc", "dur", "list", "struct", "null"]


def _same(a: pa.Table, b: pa.Table) -> bool:
    """Equal schemas and values, floats compared by their bits (NaN, -0.0)."""
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for name in a.column_names:
        x, y = a[name].combine_chunks(), b[name].combine_chunks()
        if pa.types.is_floating(x.type):
            if not x.is_null().equals(y.is_null()):
                return False
            bits = [np.asarray(v.fill_null(0)).view(np.uint8) for v in (x, y)]
            if not np.array_equal(*bits):
                return False
        elif not x.equals(y):
            return False
    return True


@pytest.mark.parametrize("name", sorted(_columns()))
def test_every_type_reads_back_the_same(tmp_path: Path, name: str) -> None:
    column = _columns()[name]
    table = pa.table({"x": pa.array([1.0, 2.0, None, 4.0, 5.0]), name: column})
    out = tmp_path / "out.parquet"
    writers.write_batches(str(out), "parquet", table.schema, iter(table.to_batches(2)))
    ref = tmp_path / "ref.parquet"  # pyarrow's writer, as bnorm used it before the sink
    with open(ref, "wb") as f:
        writers._write_parquet(f, table.schema, iter(table.to_batches(2)))
    assert _same(pq.read_table(out), pq.read_table(ref))
    assert writers.polars_writes(table.schema) == (name in SINK)
    if name in SINK:
        assert _same(pq.read_table(out), table)


def test_required_columns_stay_required(tmp_path: Path) -> None:
    """DuckDB writes the columns it knows hold no null as REQUIRED: the sink keeps
    them so at the top level (polars' arrow_schema); a required field inside a list
    or struct goes through pyarrow's writer."""
    schema = pa.schema(
        [
            pa.field("x", pa.float64(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("y", pa.float64()),
        ]
    )
    table = pa.table({"x": [1.0, 2.0], "label": ["a", "b"], "y": [None, 3.0]}, schema=schema)
    assert writers.polars_writes(schema)
    out = tmp_path / "out.parquet"
    writers.write_batches(str(out), "parquet", schema, iter(table.to_batches()))
    assert pq.read_schema(out) == schema
    assert _same(pq.read_table(out), table)
    levels = pq.ParquetFile(out).schema
    assert [levels.column(i).max_definition_level for i in range(3)] == [0, 0, 1]
    for nested in (
        pa.list_(pa.field("item", pa.int64(), nullable=False)),
        pa.struct([pa.field("a", pa.int64(), nullable=False)]),
    ):
        assert not writers.polars_writes(pa.schema([pa.field("n", nested, nullable=False)]))


@pytest.mark.parametrize("width", [writers.SINK_MAX_COLUMNS, writers.SINK_MAX_COLUMNS + 1])
def test_a_wide_table_goes_through_pyarrow(
    tmp_path: Path, width: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beyond SINK_MAX_COLUMNS the sink's row groups in flight cost memory: pyarrow
    writes them (the mapped batches, not the expressions), with the same table."""
    rng = np.random.default_rng(width)
    table = pa.table({f"c{i}": rng.normal(size=3_000) for i in range(width)})
    sink = writers._sink_parquet
    used: list[int] = []

    def counted(*args: object) -> int:
        if not isinstance(args[0], io.BytesIO):  # not polars_writes' probe
            used.append(1)
        return sink(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(writers, "_sink_parquet", counted)
    exprs = [pl.col("c0") * 2.0]
    want = _python_mapped(table, exprs)
    pieces = iter(table.to_batches(max_chunksize=1_000))
    mapped = MappedBatches(iter(want.to_batches(max_chunksize=1_000)), pieces, table.schema, exprs)
    out = tmp_path / "out.parquet"
    assert writers.write_batches(str(out), "parquet", table.schema, mapped) == 3_000
    assert used == ([1] if width <= writers.SINK_MAX_COLUMNS else [])
    assert _same(pq.read_table(out), want)


def _maps() -> dict[str, AffineMap]:
    return {"a": AffineMap(1e9, 1e-7, 3.0, 0.5), "b": AffineMap(-2.0, 0.0, 0.25, -1.0)}


def _python_mapped(table: pa.Table, exprs: list[pl.Expr]) -> pa.Table:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame.with_columns(exprs).to_arrow().cast(table.schema)


@pytest.mark.parametrize("rows", [1, 999, 65_536, 200_001])
def test_maps_evaluated_by_the_sink_match_python(tmp_path: Path, rows: int) -> None:
    """The sink maps the input's batches with the same expressions: the same bits as
    mapping them here and writing with pyarrow."""
    rng = np.random.default_rng(rows)
    a = rng.normal(size=rows) * 1e-3 + 1e9
    b = np.where(rng.random(rows) < 0.1, math.nan, rng.standard_cauchy(rows))
    b[rng.random(rows) < 0.01] = math.inf
    table = pa.table(
        {
            "a": pa.array(a, mask=rng.random(rows) < 0.05),
            "label": pa.array(rng.choice(["x", "y"], rows)),
            "b": b,
        }
    )
    exprs = map_exprs(_maps())
    want = _python_mapped(table, exprs)
    pieces = table.to_batches(max_chunksize=7_001)
    mapped = MappedBatches(iter(want.to_batches()), iter(pieces), table.schema, exprs)
    out = tmp_path / "sink.parquet"
    assert writers.write_batches(str(out), "parquet", want.schema, mapped) == rows
    ref = tmp_path / "ref.parquet"
    with open(ref, "wb") as f:
        writers._write_parquet(f, want.schema, iter(want.to_batches()))
    assert _same(pq.read_table(out), pq.read_table(ref))
    assert _same(pq.read_table(out), want)


def test_a_producer_error_is_raised_as_itself_and_leaves_nothing(tmp_path: Path) -> None:
    table = pa.table({"a": np.arange(100_000, dtype=np.float64)})

    def failing() -> object:
        yield from table.to_batches(max_chunksize=10_000)[:3]
        raise DataError('in.parquet: batch 4: column "a": bad')

    out = tmp_path / "out.parquet"
    with pytest.raises(DataError, match="batch 4"):
        writers.write_batches(str(out), "parquet", table.schema, failing())  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []


def test_finite_columns_from_statistics(tmp_path: Path) -> None:
    table = pa.table(
        {
            "inf": [1.0, math.inf],
            "nan": [1.0, math.nan],
            "null": pa.array([None, None], pa.float64()),
            "plain": [1.0, 2.0],
            "int": [1, 2],
            "minus_inf": pa.array([1.0, -math.inf], pa.float32()),
        }
    )
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    assert readers._finite_columns(pq.ParquetFile(path).metadata) == {
        "nan",
        "null",
        "plain",
        "int",
    }
    pq.write_table(table, path, write_statistics=False)  # no statistics: only integers
    assert readers._finite_columns(pq.ParquetFile(path).metadata) == {"int"}
    pq.write_table(table, path, row_group_size=1)  # every row group must be bounded
    assert "inf" not in readers._finite_columns(pq.ParquetFile(path).metadata)
