"""Cut a stream of Arrow record batches into batches of exactly N rows.

Readers chunk files by row groups, byte blocks or whatever suits them; the
statistics must not depend on that, so every batch the engine sees has exactly
``batch_size`` rows, in file order, except possibly the last.
"""

from __future__ import annotations

import collections
import concurrent.futures
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import polars as pl
import pyarrow as pa

from .frames import to_polars

T = TypeVar("T")


def exact_batches(pieces: Iterable[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    """Yield record batches of exactly ``batch_size`` rows (the last may be shorter).

    Each yielded batch is one contiguous chunk (re-chunked when it spans pieces),
    which keeps per-batch float sums independent of how the input was chunked.
    """
    if batch_size <= 0:
        raise ValueError("batch_size must be positive")
    held: list[pa.RecordBatch] = []
    held_rows = 0
    for piece in pieces:
        if piece.num_rows == 0:
            continue
        if not held and piece.num_rows == batch_size:
            yield piece
            continue
        held.append(piece)
        held_rows += piece.num_rows
        if held_rows < batch_size:
            continue
        table = pa.Table.from_batches(held)
        start = 0
        while held_rows - start >= batch_size:
            yield _one_chunk(table.slice(start, batch_size))
            start += batch_size
        rest = table.slice(start)
        held = rest.to_batches() if rest.num_rows else []
        held_rows = rest.num_rows
    if held_rows:
        yield _one_chunk(pa.Table.from_batches(held))


def _one_chunk(table: pa.Table) -> pa.RecordBatch:
    return table.combine_chunks().to_batches()[0]


#: Bytes of float64 values above which only one item is read ahead (wide files).
PREFETCH_BYTES = 64 << 20


def prefetch_depth(rows: int, width: int) -> int:
    """How many items of ``rows`` x ``width`` values to read ahead: 2, or 1 when
    they are large (1,000 columns x 64k rows is 512 MiB an item)."""
    return 2 if rows * max(width, 1) * 8 <= PREFETCH_BYTES else 1


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Iterate ``items`` in a background thread, ``depth`` items ahead.

    Reading and decoding (pyarrow releases the GIL) then overlap with the
    statistics of the previous batch. Memory grows by at most ``depth`` items;
    an exception in the reader is re-raised here, in order.
    """
    done = object()
    q: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(done)
        except BaseException as e:  # handed to the consumer
            put(_Raised(e))

    thread = threading.Thread(target=run, name="bnorm-reader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join(timeout=1.0)


class Behind:
    """Runs ``work(*args)`` for each `submit`, in submission order, on one background
    thread, at most ``depth`` calls behind the submitter.

    For work that watches a stream without changing it (transform's drift summary):
    the stream's items go on as soon as they are submitted instead of waiting for
    it. An error of the work is raised in the submitter, by a later `submit` or by
    `close`, which also waits for the calls still pending.
    """

    def __init__(self, work: Callable[..., object], depth: int = 2) -> None:
        self._work = work
        self._depth = max(1, depth)
        self._pending: collections.deque[concurrent.futures.Future[object]] = collections.deque()
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="bnorm-behind")

    def submit(self, *args: object) -> None:
        self._pending.append(self._pool.submit(self._work, *args))
        while len(self._pending) > self._depth:
            self._pending.popleft().result()

    def close(self) -> None:
        """Wait for every pending call; raise the first error."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.cancel()

    def cancel(self) -> None:
        """Drop the calls not started (the stream stopped early); no wait."""
        self._pending.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)


#: A frame, the input row of its first row, and its row count.
Piece = tuple[pl.DataFrame, int, int]


class Joined:
    """Consecutive frames joined until they hold ``rows`` rows or ``nbytes`` bytes of
    float64 values, for work with a cost per column and call (the drift summary): a
    wide file's pieces are small (1,000 columns: 2,048 rows); narrow pieces pass
    alone. `add` returns a joined frame with its first row and row count when one is
    full; `flush`, the rest. A frame may have no columns: its rows are counted."""

    def __init__(self, rows: int, nbytes: int) -> None:
        self._rows, self._bytes = rows, nbytes
        self._held: list[pl.DataFrame] = []
        self._first = self._count = 0

    def add(self, frame: pl.DataFrame, first_row: int, rows: int) -> Piece | None:
        if not self._held:
            self._first = first_row
        self._held.append(frame)
        self._count += rows
        full = self._count >= self._rows or self._count * frame.width * 8 >= self._bytes
        return self.flush() if full else None

    def flush(self) -> Piece | None:
        if not self._held:
            return None
        held = self._held
        frame = held[0] if len(held) == 1 else pl.concat(held, how="vertical", rechunk=True)
        out = (frame, self._first, self._count)
        self._held, self._count = [], 0
        return out


class _Raised:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


def polars_schema(schema: pa.Schema) -> pl.Schema:
    """The polars schema of data with this Arrow schema."""
    # not schema.empty_table(): its pa.array calls import pandas when installed (~0.2 s)
    return to_polars(pa.Table.from_batches([], schema=schema)).schema
