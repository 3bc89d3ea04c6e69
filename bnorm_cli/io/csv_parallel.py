"""CSV from a regular file, parsed on several cores.

pyarrow's streaming CSV reader parses one block at a time on one core. For a
file (not a pipe), the text is cut here into pieces at row ends (outside quotes,
so quoted fields may hold newlines), and each piece is parsed by
``pyarrow.csv.read_csv`` (serially, with the same options as the streaming
reader) in a small thread pool; pieces come back in file order. Memory: a few
pieces in flight.

Rows are found as pyarrow's parser finds them (`streams.RowEnds`). When no row
end is found in ``hand_off`` bytes (a row that long, or a quote that never
closes), those bytes and the rest of the text go to pyarrow's streaming reader,
which decides: time and memory do not grow with the file, and the result is the
streaming reader's.

Errors are pyarrow's own, with the row number counted from the start of the
file (pyarrow counts a piece's rows from 1), so `readers._explain` reads them as
it reads the streaming reader's.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import io
import os
import re
from collections.abc import Generator, Iterator, Sequence
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.csv as pacsv

from .streams import RowEnds

#: Bytes without a row end after which pyarrow's streaming reader takes over.
HAND_OFF = 8 << 20
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
    hand_off: int = HAND_OFF,
    retry: pacsv.ConvertOptions | None = None,
) -> Iterator[pa.RecordBatch]:
    """Record batches of the CSV ``text`` (from its header line on), in order.

    ``retry``: a piece whose values do not convert is parsed again with these
    options (which read more columns as text, for the caller to convert).
    """
    workers = workers or min(4, _cpus())

    def parse_piece(piece: memoryview, first: bool) -> pa.Table:
        options = pacsv.ReadOptions(
            use_threads=False,
            block_size=len(piece) + 1,  # one block: no row straddles two
            column_names=None if first else list(names),  # the first piece has the header
        )
        data = pa.py_buffer(piece)
        try:
            return pacsv.read_csv(
                data, read_options=options, parse_options=parse, convert_options=convert
            )
        except pa.ArrowInvalid as e:
            if retry is None or "conversion error" not in str(e):
                raise
        return pacsv.read_csv(
            data, read_options=options, parse_options=parse, convert_options=retry
        )

    pool = cf.ThreadPoolExecutor(workers, thread_name_prefix="bnorm-csv")
    pending: collections.deque[cf.Future[pa.Table]] = collections.deque()
    rows = -1  # data rows before the next piece to emit; -1: the first piece, with the header
    ends = RowEnds(quotes=True, delimiter=parse.delimiter)
    rest: _Rest | None = None
    try:
        for i, piece in enumerate(_pieces(text, piece_bytes, ends, hand_off)):
            if isinstance(piece, _Rest):
                rest = piece
                break
            pending.append(pool.submit(parse_piece, piece, i == 0))
            if len(pending) >= 2 * workers:
                rows = yield from _emit(pending.popleft(), rows)
        while pending:
            rows = yield from _emit(pending.popleft(), rows)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if rest is not None:
        block = max(piece_bytes, 1 << 20)
        # streamed in one go: no piece to parse again, so as text from the start
        rest_convert = retry or convert
        yield from _stream(rest, None if rows < 0 else names, parse, rest_convert, block, rows)


def _stream(
    rest: _Rest,
    names: Sequence[str] | None,
    parse: pacsv.ParseOptions,
    convert: pacsv.ConvertOptions,
    block: int,
    rows: int,
) -> Iterator[pa.RecordBatch]:
    """The rest of the text by pyarrow's streaming reader (after ``rows`` data rows)."""
    read = pacsv.ReadOptions(
        use_threads=False, block_size=block, column_names=None if names is None else list(names)
    )
    try:
        yield from pacsv.open_csv(
            rest, read_options=read, parse_options=parse, convert_options=convert
        )
    except pa.ArrowInvalid as e:
        raise _renumbered(e, rows) from None


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
        raise _renumbered(e, rows) from None
    yield from table.to_batches()
    return max(rows, 0) + table.num_rows


def _renumbered(e: pa.ArrowInvalid, rows: int) -> pa.ArrowInvalid:
    """pyarrow's error with the row counted from the start of the file.

    pyarrow counts rows from 1 in each piece, the header being row 1 of the first
    piece; a later piece follows the header and ``rows`` data rows.
    """
    offset = 0 if rows < 0 else rows + 1
    return pa.ArrowInvalid(_ROW.sub(lambda m: f"Row #{int(m.group(1)) + offset}", str(e), count=1))


def _pieces(
    text: Readable, size: int, ends: RowEnds, hand_off: int
) -> Iterator[memoryview | _Rest]:
    """The text in pieces of about ``size`` bytes, each ending where a row ends; or,
    once ``hand_off`` bytes hold no row end, the rest of the text as one `_Rest`.

    Each piece is a fresh buffer that the text is read into directly (one copy):
    pieces are parsed while the next ones are read. Every piece starts at a row
    start, where ``ends`` (never told what was `seen`) finds row ends.
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
        cut = ends.cut(buf, len(buf))
        if not cut and len(buf) >= hand_off:  # in doubt: pyarrow's streaming reader decides
            yield _Rest(bytes(buf), text)
            return
        if cut:
            yield memoryview(buf)[:cut]
        carry = bytes(buf[cut:])  # a row longer than a piece: all of it, and read on


class _Rest(io.RawIOBase):
    """What was read but not parsed, then the rest of the text: a stream."""

    def __init__(self, head: bytes, text: Readable) -> None:
        self._head = memoryview(head)
        self._text = text

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        return self._text.readinto(view) or 0


def _read_into(text: Readable, view: memoryview) -> int:
    """Fill ``view``; fewer bytes only at the end (a stream may return less)."""
    got = 0
    while got < len(view):
        n = text.readinto(view[got:])
        if not n:
            break
        got += n
    return got
