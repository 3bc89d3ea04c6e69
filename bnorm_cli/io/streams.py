"""Byte streams behind the text readers (CSV, TSV, NDJSON).

`Recorder` lets types be inferred from the first block and the same bytes be
read again by a second reader told the column types (stdin cannot be reopened);
`RowEnds` cuts what a pipe has delivered at a row end, so rows flow out as input
arrives instead of waiting for a full block.
"""

from __future__ import annotations

import io
import os
import select
import stat
from typing import Any, BinaryIO


class Recorder(io.RawIOBase):
    """A read-only stream that keeps what it has read, so it can be read again.

    CSV and NDJSON types are inferred by a first reader from the first block; a
    second reader, told the column types, then reads the recorded bytes followed by
    the rest of the stream. Works for stdin, which cannot be reopened.

    With ``rows`` (how to find the end of a row), the first reader is given the
    first block up to its last complete row and then an end of input: it needs no
    more to infer the types, and so neither waits for more input on a pipe nor
    reads ahead blocks that would have to be kept.
    """

    def __init__(
        self, raw: BinaryIO, rows: RowEnds | None = None, short_reads: bool = False
    ) -> None:
        self._raw = raw
        self._recorded: list[bytes] = []
        self._replay: list[bytes] | None = None
        self._rows = rows
        # On a pipe, after the first block, pass on what has arrived (cut at a row end,
        # or as it is if the reader takes short reads) instead of waiting for a full
        # block: rows then flow out as they come in.
        self._live = is_pipe(raw) and (rows is not None or short_reads)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._replay:
            chunk = self._replay[0]
            n = min(len(chunk), len(view))
            view[:n] = chunk[:n]
            if n < len(chunk):
                self._replay[0] = chunk[n:]
            else:
                self._replay.pop(0)
            return n
        if self._replay is None and self._recorded and self._rows is not None:
            return 0  # the first reader has had its block
        if self._live and self._replay is not None:
            if self._rows is not None:
                return self._rows.read_into(view, self._raw)
            return int(self._raw.readinto1(view))  # type: ignore[attr-defined]
        data = self._raw.read(len(view))
        if not data:
            return 0
        n = len(data)
        if self._replay is None:
            self._recorded.append(bytes(data))
            if self._rows is not None and n == len(view):  # not the end of the input
                n = self._rows.cut(data, n) or n
        view[:n] = data[:n]
        return n

    @property
    def recorded(self) -> bytes:
        """What has been read so far (before `rewind`)."""
        return b"".join(self._recorded)

    def rewind(self) -> None:
        """Serve the recorded bytes again, then the rest; stop recording."""
        if self._rows is not None:
            for chunk in self._recorded:
                self._rows.seen(chunk, len(chunk))
        self._replay = self._recorded
        self._recorded = []


def is_pipe(raw: object) -> bool:
    """A pipe, socket or terminal: data arrives over time (a file has it all)."""
    try:
        mode = os.fstat(raw.fileno()).st_mode  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError):
        return False
    return hasattr(raw, "readinto1") and (
        stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)
    )


def arrived(raw: Any) -> bool:
    """Whether more bytes can be read from a pipe without waiting."""
    return bool(select.select([raw], [], [], 0)[0])


class RowEnds:
    """Where rows end in a byte stream: to cut blocks there.

    pyarrow's CSV and JSON readers fail on a row that straddles more than one block
    boundary ("straddling object") and on a partial row before the end of input,
    so a short block must end where a row ends: at a newline outside quotes
    (``quotes=True``: CSV, where a quoted field may hold newlines; the parity of the
    ``"`` counts tells inside from outside) or at any newline (NDJSON).
    """

    def __init__(self, quotes: bool) -> None:
        self._quotes = quotes
        self._odd = False  # inside a quoted field at the end of what was passed on
        self._buf = bytearray()
        self._have = 0  # bytes read into _buf and not yet passed on

    def seen(self, data: bytes | bytearray, end: int) -> None:
        """``data[:end]`` was passed on to the reader (it starts where the last ended)."""
        if self._quotes:
            self._odd ^= data.count(b'"', 0, end) % 2 == 1

    def read_into(self, view: memoryview, raw: Any) -> int:
        """Read from a pipe what has arrived, up to the last complete row.

        Waits only while no complete row has arrived; what follows the cut is held
        for the next read.
        """
        size = len(view)
        if len(self._buf) < size:
            self._buf.extend(bytes(size - len(self._buf)))
        buf, have = self._buf, self._have
        space = memoryview(buf)
        end = self.cut(buf, have) if have else 0
        ended = False
        while not end:
            if have >= size:  # no row end in a whole block: pass it on as is
                end = size
                break
            n = raw.readinto1(space[have:size])  # waits only while nothing has arrived
            if not n:  # end of input: the rest, whatever it is
                end, ended = have, True
                break
            have += n
            while have < size and arrived(raw):  # larger blocks parse faster
                n = raw.readinto1(space[have:size])
                if not n:
                    break
                have += n
            end = self.cut(buf, min(have, size))
        if not ended and not arrived(raw):
            # pyarrow parses a block once it has the next one (or the end): with nothing
            # more to read now, the last row goes on its own, and only it waits.
            end = self.cut(buf, end - 1) or end
        view[:end] = space[:end]
        self.seen(buf, end)
        self._have = have - end
        space[: self._have] = bytes(space[end:have])
        return end

    def cut(self, data: bytes | bytearray, limit: int) -> int:
        """Length of the longest prefix of ``data[:limit]`` that ends with a row, or 0.

        ``data`` starts where the bytes `seen` so far ended.
        """
        pos = data.rfind(b"\n", 0, limit)
        if not self._quotes:
            return pos + 1
        odd_total = data.count(b'"', 0, limit) % 2 == 1
        after = data.count(b'"', pos + 1, limit) if pos >= 0 else 0
        while pos >= 0:
            # outside quotes at pos iff the quotes before it (and before data) are even
            if not (self._odd ^ odd_total ^ (after % 2 == 1)):
                return pos + 1
            prev = data.rfind(b"\n", 0, pos)
            after += data.count(b'"', prev + 1, pos)
            pos = prev
        return 0
