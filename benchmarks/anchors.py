"""Reference workloads ("anchors") that bnorm is measured against.

Each anchor is what a competent user would write with the library at hand.
run.py starts every anchor as its own process:

    python benchmarks/anchors.py NAME INPUT [--out PATH] [--state PATH] [--batch-size N]
        [--compression snappy]

so its wall time and peak RSS include interpreter start-up and imports, as
bnorm's do. Libraries are imported inside each anchor, never at module level.
Anchors that write Parquet use ``--compression`` (default snappy: the codec bnorm
writes, so both sides pay for the same encoder).

- polars_agg:            scan_parquet -> mean and var of each numeric column (streaming)
- polars_copy:           scan_parquet -> sink_parquet
- polars_csv_agg:        scan_csv -> the same aggregate
- polars_csv_to_parquet: scan_csv -> sink_parquet
- sklearn_fit:           pyarrow batches -> StandardScaler.partial_fit; pickles it to --state
- sklearn_transform:     loads --state; per batch transform, written with pyarrow ParquetWriter
- torch_bn:              pyarrow batches -> BatchNorm1d(float64) in training mode (running stats)
"""

from __future__ import annotations

import argparse
import pickle
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import polars as pl
    import pyarrow as pa

READ_BUFFER = 1 << 20  # pyarrow read buffer with pre_buffer=False (see io-notes.md)
WRITE_ROWS = 1 << 20  # rows per row group written by sklearn_transform
OUTPUT_COMPRESSION = "snappy"  # what bnorm writes (bnorm_cli writers); anchors match it


def _numeric(schema: pl.Schema) -> list[str]:
    return [name for name, dtype in schema.items() if dtype.is_numeric()]


def _moments(lf: pl.LazyFrame) -> pl.DataFrame:
    import polars as pl

    cols = _numeric(lf.collect_schema())
    exprs = [pl.col(c).mean().alias(f"{c}_mean") for c in cols]
    exprs += [pl.col(c).var(ddof=0).alias(f"{c}_var") for c in cols]
    return lf.select(exprs).collect(engine="streaming")


def polars_agg(a: argparse.Namespace) -> None:
    import polars as pl

    _moments(pl.scan_parquet(a.input))


def polars_csv_agg(a: argparse.Namespace) -> None:
    import polars as pl

    _moments(pl.scan_csv(a.input))


def polars_copy(a: argparse.Namespace) -> None:
    import polars as pl

    pl.scan_parquet(a.input).sink_parquet(a.out, compression=a.compression)


def polars_csv_to_parquet(a: argparse.Namespace) -> None:
    import polars as pl

    pl.scan_csv(a.input).sink_parquet(a.out, compression=a.compression)


def _batches(path: Path, batch_size: int) -> Iterator[pa.RecordBatch]:
    """Exact ``batch_size``-row batches in bounded memory (pre_buffer=False)."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(path, pre_buffer=False, buffer_size=READ_BUFFER)
    yield from pf.iter_batches(batch_size=batch_size)


def _numeric_arrow(schema: pa.Schema) -> list[str]:
    import pyarrow.types as pt

    return [f.name for f in schema if pt.is_integer(f.type) or pt.is_floating(f.type)]


def _to_matrix(batch: pa.RecordBatch, cols: list[str]) -> np.ndarray:
    """The numeric columns as a float64 (rows, cols) matrix, NaN for nulls."""
    import numpy as np
    import pyarrow as pa

    x = np.empty((batch.num_rows, len(cols)), dtype=np.float64)
    for j, name in enumerate(cols):
        col = batch.column(name).cast(pa.float64())
        x[:, j] = col.to_numpy(zero_copy_only=False)  # nulls become NaN
    return x


def sklearn_fit(a: argparse.Namespace) -> None:
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler()
    cols: list[str] | None = None
    for batch in _batches(a.input, a.batch_size):
        cols = cols or _numeric_arrow(batch.schema)
        scaler.partial_fit(_to_matrix(batch, cols))
    with open(a.state, "wb") as f:
        pickle.dump({"scaler": scaler, "columns": cols}, f)


def sklearn_transform(a: argparse.Namespace) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with open(a.state, "rb") as f:
        state = pickle.load(f)
    scaler, cols = state["scaler"], state["columns"]
    writer: pq.ParquetWriter | None = None
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in _batches(a.input, a.batch_size):
        y = scaler.transform(_to_matrix(batch, cols))
        arrays = list(batch.columns)
        fields = list(batch.schema)
        for j, name in enumerate(cols):
            i = batch.schema.get_field_index(name)
            valid = batch.column(i).is_valid().to_numpy(zero_copy_only=False)
            arrays[i] = pa.array(y[:, j], type=pa.float64(), mask=~valid)
            fields[i] = pa.field(name, pa.float64())
        out = pa.RecordBatch.from_arrays(arrays, schema=pa.schema(fields))
        if writer is None:
            text = [f.name for f in out.schema if pa.types.is_string(f.type)]
            # Dictionary-encoding floats is slow and bloats the file (io-notes.md).
            writer = pq.ParquetWriter(
                a.out, out.schema, compression=a.compression, use_dictionary=text
            )
        # One write_table per batch would make one tiny row group per batch.
        pending.append(out)
        pending_rows += out.num_rows
        if pending_rows >= WRITE_ROWS:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=WRITE_ROWS)
            pending, pending_rows = [], 0
    if writer is not None:
        if pending:
            writer.write_table(pa.Table.from_batches(pending), row_group_size=WRITE_ROWS)
        writer.close()


def torch_bn(a: argparse.Namespace) -> None:
    import numpy as np
    import torch

    bn: Any = None
    cols: list[str] | None = None
    with torch.no_grad():
        for batch in _batches(a.input, a.batch_size):
            cols = cols or _numeric_arrow(batch.schema)
            if bn is None:
                bn = torch.nn.BatchNorm1d(len(cols), affine=False).double().train()
            if batch.num_rows > 1:  # BatchNorm1d refuses a 1-row batch in training mode
                # BatchNorm1d has no notion of missing values: zero-fill them.
                bn(torch.from_numpy(np.nan_to_num(_to_matrix(batch, cols), nan=0.0)))


ANCHORS: dict[str, Callable[[argparse.Namespace], None]] = {
    "polars_agg": polars_agg,
    "polars_copy": polars_copy,
    "polars_csv_agg": polars_csv_agg,
    "polars_csv_to_parquet": polars_csv_to_parquet,
    "sklearn_fit": sklearn_fit,
    "sklearn_transform": sklearn_transform,
    "torch_bn": torch_bn,
}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Run one benchmark anchor workload.")
    p.add_argument("name", choices=sorted(ANCHORS))
    p.add_argument("input", type=Path)
    p.add_argument("--out", type=Path, help="output file (copy/transform anchors)")
    p.add_argument("--state", type=Path, help="pickled scaler (written by sklearn_fit)")
    p.add_argument("--batch-size", type=int, default=65536)
    p.add_argument(
        "--compression",
        default=OUTPUT_COMPRESSION,
        help="codec of a Parquet output (default snappy, as bnorm writes)",
    )
    a = p.parse_args(argv)
    ANCHORS[a.name](a)


if __name__ == "__main__":
    main()
