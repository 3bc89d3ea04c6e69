"""Writers: a stream of Arrow record batches to a file (atomically) or stdout."""

from __future__ import annotations

import base64
import contextlib
import io
import os
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, cast

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.batching import polars_schema, prefetch, prefetch_depth
from ..core.errors import OutputError
from ..core.frames import to_polars
from ..core.maps import MappedBatches
from .atomic import atomic_path, open_mode, writes_through
from .readers import SCAN_ENV, unreadable_parquet
from .streams import is_broken_pipe, stdout, stdout_error

#: Rows per Parquet row group: one write per N-row batch would make tiny row groups.
PARQUET_ROW_GROUP_ROWS = 1 << 17
#: ...and at most about this many bytes of float64 values (a wide file's row groups
#: would otherwise hold gigabytes in the writer).
PARQUET_ROW_GROUP_BYTES = 64 << 20
#: Rows per row group of polars' sink, which encodes several at once (65,536 rows:
#: ~40 MiB less peak memory than 131,072 on the benchmark's file, as fast).
SINK_ROW_GROUP_ROWS = 1 << 16
#: Columns beyond which pyarrow's writer is used instead: the sink's row groups in
#: flight cost +50-80 MiB at 64 columns, +100 at 256 and +250 at 1,000 (peak RSS of
#: transform), for a speed-up that shrinks with width (16 columns: ~1.5x; 64: ~1.1x
#: on a quiet host, the same CPU time; 1,000: none).
SINK_MAX_COLUMNS = 32


def write_batches(
    target: str, fmt: str, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> int:
    """Write every batch to ``target`` ("-" for stdout); return the row count.

    The batches are produced (read, normalized) in a background thread while
    this one encodes and compresses: both release the GIL for their heavy parts.
    """
    write = _WRITERS[fmt]
    if (
        fmt == "parquet"
        and target != "-"
        and len(schema) <= SINK_MAX_COLUMNS
        and not writes_through(target)
        and polars_writes(schema)
    ):
        try:
            with atomic_path(target) as tmp:
                return _sink_parquet(tmp, schema, batches)
        except OSError as e:
            raise _cannot_write(target, e) from None
    batches = prefetch(batches, prefetch_depth(1 << 16, len(schema)))
    if fmt in _CANNOT_HOLD:
        _check_types(schema, "<stdout>" if target == "-" else target, fmt)
    if fmt == "ipc" and (target == "-" or target.lower().endswith(".arrows")):
        write = _write_ipc_stream  # the IPC file format needs seeking; a pipe gets the stream
    if target == "-":
        out = stdout()
        try:
            rows = write(out, schema, _flushed(batches, out))
            out.flush()
        except OSError as e:  # /dev/full, ...
            if is_broken_pipe(e):
                raise
            raise stdout_error(e) from None
        return rows
    try:
        with atomic_path(target) as tmp, _open_native(tmp, fmt) as f:
            return write(f, schema, batches)
    except OSError as e:
        raise _cannot_write(target, e) from None


def _cannot_write(target: str, e: OSError) -> OutputError:
    """Disk full, file size limit, ...: the temporary file is gone."""
    reason = e.strerror or " ".join(str(e).split())
    return OutputError(
        f"{target}: cannot write the output ({reason}); make room on the disk or"
        " choose another -o path"
    )


def _open_native(path: str, fmt: str) -> BinaryIO:
    """The output file; for the Arrow writers (Parquet, IPC) a native one, so that
    their writes do not go through Python and wait for the GIL held by the thread
    that produces the batches. A device or FIFO (written through, `atomic`) cannot
    seek: a Python file then, as for stdout."""
    if fmt in ("parquet", "ipc") and not writes_through(path):
        return pa.OSFile(path, "wb")  # type: ignore[return-value]
    return cast(BinaryIO, open(path, open_mode(path)))


def _flushed(batches: Iterable[pa.RecordBatch], out: BinaryIO) -> Iterator[pa.RecordBatch]:
    """Flush stdout after each batch is written, so rows reach a pipe as they are made."""
    for batch in batches:
        yield batch
        out.flush()  # the writer asks for the next batch once it has written this one


def _not_json(t: pa.DataType) -> bool:
    """Bytes and the like, which the NDJSON writer cannot hold."""
    return (
        pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_fixed_size_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_interval(t)
        or pa.types.is_decimal256(t)
    )


def _not_csv(t: pa.DataType) -> bool:
    """What CSV text cannot hold: the same, plus nested values and durations."""
    return pa.types.is_nested(t) or pa.types.is_duration(t) or _not_json(t)


#: format -> (the types it cannot hold, what to write instead)
_CANNOT_HOLD: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "csv": (_not_csv, "write Parquet instead (a .parquet output name, or --output-format parquet)"),
    "tsv": (_not_csv, "write Parquet instead (a .parquet output name, or --output-format parquet)"),
    "ndjson": (_not_json, "write Parquet or Arrow IPC instead (--output-format parquet or ipc)"),
}


def _check_types(schema: pa.Schema, where: str, fmt: str) -> None:
    """Refuse, before writing anything, columns the output format cannot hold."""
    test, fix = _CANNOT_HOLD[fmt]
    name = "CSV" if fmt in ("csv", "tsv") else fmt.upper()
    for field in schema:
        if _holds(field.type, test):
            raise OutputError(
                f'{where}: column "{field.name}" is {field.type}, which {name} cannot hold; {fix}'
            )


def _holds(t: pa.DataType, test: Callable[[pa.DataType], bool]) -> bool:
    """Whether ``t`` or a type nested in it passes ``test``."""
    if isinstance(t, pa.ExtensionType):
        t = t.storage_type
    if pa.types.is_dictionary(t):
        t = t.value_type
    if test(t):
        return True
    return any(_holds(t.field(i).type, test) for i in range(t.num_fields))


def parquet_options(schema: pa.Schema) -> dict[str, Any]:
    """How bnorm writes Parquet, in one file or in a dataset's parts: snappy (pyarrow's
    and Spark's default; zstd packs ~10% smaller but writes ~1.5x slower), dictionary
    pages for text only (tried on float columns they cost 2x the write and fall back)."""
    return {
        "compression": "snappy",
        "use_dictionary": [fld.name for fld in schema if _text_like(fld.type)],
    }


def _write_parquet(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    rows = 0
    held: list[pa.RecordBatch] = []
    held_rows = 0
    group_rows = _group_rows(schema)
    with pq.ParquetWriter(f, schema, **parquet_options(schema)) as w:
        for batch in batches:
            held.append(batch)
            held_rows += batch.num_rows
            rows += batch.num_rows
            if held_rows >= group_rows:
                w.write_table(pa.Table.from_batches(held, schema), row_group_size=held_rows)
                held, held_rows = [], 0
        if held:
            w.write_table(pa.Table.from_batches(held, schema), row_group_size=held_rows)
    return rows


def polars_writes(schema: pa.Schema) -> bool:
    """Whether polars' Parquet writer stores ``schema``'s columns as pyarrow's does:
    the same Parquet columns (physical and logical types, nesting, nullability), and
    the file read back by pyarrow has ``schema`` (checked on an empty file of each)."""
    if not schema.names or len(set(schema.names)) < len(schema.names):
        return False
    try:
        ours = io.BytesIO()
        pq.write_table(pa.Table.from_batches([], schema=schema), ours)
        theirs = io.BytesIO()
        _sink_parquet(theirs, schema, iter(()))
    except Exception:  # a type polars does not hold (extension types, ...)
        return False
    a, b = (pq.ParquetFile(io.BytesIO(f.getvalue())) for f in (ours, theirs))
    return _columns(a.schema) == _columns(b.schema) and b.schema_arrow == schema


def _columns(parquet: pq.ParquetSchema) -> list[tuple[object, ...]]:
    fields: tuple[str, ...] = ("path", "physical_type", "logical_type", "converted_type", "length")
    fields += ("max_definition_level", "max_repetition_level", "precision", "scale")
    columns = (parquet.column(i) for i in range(len(parquet)))
    return [tuple(str(getattr(c, f)) for f in fields) for c in columns]


def _sink_parquet(
    path: str | BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]
) -> int:
    """Parquet through polars' writer, which encodes and compresses row groups on
    every core (pyarrow's encodes on one: ~2x slower on the benchmark's file).

    The batches are pulled through an Arrow stream, in a background thread (their
    producer reads and checks while polars encodes); `MappedBatches` that polars can
    map come as the input's batches with the expressions, evaluated by polars too.
    ``schema`` is recorded as the file's Arrow schema, as pyarrow records it, so
    readers see the input's types (``string``, not polars' ``large_string``). An
    error of the batches' producer is raised as itself (polars reports it as its own).
    """
    rows = 0
    failed: list[BaseException] = []
    pulled, exprs = schema, None
    if isinstance(batches, MappedBatches):
        if batches.exprs is not None and _maps_to(batches.input_schema, batches.exprs, schema):
            scanned = _scanned(batches)
            if scanned is not None:
                _sink(path, schema, scanned.with_columns(batches.exprs), batches, failed)
                return batches.rows
            pulled, exprs, batches = batches.input_schema, batches.exprs, batches.inputs
        else:
            batches = batches.batches

    def counted() -> Iterator[pa.RecordBatch]:
        nonlocal rows
        try:
            for batch in prefetch(batches, prefetch_depth(1 << 16, len(pulled))):
                rows += batch.num_rows
                yield batch
        except BaseException as e:
            failed.append(e)
            raise

    frame = pl.scan_arrow_c_stream(pa.RecordBatchReader.from_batches(pulled, counted()))
    if exprs is not None:
        frame = frame.with_columns(exprs)
    _sink(path, schema, frame, None, failed)
    return rows


def _sink(
    path: str | BinaryIO,
    schema: pa.Schema,
    frame: pl.LazyFrame,
    scanned: MappedBatches | None,
    failed: list[BaseException],
) -> None:
    """Run ``frame`` into ``path``; with ``scanned``, polars reads its input itself
    (an error is then the input's: polars read it)."""
    metadata = {k.decode(): v.decode() for k, v in (schema.metadata or {}).items()}
    metadata["ARROW:schema"] = base64.b64encode(schema.serialize().to_pybytes()).decode()
    try:
        with _environ(SCAN_ENV if scanned is not None else {}):
            frame.sink_parquet(
                path,
                compression="snappy",
                row_group_size=min(_group_rows(schema), SINK_ROW_GROUP_ROWS),
                metadata=metadata,
                arrow_schema=_required(frame, schema),
            )
    except Exception as e:
        if failed:
            raise failed[0] from None
        code = _OS_ERROR.search(str(e))
        if code:  # polars reports the file system's errors (disk full, ...) as its own
            raise OSError(int(code[1]), os.strerror(int(code[1]))) from None
        if scanned is not None and isinstance(e, pl.exceptions.PolarsError):
            raise unreadable_parquet(scanned.name, e) from None
        raise
    if failed:  # pragma: no cover - polars always fails when its source does
        raise failed[0]


def _scanned(batches: MappedBatches) -> pl.LazyFrame | None:
    """The input as polars' own scan, when it has one and reads the same types."""
    if batches.scan is None:
        return None
    try:
        frame = batches.scan()
        same = frame.collect_schema() == polars_schema(batches.input_schema)
    except Exception:  # a file polars cannot read as pyarrow does: pyarrow reads it
        return None
    return frame if same else None


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in the environment meanwhile, unless the user set them."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def _required(frame: pl.LazyFrame, schema: pa.Schema) -> pa.Schema | None:
    """polars' own Arrow schema of ``frame`` with ``schema``'s non-nullable top-level
    fields made so, for the sink to write them REQUIRED as pyarrow does (DuckDB
    marks the columns it knows hold no null so); None when every field is nullable."""
    if all(f.nullable for f in schema):
        return None
    own = pl.DataFrame(schema=frame.collect_schema()).to_arrow().schema
    return pa.schema([f.with_nullable(schema.field(f.name).nullable) for f in own])


def _maps_to(inputs: pa.Schema, exprs: list[pl.Expr], schema: pa.Schema) -> bool:
    """Whether polars maps a frame of ``inputs`` by ``exprs`` into ``schema``'s types."""
    try:
        got = pl.LazyFrame(schema=pl.from_arrow(pa.Table.from_batches([], schema=inputs)).schema)  # type: ignore[union-attr]
        want = pl.from_arrow(pa.Table.from_batches([], schema=schema)).schema  # type: ignore[union-attr]
        return bool(got.with_columns(exprs).collect_schema() == want)
    except Exception:  # a type polars does not hold
        return False


def _group_rows(schema: pa.Schema) -> int:
    return max(1024, min(PARQUET_ROW_GROUP_ROWS, PARQUET_ROW_GROUP_BYTES // (8 * len(schema) or 1)))


def _text_like(t: pa.DataType) -> bool:
    """Columns worth dictionary-encoding in Parquet: text, bytes and categoricals.

    Not numbers: hashing every float of a normalized column buys nothing, and for
    an int64 column it cost 6x the write time and made the file larger (measured
    on the benchmark's `count` column; low-cardinality codes still compress with
    snappy).
    """
    return (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_binary(t)
        or pa.types.is_large_binary(t)
        or pa.types.is_binary_view(t)
        or pa.types.is_dictionary(t)
    )


def _write_csv(
    f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch], separator: str = ","
) -> int:
    rows = 0
    first = True
    for batch in batches:
        frame = to_polars(batch)
        frame.write_csv(f, include_header=first, separator=separator)
        first = False
        rows += batch.num_rows
    if first:  # no rows: still write the header
        empty = to_polars(pa.Table.from_batches([], schema=schema))
        empty.write_csv(f, separator=separator)
    return rows


def _write_tsv(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    return _write_csv(f, schema, batches, separator="\t")


def _write_ipc(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """The Arrow IPC file format (Feather v2), one record batch per bnorm batch."""
    rows = 0
    with pa.ipc.new_file(f, schema) as w:
        for batch in batches:
            w.write_batch(batch)
            rows += batch.num_rows
    return rows


def _write_ipc_stream(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """The Arrow IPC stream format: one stream (one schema message) for the whole run.

    The end-of-stream marker is written only after the last batch, so a run that
    fails does not end its stream as a complete one would (bnorm also exits 1).
    """
    rows = 0
    w = pa.ipc.new_stream(f, schema)
    for batch in batches:
        w.write_batch(batch)
        rows += batch.num_rows
    w.close()
    return rows


def _write_ndjson(f: BinaryIO, schema: pa.Schema, batches: Iterable[pa.RecordBatch]) -> int:
    """One JSON object per row; JSON has no NaN or infinity, so they are written as null."""
    rows = 0
    for batch in batches:
        frame = to_polars(batch)
        frame.write_ndjson(f)
        rows += batch.num_rows
    return rows


_WRITERS: dict[str, Callable[[BinaryIO, pa.Schema, Iterable[pa.RecordBatch]], int]] = {
    "csv": _write_csv,
    "tsv": _write_tsv,
    "parquet": _write_parquet,
    "ipc": _write_ipc,
    "ndjson": _write_ndjson,
}
