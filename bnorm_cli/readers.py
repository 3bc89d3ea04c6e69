"""Readers: open an input (file or stdin) as a stream of Arrow record batches.

Memory stays bounded by the batch size: Parquet is read with
``pre_buffer=False`` (with pre-buffering pyarrow holds the whole file, Arrow
GH-39808) and CSV by pyarrow's streaming reader in byte blocks. Batches come in
whatever sizes the reader likes; `batching.exact_batches` cuts them to N rows.
"""

from __future__ import annotations

import io
import re
import sys
import weakref
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DataError

CSV_BLOCK_SIZE = 4 << 20
PARQUET_BUFFER_SIZE = 1 << 20


#: Given the schema a reader inferred, the columns to read as numbers (CSV).
Selector = Callable[[pa.Schema], Collection[str]]


@dataclass
class Source:
    """An opened input: its name for messages, schema, row count if known, batches.

    ``inferred`` is the schema before bnorm's own choices (CSV: the types pyarrow
    guessed, before normalized columns were read as float64 and others as text).
    """

    name: str
    schema: pa.Schema
    total_rows: int | None
    pieces: Iterator[pa.RecordBatch]
    inferred: pa.Schema | None = None


def open_source(
    path: str,
    fmt: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "utf-8",
) -> Source:
    """Open ``path`` ("-" for stdin) in format ``fmt``.

    ``numeric`` picks, from the inferred schema, the CSV columns to read as float64;
    every other CSV column is read as text so it passes through unchanged.
    ``encoding`` is the text encoding of CSV input (Parquet text is always UTF-8).
    """
    name = "<stdin>" if path == "-" else path
    if path != "-":
        _check_readable(path)
    return _READERS[fmt](path, name, batch_size, numeric, encoding)


def _check_readable(path: str) -> None:
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory; give a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror}); check its permissions") from None


def _open_parquet(
    path: str, name: str, batch_size: int, numeric: Selector | None = None, encoding: str = ""
) -> Source:
    if path == "-":
        source: object = pa.BufferReader(sys.stdin.buffer.read())
    else:
        source = path
    try:
        pf = pq.ParquetFile(source, pre_buffer=False, buffer_size=PARQUET_BUFFER_SIZE)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{name}: not a readable Parquet file ({_short(e)}); check that the file is"
            " complete, or pass --input-format csv if it is CSV"
        ) from None
    _check_names(pf.schema_arrow, name)
    pieces = pf.iter_batches(batch_size=batch_size)
    return Source(
        name, pf.schema_arrow, pf.metadata.num_rows, _guard(pieces, name, pf.schema_arrow)
    )


class _Recorder(io.RawIOBase):
    """A read-only stream that keeps what it has read, so it can be read again.

    CSV types are inferred by a first reader from the first block(s); a second
    reader, told the column types, then reads the recorded bytes followed by the
    rest of the stream. Works for stdin, which cannot be reopened.
    """

    def __init__(self, raw: BinaryIO) -> None:
        self._raw = raw
        self._recorded: list[bytes] = []
        self._replay: list[bytes] | None = None

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
        data = self._raw.read(len(view))
        if not data:
            return 0
        if self._replay is None:
            self._recorded.append(bytes(data))
        view[: len(data)] = data
        return len(data)

    def rewind(self) -> None:
        """Serve the recorded bytes again, then the rest; stop recording."""
        self._replay = self._recorded
        self._recorded = []


def _open_csv(
    path: str,
    name: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "utf-8",
) -> Source:
    raw: BinaryIO = sys.stdin.buffer if path == "-" else open(path, "rb")  # noqa: SIM115
    stream = _Recorder(raw)
    # Serial reading: errors then carry the row number, and no reader thread is
    # left reading from a stream that is being closed after an error.
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE, use_threads=False, encoding=encoding)
    parse = pacsv.ParseOptions(newlines_in_values=True)
    inferred: pa.Schema | None = None
    try:
        inferred = pacsv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=_convert({})
        ).schema
        _check_names(inferred, name)
        chosen = set(numeric(inferred) if numeric else _numeric_names(inferred))
        types = {f.name: pa.float64() if f.name in chosen else pa.string() for f in inferred}
        stream.rewind()
        reader = pacsv.open_csv(
            stream,
            read_options=read,
            parse_options=parse,
            convert_options=_convert(types),
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError, DataError) as e:
        if raw is not sys.stdin.buffer:
            raw.close()
        if isinstance(e, DataError):
            raise
        raise DataError(f"{name}: {_explain(e, inferred or pa.schema([]))}") from None
    pieces = _guard(iter(reader), name, reader.schema, raw)
    if raw is not sys.stdin.buffer:  # a source dropped unread (an error) still closes its file
        weakref.finalize(pieces, raw.close)
    return Source(name, reader.schema, None, pieces, inferred)


def _convert(types: dict[str, pa.DataType]) -> pacsv.ConvertOptions:
    """Only an empty field is null; text columns keep their text byte for byte.

    In a text column an empty field is null and a quoted ``""`` the empty string,
    so the writer gives back each as it was.
    """
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )


def _numeric_names(schema: pa.Schema) -> list[str]:
    return [f.name for f in schema if pa.types.is_integer(f.type) or pa.types.is_floating(f.type)]


def _guard(
    pieces: Iterator[pa.RecordBatch], name: str, schema: pa.Schema, raw: BinaryIO | None = None
) -> Iterator[pa.RecordBatch]:
    """Turn reader failures in the middle of a file into one-line `DataError`s."""
    try:
        yield from pieces
    except BrokenPipeError:
        raise
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:
        raise DataError(f"{name}: {_explain(e, schema)}") from None
    finally:
        if raw is not None and raw is not sys.stdin.buffer:
            raw.close()


_CSV_CELL = re.compile(
    r"In CSV column #(\d+): Row #(\d+): CSV conversion error to (\w+): invalid value '(.*)'"
)
_CSV_TEXT = re.compile(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to \w+: invalid UT")
_ENCODING_FIX = (
    "pass the file's encoding (e.g. --encoding latin-1), or convert it to UTF-8 first"
    " (e.g. iconv -f latin1 -t utf-8)"
)


def _check_names(schema: pa.Schema, name: str) -> None:
    """Column names must be unique: columns are found (and written back) by name."""
    seen: set[str] = set()
    for column in schema.names:
        if column in seen:
            raise DataError(
                f'{name}: column "{column}" appears more than once in the header;'
                " rename the duplicates so that every column has its own name"
            )
        seen.add(column)


def _explain(e: BaseException, schema: pa.Schema) -> str:
    """pyarrow's message, with the column named and the fix said."""
    text = _short(e)
    m = _CSV_CELL.search(text)
    if m and int(m.group(1)) < len(schema):
        column = schema.field(int(m.group(1))).name
        return (
            f'column "{column}", line {m.group(2)}: {m.group(4)!r} is not a number; fix the'
            f" value, or leave the column out with -x {column}"
        )
    if "Empty CSV file" in text:
        return "the file is empty; a CSV input needs at least a header line"
    m = _CSV_TEXT.search(text)
    if m and int(m.group(1)) < len(schema):
        column = schema.field(int(m.group(1))).name
        return f'column "{column}", line {m.group(2)}: text that is not UTF-8; {_ENCODING_FIX}'
    if isinstance(e, UnicodeDecodeError) or "invalid UTF8" in text or "UTF-8" in text:
        return f"{text}; the text is not in the expected encoding: {_ENCODING_FIX}"
    return f"{text}; check the file (truncated or not in the expected format?)"


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())


_READERS: dict[str, Callable[[str, str, int, Selector | None, str], Source]] = {
    "csv": _open_csv,
    "parquet": _open_parquet,
}
