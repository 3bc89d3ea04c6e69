"""The plan: inputs as an ordered list of units, cut where batches fall.

A unit is a piece of one file that can be opened and read on its own (Parquet:
some row groups; Arrow IPC file: some record batches) with its global first
row, known from the footers without reading any data. Batch ``k`` is global
rows ``[k*N, (k+1)*N)``; `batch_spans` says which units' rows each run of
whole batches needs, which is what a distributed engine maps over. Text formats
and pipes have no footer: their units are discovered as they stream, and
`plan` returns ``None`` for them.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..core.errors import DataError
from . import storage
from .inputs import InputFile, Partitions, partition_columns
from .storage import is_url


@dataclass(frozen=True)
class Unit:
    """Rows ``[first_row, first_row + rows)`` of the dataset, in one file."""

    path: str
    fmt: str
    parts: tuple[int, ...]  # Parquet row groups / IPC record batches
    first_row: int
    rows: int
    partitions: Partitions = ()  # hive folders' key=value, appended as text columns

    def read(self, columns: Sequence[str] | None = None) -> pa.Table:
        """This unit's rows (only ``columns``, if given), with its partition columns."""
        keys = {k for k, _ in self.partitions}

        def own(names: list[str]) -> list[str] | None:  # a file's own column wins
            return None if columns is None else [c for c in columns if c in names or c not in keys]

        if self.fmt == "parquet":
            pf = pq.ParquetFile(_source(self.path), pre_buffer=False)
            wanted = own(pf.schema_arrow.names)
            table = pf.read_row_groups(list(self.parts), columns=wanted)
        else:
            with _source(self.path) as f:
                reader = pa.ipc.open_file(f)
                batches = [reader.get_batch(i) for i in self.parts]
                table = pa.Table.from_batches(batches, reader.schema)
            wanted = own(table.schema.names)
            table = table.select(wanted) if wanted is not None else table
        return partition_columns(table, self.partitions, columns)


def plan(files: Sequence[InputFile]) -> list[Unit] | None:
    """One unit per Parquet row group / IPC record batch, in reading order."""
    units: list[Unit] = []
    row = 0
    for f in files:
        if f.fmt not in ("parquet", "ipc") or not _regular_file(f.path):
            return None  # stdin, a FIFO or a device is opened once only, by the reader
        try:
            sizes = _part_rows(f)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"{f.path}: cannot read its footer ({e}); check the file") from None
        if sizes is None:
            return None
        for i, rows in enumerate(sizes):
            if rows:
                units.append(Unit(f.path, f.fmt, (i,), row, rows, f.partitions))
                row += rows
    return units


def _regular_file(path: str) -> bool:
    """A regular local file, or an object behind a URL (both can be read again)."""
    if is_url(path):
        return True
    try:
        return path != "-" and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _source(path: str) -> Any:
    """A local path as a native file, a URL through fsspec."""
    return storage.open_binary(path) if is_url(path) else pa.OSFile(path)


def _part_rows(f: InputFile) -> list[int] | None:
    if f.fmt == "parquet":
        meta = pq.read_metadata(_source(f.path))
        return [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    with _source(f.path) as raw:
        if raw.read(6) != b"ARROW1":
            return None  # an IPC stream: no footer
    with _source(f.path) as native:
        reader = pa.ipc.open_file(native)
        return [reader.get_record_batch(i).num_rows for i in range(reader.num_record_batches)]


def batch_spans(
    units: Sequence[Unit], batch_size: int, target_rows: int
) -> list[tuple[int, int, list[Unit]]]:
    """Runs of whole batches of about ``target_rows`` rows: (first batch, batch count,
    the units holding their rows). Every batch lies in exactly one run."""
    total = units[-1].first_row + units[-1].rows if units else 0
    batches = -(-total // batch_size)
    per = max(1, target_rows // batch_size)
    spans = []
    for first in range(0, batches, per):
        count = min(per, batches - first)
        lo, hi = first * batch_size, min(total, (first + count) * batch_size)
        needed = [u for u in units if u.first_row < hi and u.first_row + u.rows > lo]
        spans.append((first, count, needed))
    return spans
