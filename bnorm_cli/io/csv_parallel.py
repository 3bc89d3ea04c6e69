"""CSV from a regular file, parsed on several cores.

pyarrow's streaming CSV reader parses one block at a time on one core. For a
file (not a pipe), the text is cut here into pieces at row ends (outside quotes,
so quoted fields may hold newlines), and each piece is parsed by
``pyarrow.csv.read_csv`` (serially, with the same options as the streaming
reader) in a small thread pool; pieces come back in file order. Memory: a few
pieces in flight.

Errors are pyarrow's own, with the row number counted from the start of the
file (pyarrow counts a piece's rows from 1), so `readers._explain` reads them as
it reads the streaming reader's.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import os
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Protocol

import pyarrow as pa
import pyarrow.csv as pacsv

from .streams import RowEnds

_ROW = re.compile(r"Row #(\d+)")


class Readable(Protocol):
    def readinto(self, buffer: memoryview, /) -> int | None: ...


def parallel_csv(
    text: Readable,
    names: Sequence[str],
    parse: pacsv.ParseOptions,
    convert: pacsv.ConvertOptions,
    piece_bytes: int,
    workers: int | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of the CSV ``text`` (from its header line on), in order."""
    workers = workers or min(4, _cpus())

    def parse_piece(piece: memoryview, first: bool) -> pa.Table:
        options = pacsv.ReadOptions(
            use_threads=False,
            block_size=len(piece) + 1,  # one block: no row straddles two
            column_names=None if first else list(names),  # the first piece has the header
        )
        return pacsv.read_csv(
            pa.py_buffer(piece), read_options=options, parse_options=parse, convert_options=convert
        )

    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="bnorm-csv")
    pending: collections.deque[cf.Future[pa.Table]] = collections.deque()
    rows = -1  # data rows before the next piece to emit; -1: the first piece, with the header
    try:
        for i, piece in enumerate(_pieces(text, piece_bytes)):
            pending.append(pool.submit(parse_piece, piece, i == 0))
            if len(pending) >= 2 * workers:
                rows = yield from _emit(pending.popleft(), rows)
        while pending:
            rows = yield from _emit(pending.popleft(), rows)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _cpus() -> int:
    """CPUs this process may run on (a container may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _emit(future: cf.Future[pa.Table], rows: int) -> Generator[pa.RecordBatch, None, int]:
    """The batches of one parsed piece, after ``rows`` data rows (-1 before the
    first piece); returns the data rows so far."""
    try:
        table = future.result()
    except pa.ArrowInvalid as e:
        # pyarrow counts rows from 1 in each piece, the header being row 1 of the
        # first piece; a later piece follows the header and ``rows`` data rows
        offset = 0 if rows < 0 else rows + 1
        text = _ROW.sub(lambda m: f"Row #{int(m.group(1)) + offset}", str(e), count=1)
        raise pa.ArrowInvalid(text) from None
    yield from table.to_batches()
    return max(rows, 0) + table.num_rows


def _pieces(text: Readable, size: int) -> Iterator[memoryview]:
    """The text in pieces of about ``size`` bytes, each ending where a row ends.

    Each piece is a fresh buffer that the text is read into directly (one copy):
    pieces are parsed while the next ones are read.
    """
    carry = b""
    while True:
        buf = bytearray(len(carry) + size)
        buf[: len(carry)] = carry
        end = len(carry) + _read_into(text, memoryview(buf)[len(carry) :])
        if end < len(buf):  # the end of the input: the rest is the last piece
            if end:
                yield memoryview(buf)[:end]
            return
        cut = _row_end(buf)
        if cut:
            yield memoryview(buf)[:cut]
        carry = bytes(buf[cut:])  # a row longer than a piece: all of it, and read on


def _row_end(buf: bytearray) -> int:
    """Length of the longest prefix of ``buf`` that ends with a row, or 0.

    ``buf`` starts at a row start, outside quotes (every piece does), which is
    where a fresh `RowEnds` starts; `RowEnds.cut` does not change it.
    """
    return _FROM_A_ROW_START.cut(buf, len(buf))


_FROM_A_ROW_START = RowEnds(quotes=True)


def _read_into(text: Readable, view: memoryview) -> int:
    """Fill ``view``; fewer bytes only at the end (a stream may return less)."""
    got = 0
    while got < len(view):
        n = text.readinto(view[got:])
        if not n:
            break
        got += n
    return got
