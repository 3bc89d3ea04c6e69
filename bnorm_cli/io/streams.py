"""Byte streams behind the text readers (CSV, TSV, NDJSON).

`Recorder` lets types be inferred from the first block and the same bytes be
read again by a second reader told the column types (stdin cannot be reopened);
`RowEnds` cuts what a pipe has delivered at a row end, so rows flow out as input
arrives instead of waiting for a full block.
"""

from __future__ import annotations

import io
import os
import re
import select
import stat
import sys
from typing import Any, BinaryIO

from ..core.errors import DataError, OutputError


def stdin() -> BinaryIO:
    """The binary stdin, or a one-line error when it is closed (``<&-``)."""
    if sys.stdin is None:
        raise DataError("stdin is closed (<&-); pipe the data in, or give an input file")
    return sys.stdin.buffer


def stdout() -> BinaryIO:
    """The binary stdout, or a one-line error when it is closed (``>&-``)."""
    if sys.stdout is None:
        raise OutputError("stdout is closed (>&-); redirect it to a file or a pipe")
    return sys.stdout.buffer


def stdout_error(e: OSError) -> OutputError:
    """A failed write to stdout (``> /dev/full``), as one line naming stdout."""
    reason = e.strerror or " ".join(str(e).split())
    return OutputError(f"stdout: cannot write ({reason}); redirect it elsewhere, or give -o PATH")


def is_broken_pipe(e: OSError) -> bool:
    """The reader of stdout went away (``| head``); pyarrow says so only in words."""
    return isinstance(e, BrokenPipeError) or "Broken pipe" in str(e)


def write_stdout(text: str) -> None:
    """Write text to stdout and flush it, so a full disk is reported here."""
    out = stdout()
    try:
        out.write(text.encode("utf-8"))
        out.flush()
    except OSError as e:
        if is_broken_pipe(e):
            raise
        raise stdout_error(e) from None


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
    so a short block must end where a row ends: at any newline for NDJSON; for CSV
    (``quotes=True``) at a line end outside quotes, decided as pyarrow's parser
    decides it (`_CsvRows`): a ``"`` opens a quoted field only at the start of a
    field; anywhere else it is a plain character.
    """

    def __init__(self, quotes: bool, delimiter: str = ",") -> None:
        self._rows = _CsvRows.of(delimiter) if quotes else None
        self._state = b""  # the state at the end of what was passed on, as bytes (_CsvRows)
        self._buf = bytearray()
        self._have = 0  # bytes read into _buf and not yet passed on

    def seen(self, data: bytes | bytearray, end: int) -> None:
        """``data[:end]`` was passed on to the reader (it starts where the last ended)."""
        if self._rows is not None:
            self._state = self._rows.state_after(self._state, data, end)

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
        if self._rows is None:
            return data.rfind(b"\n", 0, limit) + 1
        return self._rows.cut(self._state, data, limit)


class _CsvRows:
    """CSV row ends as pyarrow's parser finds them (``newlines_in_values=True``,
    ``double_quote=True``, no escape character).

    A field that starts with ``"`` is quoted up to the next lone ``"`` (``""`` is a
    quote inside it; newlines and delimiters are text there), and what follows that
    ``"`` up to the delimiter is plain text; a ``"`` anywhere else is a plain
    character. Rows end at ``\n``, ``\r\n`` or ``\r``. A regular expression matches
    whole rows, so a piece is scanned at C speed; without a ``"`` the last ``\n``
    ends a row. The state in the middle of a row is kept as the bytes that would
    lead to it from a row start: ``b""`` (a row start), ``b"x,"`` (a field start),
    ``b"x"`` (plain text), ``b'"'`` (in quotes), ``b'""'`` (in quotes, just after a
    ``"`` that may close them or be the first of ``""``).
    """

    _made: dict[str, _CsvRows] = {}  # noqa: RUF012 (a cache, one per delimiter)

    def __init__(self, delimiter: str) -> None:
        d = re.escape(delimiter.encode())
        text = rb"[^" + d + rb"\r\n]*+"  # plain text up to the end of the field
        field = rb'(?:"(?:[^"]|"")*+"' + text + rb'|[^"' + d + rb"\r\n]" + text + rb")?+"
        row = field + rb"(?:" + d + field + rb")*+(?:\r?\n|\r(?=[^\n]))"
        self._delimiter = delimiter.encode()
        self._rows = re.compile(rb"(?:" + row + rb")*+")
        self._fields = re.compile(rb"(?:" + field + d + rb")*+")
        self._quoted = re.compile(rb'"(?:[^"]|"")*+')
        self._text = re.compile(text)

    @classmethod
    def of(cls, delimiter: str) -> _CsvRows:
        if delimiter not in cls._made:
            cls._made[delimiter] = cls(delimiter)
        return cls._made[delimiter]

    def cut(self, state: bytes, data: bytes | bytearray, limit: int) -> int:
        """Length of the longest prefix of ``data[:limit]`` that ends with a row, or 0."""
        if not state:
            if data.find(b'"', 0, limit) < 0:
                return data.rfind(b"\n", 0, limit) + 1
            match = self._rows.match(data, 0, limit)
            assert match is not None  # zero rows always match
            return match.end()
        text = state + bytes(data[:limit])
        match = self._rows.match(text)
        assert match is not None
        return max(match.end() - len(state), 0)

    def state_after(self, state: bytes, data: bytes | bytearray, end: int) -> bytes:
        """The state after ``data[:end]``, read from ``state``."""
        if not state and data.find(b'"', 0, end) < 0:
            last = data.rfind(b"\n", 0, end) + 1
            text: bytes | bytearray = data
        else:
            text = state + bytes(data[:end]) if state else data
            end += len(state)
            match = self._rows.match(text, 0, end)
            assert match is not None
            last = match.end()
        return self._partial_row(text, last, end)

    def _partial_row(self, text: bytes | bytearray, start: int, end: int) -> bytes:
        """The state after ``text[start:end]``, a row not ended yet."""
        fields = self._fields.match(text, start, end)
        assert fields is not None
        pos = fields.end()
        if pos == end:
            return b"x" + self._delimiter if pos > start else b""
        if text[pos : pos + 1] == b'"':
            quoted = self._quoted.match(text, pos, end)
            assert quoted is not None
            pos = quoted.end()
            if pos == end:
                return b'"'
            if pos + 1 == end:  # a '"' that closes the field, or the first of '""'
                return b'""'
            pos += 1
        plain = self._text.match(text, pos, end)
        assert plain is not None
        # the text of this field runs to the end; or a lone "\r" ends the row there
        return b"x" if plain.end() == end else b""
