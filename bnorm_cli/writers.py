"""Writers: a stream of Arrow record batches to a file (atomically) or stdout."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from typing import BinaryIO

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from .atomic import atomic_path
from .batching import prefetch
from .errors import OutputError

#: Rows per Parquet row group: one write per N-row batch would make tiny row groups.
PARQUET_ROW_GROUP_ROWS = 1 << 17


def write_batches(
    target: str, fmt: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> int:
    """Write every batch to ``target`` ("-" for stdout); return the row count.

    The batches are produced (read, normalized) in a background thread while
    this one encodes and compresses: both release the GIL for their heavy parts.
    """
    write = _WRITERS[fmt]
    batches = prefetch(batches)
    if fmt == "csv":
        _check_csv_types(schema, "<stdout>" if target == "-" else target)
    if target == "-":
        out = sys.stdout.buffer
        rows = write(out, schema, batches)
        out.flush()
        return rows
    try:
        with atomic_path(target) as tmp, open(tmp, "wb") as f:
            return write(f, schema, batches)
    except OSError as e:  # disk full, file size limit, ...: the temporary file is gone
        reason = e.strerror or " ".join(str(e).split())
        raise OutputError(
            f"{target}: cannot write the output ({reason}); make room on the disk or"
            " choose another -o path"
        ) from None


def _check_csv_types(schema: pa.Schema, where: str) -> None:
    """Refuse, before writing anything, columns that CSV text cannot hold."""
    for field in schema:
        t = field.type
        if isinstance(t, pa.ExtensionType):
            t = t.storage_type
        if pa.types.is_dictionary(t):
            t = t.value_type
        if (
            pa.types.is_nested(t)
            or pa.types.is_binary(t)
            or pa.types.is_large_binary(t)
            or pa.types.is_fixed_size_binary(t)
            or pa.types.is_binary_view(t)
            or pa.types.is_duration(t)
            or pa.types.is_interval(t)
            or pa.types.is_decimal256(t)
        ):
            raise OutputError(
                f'{where}: column "{field.name}" is {field.type}, which CSV cannot hold;'
                " write Parquet instead (a .parquet output name, or --output-format parquet)"
            )


def _write_parquet(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    float_types = (pa.float16(), pa.float32(), pa.float64())
    dictionary = [fld.name for fld in schema if fld.type not in float_types]
    rows = 0
    held: list[pa.RecordBatch] = []
    held_rows = 0
    with pq.ParquetWriter(f, schema, compression="zstd", use_dictionary=dictionary) as w:
        for batch in batches:
            held.append(batch)
            held_rows += batch.num_rows
            rows += batch.num_rows
            if held_rows >= PARQUET_ROW_GROUP_ROWS:
                w.write_table(pa.Table.from_batches(held, schema), row_group_size=held_rows)
                held, held_rows = [], 0
        if held:
            w.write_table(pa.Table.from_batches(held, schema), row_group_size=held_rows)
    return rows


def _write_csv(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    rows = 0
    first = True
    for batch in batches:
        frame = pl.from_arrow(batch)
        assert isinstance(frame, pl.DataFrame)
        frame.write_csv(f, include_header=first)
        first = False
        rows += batch.num_rows
    if first:  # no rows: still write the header
        pl.DataFrame(schema=pl.from_arrow(schema.empty_table()).schema).write_csv(f)  # type: ignore[union-attr]
    return rows


_WRITERS: dict[str, Callable[[BinaryIO, pa.Schema, Iterable[pa.RecordBatch]], int]] = {
    "csv": _write_csv,
    "parquet": _write_parquet,
}
