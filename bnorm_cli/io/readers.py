"""Readers: open an input (file or stdin) as a stream of Arrow record batches.

Memory stays bounded by the batch size: Parquet is read with
``pre_buffer=False`` (with pre-buffering pyarrow holds the whole file, Arrow
GH-39808), CSV/TSV and NDJSON (plain or ``.gz``/``.zst``/``.bz2``) in byte blocks
(a CSV file in pieces parsed on several cores, `csv_parallel`; a pipe by pyarrow's
streaming reader), Arrow IPC batch by batch (a file memory-mapped).
Batches come in whatever sizes the reader likes; `batching.exact_batches` cuts
them to N rows.
"""

from __future__ import annotations

import codecs
import functools
import io
import math
import os
import re
import shlex
import shutil
import stat
import tempfile
import weakref
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import BinaryIO, cast

import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from ..core.errors import DataError, UsageError
from ..core.frames import string_array, to_polars
from . import storage
from .csv_parallel import Readable, parallel_csv
from .formats import compression_of
from .storage import is_url
from .streams import Recorder, RowEnds, stdin

CSV_BLOCK_SIZE = 4 << 20  # types are inferred from the first block of text input
CSV_READ_BLOCK_SIZE = 2 << 20  # then CSV is read in blocks of this size
#: Bytes pyarrow reads ahead per Parquet column, 64-256 KiB by the file's width:
#: 1 MiB cost up to 1.4x the decoding CPU on 16-column files (2M rows, 4 writers)
#: and ~1 GiB of buffers beside 1,000 columns, read 2-4x slower there.
PARQUET_BUFFER_BYTES = (64 << 10, 256 << 10)


def parquet_buffer_size(columns: int) -> int:
    """The read-ahead per column for a file of ``columns`` columns (16 MiB in all)."""
    low, high = PARQUET_BUFFER_BYTES
    return max(low, min(high, (16 << 20) // max(columns, 1)))


#: Given the schema a reader inferred, the columns to read as numbers (CSV).
Selector = Callable[[pa.Schema], Collection[str]]

#: Fields that mean "missing" in a CSV/TSV number column: pandas' default
#: ``na_values`` without its NaN spellings (``NaN``, ``nan``, ``-nan``: read as the
#: float NaN), plus ``-``. An empty field is always missing. Text columns keep them
#: as text.
DEFAULT_NULL_VALUES = (
    "NA", "N/A", "n/a", "NULL", "null", "None", "#N/A", "#N/A N/A", "#NA", "<NA>",
    "-1.#IND", "1.#IND", "-1.#QNAN", "1.#QNAN", "-",
)  # fmt: skip


@dataclass(frozen=True)
class TextOptions:
    """How CSV/TSV text is read: field separator, missing-value tokens, decimal mark.

    ``delimiter`` None is the format's own (``,`` for CSV, a tab for TSV).
    """

    delimiter: str | None = None
    null_values: tuple[str, ...] = DEFAULT_NULL_VALUES
    decimal_comma: bool = False


@dataclass
class Source:
    """An opened input: its name for messages, schema, row count if known, batches.

    ``inferred`` is the schema before bnorm's own choices (CSV: the types pyarrow
    guessed, before normalized columns were read as float64 and others as text).
    ``suspects``: text columns of the first block that hold numbers but for a few
    fields, each with the line and value of its first non-number (CSV).
    ``warnings``: what the user should hear about how the input was read.
    ``finite``: columns whose every value is known finite or missing from the file's
    metadata (Parquet statistics: no +/-inf to refuse, so nothing to look for).
    """

    name: str
    schema: pa.Schema
    total_rows: int | None
    pieces: Iterator[pa.RecordBatch]
    inferred: pa.Schema | None = None
    suspects: dict[str, tuple[int, str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    finite: frozenset[str] = frozenset()
    #: the same rows as ``pieces``, as a polars query: a local Parquet file whose row
    #: groups are small (`scan_parquet`); None for anything else
    scan: Callable[[], pl.LazyFrame] | None = None


def open_source(
    path: str,
    fmt: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "utf-8",
    project: bool = False,
    text: TextOptions | None = None,
) -> Source:
    """Open ``path`` ("-" for stdin) in format ``fmt``.

    ``numeric`` picks, from the inferred schema, the CSV columns to read as float64;
    every other CSV column is read as text so it passes through unchanged.
    ``encoding`` is the text encoding of CSV input (Parquet text is always UTF-8).
    ``project``: the batches need hold only the ``numeric`` columns (fit), so a
    reader may skip decoding the others; ``Source.schema`` still lists them all.
    ``text``: how CSV/TSV fields are read (other formats are typed already).
    """
    name = "<stdin>" if path == "-" else path
    if is_url(path) and fmt not in ("parquet", "ipc"):
        raise DataError(
            f"{path}: URLs are read as Parquet or Arrow IPC files (they need seeking), not"
            f" {fmt}; copy the file locally first"
        )
    if path != "-" and not is_url(path):
        _check_readable(path)
    if fmt in ("csv", "tsv"):
        text = text or TextOptions()
        if text.delimiter is None:
            text = replace(text, delimiter="\t" if fmt == "tsv" else ",")
        if text.decimal_comma and text.delimiter == ",":
            raise UsageError(
                "--decimal-comma: the fields are separated by commas too; give the file's"
                " separator, e.g. --delimiter ';'"
            )
        return _open_csv(path, name, numeric, encoding, project, text)
    return _READERS[fmt](path, name, batch_size, numeric, encoding, project)


def _check_readable(path: str) -> None:
    """Fail early on a missing or unreadable input, without opening it: a FIFO or a
    device is opened once only (opening and closing a FIFO would lose its writer)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; check the path") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror}); check its permissions") from None
    if stat.S_ISDIR(mode):
        raise DataError(f"{path}: is a directory; give a file")
    if not os.access(path, os.R_OK):
        raise DataError(f"{path}: cannot open (Permission denied); check its permissions")


def _open_parquet(
    path: str,
    name: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "",
    project: bool = False,
) -> Source:
    # Parquet needs to seek: stdin, a FIFO or a device is copied to a temporary file
    spool = None if _regular_file(path) or is_url(path) else _spool(path)
    try:
        where = spool or (storage.open_binary(path) if is_url(path) else path)
        pf = pq.ParquetFile(where, pre_buffer=False)
        _check_names(pf.schema_arrow, name)
        columns = list(numeric(pf.schema_arrow)) if project and numeric else None
        # iter_batches reads with the buffer size the file was opened with
        width = len(columns) if columns is not None else pf.metadata.num_columns
        pf = pq.ParquetFile(
            where, pre_buffer=False, buffer_size=parquet_buffer_size(width), metadata=pf.metadata
        )
    except (pa.ArrowException, OSError, UnicodeDecodeError) as e:  # corrupt: names not UTF-8
        if spool is not None:
            spool.close()
        raise DataError(
            f"{name}: not a readable Parquet file ({_short(e)}); check that the file is"
            " complete, or pass --input-format csv if it is CSV"
        ) from None
    # one decoding thread: ~25% less CPU and ~30 MiB less memory than pyarrow's pool
    # on the benchmark's file; the reader runs beside the statistics or the writer
    batches = pf.iter_batches(batch_size=batch_size, columns=columns, use_threads=False)
    pieces = _guard(batches, name, pf.schema_arrow, spool)
    if spool is not None:  # closed when read to the end, or when dropped unread
        weakref.finalize(pieces, spool.close)
    source = Source(name, pf.schema_arrow, pf.metadata.num_rows, pieces)
    source.finite = _finite_columns(pf.metadata)
    if spool is None and not is_url(path) and _small_row_groups(pf.metadata):
        source.scan = functools.partial(scan_parquet, path)
    return source


#: Uncompressed bytes of a row group up to which polars may read a file itself
#: (`Source.scan`): one row group at a time (`SCAN_ENV`), ~320 MiB peak on
#: DuckDB's and polars' files (120k-row groups); polars peaked at ~700 MiB on
#: 1M-row groups, where pyarrow's reader, which reads pages, stays lower.
SCAN_ROW_GROUP_BYTES = 48 << 20
#: polars' setting for those scans: prefetch one row group (its default: ~100 MiB more)
SCAN_ENV = {"POLARS_ROW_GROUP_PREFETCH_SIZE": "1"}


def _small_row_groups(meta: pq.FileMetaData) -> bool:
    sizes = [meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)]
    return max(sizes, default=0) <= SCAN_ROW_GROUP_BYTES


def scan_parquet(path: str) -> pl.LazyFrame:
    """``path`` as polars' lazy scan, every column as it is stored."""
    return pl.scan_parquet(path, glob=False, hive_partitioning=False)


def _finite_columns(meta: pq.FileMetaData) -> frozenset[str]:
    """Top-level float columns whose statistics, in every row group, bound their
    values by finite numbers (a writer that left statistics out, or put NaN or an
    infinity in them, leaves the column unknown). Integer columns are finite."""
    schema = meta.schema.to_arrow_schema()
    known = {f.name for f in schema if pa.types.is_integer(f.type)}
    floats = {f.name for f in schema if pa.types.is_floating(f.type)}
    leaves = {meta.schema.column(i).path: i for i in range(meta.num_columns)}
    for name in floats:
        i = leaves.get(name)
        if i is None:
            continue
        try:
            stats = [meta.row_group(g).column(i).statistics for g in range(meta.num_row_groups)]
            if all(_bounded(s) for s in stats):
                known.add(name)
        except (pa.ArrowException, ValueError, OverflowError):  # odd statistics: unknown
            continue
    return frozenset(known)


def _bounded(stats: pq.Statistics | None) -> bool:
    if stats is None:
        return False
    if stats.has_min_max:
        lo, hi = stats.min, stats.max
        return (
            isinstance(lo, float)
            and isinstance(hi, float)
            and math.isfinite(lo)
            and math.isfinite(hi)
        )
    return stats.num_values == 0  # no bounds: every value is null


def _open_csv(
    path: str,
    name: str,
    numeric: Selector | None,
    encoding: str,
    project: bool,
    text: TextOptions,
) -> Source:
    raw = _open_binary(path)
    # Decoded to UTF-8 before the recorder, which cuts blocks at UTF-8 newlines.
    sep = text.delimiter or ","
    stream = Recorder(_to_utf8(raw, encoding), RowEnds(quotes=True, delimiter=sep))
    # Serial pyarrow reading (use_threads=False): errors then carry the row number,
    # and no reader thread is left reading from a stream closed after an error.
    read = pacsv.ReadOptions(block_size=CSV_BLOCK_SIZE, use_threads=False)
    parse = pacsv.ParseOptions(newlines_in_values=True, delimiter=sep)
    decimal = "," if text.decimal_comma else "."
    nulls = ("", *text.null_values)
    inferred: pa.Schema | None = None
    suspects: dict[str, tuple[int, str]] = {}
    commas: list[str] = []
    try:
        guess = pacsv.open_csv(
            stream, read_options=read, parse_options=parse, convert_options=_numbers(nulls, decimal)
        )
        inferred = guess.schema
        _check_names(inferred, name)
        chosen = set(numeric(inferred) if numeric else _numeric_names(inferred))
        suspects, commas = _suspects(guess, chosen, decimal)
        # Number columns are parsed by pyarrow with the null tokens when no text column
        # is written out (fit; or all columns numbers); else pyarrow would turn an "NA"
        # of a text column into a null too. Then a file's piece that holds a token is
        # parsed again with them as text, and `_to_numbers` makes them numbers
        # (slower: 1.5x on a clean file, hence not for every piece); from a pipe,
        # every block is.
        direct = project or not text.null_values or len(chosen) == len(inferred)
        types = {f.name: pa.float64() if f.name in chosen else pa.string() for f in inferred}
        as_text = dict.fromkeys(inferred.names, pa.string())
        schema = pa.schema(
            [pa.field(n, pa.float64() if n in chosen else pa.string()) for n in inferred.names]
        )
        # Smaller blocks after the first: 2 MiB holds peak memory ~80 MiB lower than
        # 4 MiB on the 5M-row benchmark at the same speed (a row may be up to 2 MiB).
        block = min(CSV_BLOCK_SIZE, CSV_READ_BLOCK_SIZE)
        # no projection for CSV (``project`` is ignored): every field is still
        # tokenized, and converting the text columns checks they are valid UTF-8
        convert = _numbers(nulls, decimal, types) if direct else _convert(types, decimal)
        retry = None if direct else _convert(as_text)
        if _regular_file(path) and b"\n" in stream.recorded:
            # A file is read again from the start, natively (no Python, nor GIL, per
            # block), and parsed on several cores. ("\r"-only line ends: below.)
            raw.close()
            raw = _open_binary(path, native=True)
            utf8 = _to_utf8(raw, encoding)
            batches = parallel_csv(
                cast(Readable, utf8), inferred.names, parse, convert, block, retry=retry
            )
        else:  # a pipe: what was read is served again by the recorder, then the rest
            stream.rewind()
            reader = pacsv.open_csv(
                stream,
                read_options=pacsv.ReadOptions(block_size=block, use_threads=False),
                parse_options=parse,
                convert_options=convert if direct else retry,
            )
            batches = iter(reader)
        if not direct:
            columns = [c for c in inferred.names if c in chosen]
            batches = _to_numbers(batches, name, schema, columns, nulls, decimal)
    except (pa.ArrowException, OSError, UnicodeError, DataError) as e:
        if path != "-":
            raw.close()
        if isinstance(e, DataError):
            raise
        _check_text(stream.recorded, name, "CSV")
        hint = _delimiter_hint(stream.recorded, sep)
        raise DataError(f"{name}: {_explain(e, inferred or pa.schema([]))}{hint}") from None
    except BaseException:  # a usage error from the column selector, Ctrl-C: still closed
        if path != "-":
            raw.close()
        raise
    _check_text(stream.recorded, name, "CSV")
    pieces = _guard(batches, name, schema, None if path == "-" else raw)
    if path != "-":  # a source dropped unread (an error) still closes its file
        weakref.finalize(pieces, raw.close)
    warnings = [
        f'{name}: column "{c}" holds numbers written with a decimal comma, left as text;'
        " pass --decimal-comma to normalize it"
        for c in commas
    ]
    return Source(name, schema, None, pieces, inferred, suspects, warnings)


def _numbers(
    nulls: Sequence[str], decimal: str, types: dict[str, pa.DataType] | None = None
) -> pacsv.ConvertOptions:
    """Number columns parsed by pyarrow: ``nulls`` (quoted or not) are missing."""
    return pacsv.ConvertOptions(
        column_types=types or {},
        null_values=list(nulls),
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
        decimal_point=decimal,
    )


def _to_numbers(
    batches: Iterator[pa.RecordBatch],
    name: str,
    schema: pa.Schema,
    columns: list[str],
    nulls: Sequence[str],
    decimal: str,
) -> Iterator[pa.RecordBatch]:
    """Number columns read as text made float64, as `_numbers` has pyarrow do it
    (a batch may hold them as numbers already)."""
    missing = string_array(nulls)
    rows = 0
    for batch in batches:
        arrays = list(batch.columns)
        for c in columns:
            i = batch.schema.get_field_index(c)
            if not pa.types.is_string(arrays[i].type):
                continue
            try:
                arrays[i] = _text_to_float(arrays[i], missing, decimal, c, rows)
            except DataError as e:
                raise DataError(f"{name}: {e.raw}") from None
        yield pa.RecordBatch.from_arrays(arrays, schema=schema)
        rows += batch.num_rows


def _text_to_float(
    values: pa.Array, missing: pa.Array, decimal: str, column: str, rows: int
) -> pa.Array:
    import pyarrow.compute as pc  # ~50 ms (it loads pydoc); only text columns need it

    values = pc.utf8_trim(values, " \t")  # pyarrow's CSV number parser skips these too
    null = pa.nulls(1, pa.string())[0]  # not pa.scalar(None): that imports pandas (~0.2 s)
    values = pc.if_else(pc.is_in(values, missing), null, values)
    if decimal != ".":
        values = pc.replace_substring(values, decimal, ".")
    try:
        return pc.cast(values, pa.float64())
    except pa.ArrowInvalid:
        for i, v in enumerate(values.to_pylist()):
            try:
                pa.scalar(v, pa.string()).cast(pa.float64())
            except pa.ArrowInvalid:
                raise DataError(_not_a_number(column, rows + i + 2, v)) from None
        raise


def _not_a_number(column: str, line: int | str, value: str) -> str:
    return (
        f'column "{column}", line {line}: {value!r} is not a number; fix the value, pass'
        f" --null-values {shell_word(value)} if it means missing, or leave the column out"
        f" with -x {shell_word(column)}"
    )


def shell_word(word: str) -> str:
    """``word`` as a shell argument in a message: quoted when it must be."""
    return word if re.fullmatch(r"[\w.,:/@%+=-]+", word) else shlex.quote(word)


# matched by polars (pyarrow.compute costs ~50 ms to import); classes written out in
# ASCII as RE2's \s and \d are, where polars' (Rust) regex would take Unicode ones
_SPACE = r"[\t\n\f\r ]"
_NUMBER = rf"^{_SPACE}*[-+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][-+]?[0-9]+)?{_SPACE}*$"
_COMMA_NUMBER = rf"^{_SPACE}*[-+]?[0-9]*,[0-9]+{_SPACE}*$"


def _suspects(
    guess: pacsv.CSVStreamingReader, chosen: set[str], decimal: str
) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """Text columns of the first block whose fields are numbers but for a few (<10%),
    and those that hold numbers written with a decimal comma (read with ".")."""
    try:
        first = guess.read_next_batch()
    except StopIteration:
        return {}, []
    pattern = _NUMBER.replace("\\.", "[.,]") if decimal != "." else _NUMBER
    out: dict[str, tuple[int, str]] = {}
    commas: list[str] = []
    frame = to_polars(first)  # not pl.Series(array): that imports pyarrow.compute
    for f in first.schema:
        if f.name in chosen or not pa.types.is_string(f.type):
            continue
        text = frame[f.name]
        valid = len(text) - text.null_count()
        if decimal == "." and valid and text.str.contains(_COMMA_NUMBER).sum() >= 0.9 * valid:
            commas.append(f.name)
            continue
        is_number = text.str.contains(pattern)  # null where the field is missing
        numbers = int(is_number.sum())
        others = valid - numbers
        if others > 0 and numbers >= 9 * others:
            i = int(is_number.not_().arg_true()[0])
            out[f.name] = (i + 2, str(text[i]))
    return out, commas


def _delimiter_hint(recorded: bytes, sep: str) -> str:
    """A hint to pass --delimiter when the header line suggests another separator."""
    header = recorded.split(b"\n", 1)[0].decode("utf-8", "replace")
    for other, shown in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
        if other != sep and other in header and header.count(other) > header.count(sep):
            return f" (the header holds {shown}: pass --delimiter {shown})"
    return ""


def _spool(path: str) -> BinaryIO:
    """stdin or ``path`` (read once) copied to an anonymous temporary file (not memory)."""
    spool = tempfile.TemporaryFile()  # noqa: SIM115 (the reader owns it)
    if path == "-":
        shutil.copyfileobj(stdin(), spool, 1 << 20)
    else:
        with open(path, "rb") as f:
            shutil.copyfileobj(f, spool, 1 << 20)
    spool.seek(0)
    return spool


def _open_binary(path: str, native: bool = False) -> BinaryIO:
    """stdin, a file, or a decompressing stream over a compressed one.

    Compression comes from a ``.gz``/``.zst``/``.bz2`` suffix, or else from the
    first bytes (a gzip stream on stdin, a ``.csv`` that is gzipped).
    ``native``: a pyarrow stream even for a plain file (a regular file only: on a
    pipe `is_pipe` needs the Python file).
    """
    codec = None if path == "-" else compression_of(path)
    if codec is not None:
        return pa.input_stream(path, compression=codec, buffer_size=CSV_BLOCK_SIZE)
    if native:
        with open(path, "rb") as f:
            codec = _magic_codec(f.read(8))
        native_file = pa.input_stream(path)
        if codec is None:
            return native_file  # type: ignore[return-value]
        return pa.CompressedInputStream(native_file, codec)  # type: ignore[return-value]
    raw: BinaryIO = stdin() if path == "-" else open(path, "rb")  # noqa: SIM115
    codec = _magic_codec(raw.peek(8)[:8]) if isinstance(raw, io.BufferedReader) else None
    if codec is None:
        return raw
    return pa.CompressedInputStream(pa.PythonFile(raw, mode="r"), codec)  # type: ignore[return-value]


_CODEC_MAGIC = {b"\x1f\x8b": "gzip", b"\x28\xb5\x2f\xfd": "zstd", b"BZh": "bz2"}
#: The first bytes of binary formats, and what to do with such a file.
_BINARY_MAGIC = {
    b"PAR1": "a Parquet file; pass --input-format parquet",
    b"ARROW1": "an Arrow IPC file; pass --input-format ipc",
    b"\xff\xff\xff\xff": "an Arrow IPC stream; pass --input-format ipc",
    b"PK\x03\x04": "a zip archive (or .xlsx); extract or export it as CSV first",
    b"\xfd7zXZ": "an xz stream; decompress it first (xz -dc)",
}


def _magic_codec(head: bytes) -> str | None:
    """The compression whose magic number starts ``head`` (gzip, zstd, bz2), if any."""
    return next((c for m, c in _CODEC_MAGIC.items() if head.startswith(m)), None)


def _check_text(head: bytes, name: str, what: str) -> None:
    """Refuse a binary input read as text, in one line instead of its bytes."""
    found = next((v for m, v in _BINARY_MAGIC.items() if head.startswith(m)), None)
    if found is None and b"\x00" in head[:4096]:
        found = "binary data (it holds NUL bytes); check the file, or pass --input-format"
    if found is not None:
        raise DataError(f"{name}: not {what} text but {found}")


def _regular_file(path: str) -> bool:
    """A path to a regular file (not stdin, nor a named pipe such as ``<(cmd)``)."""
    try:
        return path != "-" and stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _to_utf8(raw: BinaryIO, encoding: str) -> BinaryIO:
    """``raw`` decoded from ``encoding`` and encoded as UTF-8, as a stream.

    The same transcoder pyarrow puts behind ``ReadOptions(encoding=...)``.
    """
    if codecs.lookup(encoding).name == "utf-8":
        return raw
    native = raw if isinstance(raw, pa.NativeFile) else pa.PythonFile(raw, mode="r")
    return pa.transcoding_input_stream(native, encoding, "utf-8")


def _convert(types: dict[str, pa.DataType], decimal: str = ".") -> pacsv.ConvertOptions:
    """Only an empty field is null; text columns keep their text byte for byte.

    In a text column an empty field is null and a quoted ``""`` the empty string,
    so the writer gives back each as it was.
    """
    return pacsv.ConvertOptions(
        column_types=types,
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
        decimal_point=decimal,
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
        if raw is not None:
            raw.close()


_CSV_CELL = re.compile(
    r"In CSV column #(\d+): Row #(\d+): CSV conversion error to (\w+): invalid value '(.*)'"
)
_CSV_RAGGED = re.compile(r"CSV parse error: Row #(\d+): Expected (\d+) columns, got (\d+): (.*)")
_CSV_TEXT = re.compile(r"In CSV column #(\d+): Row #(\d+): CSV conversion error to \w+: invalid UT")
ENCODING_FIX = (
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
        return _not_a_number(schema.field(int(m.group(1))).name, m.group(2), m.group(4))
    if "Empty CSV file" in text:
        return "the file is empty; a CSV input needs at least a header line"
    m = _CSV_RAGGED.search(text)
    if m:
        row = m.group(4) if len(m.group(4)) <= 60 else m.group(4)[:57] + "..."
        return (
            f"line {m.group(1)}: {m.group(3)} field{'' if m.group(3) == '1' else 's'}"
            f" where the header has {m.group(2)}"
            f" ({row!r}); fix that line (quote a field that holds a comma), or check that"
            " the file is complete"
        )
    m = _CSV_TEXT.search(text)
    if m and int(m.group(1)) < len(schema):
        column = schema.field(int(m.group(1))).name
        return f'column "{column}", line {m.group(2)}: text that is not UTF-8; {ENCODING_FIX}'
    if isinstance(e, UnicodeError) or "invalid UTF8" in text or "UTF-8" in text:
        return f"{text}; the text is not in the expected encoding: {ENCODING_FIX}"
    return f"{text}; check the file (truncated or not in the expected format?)"


def _short(e: BaseException) -> str:
    return " ".join(str(e).split())


def unreadable_parquet(name: str, e: BaseException) -> DataError:
    """A Parquet file that fails part-way through (its footer read): polars' scan
    (`Source.scan`) says so in its first line, the lines after are hints."""
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    return DataError(
        f"{name}: not a readable Parquet file ({first}); check that the file is complete"
    )


def _open_ipc(
    path: str,
    name: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "",
    project: bool = False,
) -> Source:
    """Arrow IPC: the file format batch by batch, or a stream.

    A file is read through ordinary reads, not memory-mapped: a file truncated while
    it is read is then an error, not a crash (SIGBUS). stdin, a FIFO and a device are
    opened once; they and ``.arrows`` files usually hold the stream format; a
    file-format input there is read whole first (its footer needs seeking).
    """
    reader: pa.ipc.RecordBatchFileReader | pa.ipc.RecordBatchStreamReader
    try:
        if not _regular_file(path) and not is_url(path):
            raw = stdin() if path == "-" else open(path, "rb")  # noqa: SIM115
            stream = Recorder(raw, short_reads=True)
            head = stream.read(len(_IPC_MAGIC)) or b""
            stream.rewind()
            buffered = io.BufferedReader(stream, buffer_size=1 << 16)
            if head == _IPC_MAGIC:
                reader = pa.ipc.open_file(pa.BufferReader(buffered.read()))
            else:
                reader = pa.ipc.open_stream(buffered)
        elif is_url(path):
            reader = pa.ipc.open_file(storage.open_binary(path))
        else:
            f = pa.OSFile(path)
            is_file = f.read(len(_IPC_MAGIC)) == _IPC_MAGIC
            f.seek(0)
            reader = pa.ipc.open_file(f) if is_file else pa.ipc.open_stream(f)
    except (pa.ArrowException, OSError) as e:
        raise DataError(
            f"{name}: not a readable Arrow IPC file or stream ({_short(e)}); check that it is"
            " complete (Feather v1 files are not read: rewrite them with pyarrow.feather)"
        ) from None
    _check_names(reader.schema, name)
    if isinstance(reader, pa.ipc.RecordBatchFileReader):
        file_reader = reader
        count = file_reader.num_record_batches
        pieces: Iterator[pa.RecordBatch] = (file_reader.get_batch(i) for i in range(count))
        total: int | None = file_reader.count_rows()
    else:
        pieces, total = iter(reader), None
    return Source(name, reader.schema, total, _guard(pieces, name, reader.schema))


_IPC_MAGIC = b"ARROW1"


def _open_ndjson(
    path: str,
    name: str,
    batch_size: int,
    numeric: Selector | None = None,
    encoding: str = "",
    project: bool = False,
) -> Source:
    """Newline-delimited JSON (UTF-8), streamed in blocks like CSV.

    Types come from the first block: normalized columns are then read as float64
    (so a column of ints and floats is numbers throughout); strings that pyarrow
    would take for dates stay text, as does a field that is null throughout the
    first block; every other field keeps the type of its first block.
    """
    raw = _open_binary(path)
    stream = Recorder(raw, RowEnds(quotes=False))
    read = pajson.ReadOptions(block_size=CSV_BLOCK_SIZE, use_threads=False)
    inferred: pa.Schema | None = None
    try:
        inferred = pajson.open_json(stream, read_options=read).schema
        _check_names(inferred, name)
        chosen = set(numeric(inferred) if numeric else _numeric_names(inferred))
        schema = pa.schema(
            [
                pa.field(f.name, pa.float64() if f.name in chosen else _json_type(f.type))
                for f in inferred
            ]
        )
        stream.rewind()
        parse = pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="error")
        reader = pajson.open_json(stream, read_options=read, parse_options=parse)
    except (pa.ArrowException, OSError, DataError) as e:
        if path != "-":
            raw.close()
        if isinstance(e, DataError):
            raise
        _check_text(stream.recorded, name, "NDJSON")
        raise DataError(f"{name}: {_explain_json(e, inferred, set())}") from None
    _check_text(stream.recorded, name, "NDJSON")
    pieces = _guard(
        _json_errors(iter(reader), name, chosen), name, reader.schema, None if path == "-" else raw
    )
    if path != "-":
        weakref.finalize(pieces, raw.close)
    return Source(name, schema, None, pieces, inferred)


def _json_type(t: pa.DataType) -> pa.DataType:
    """A pass-through column's type: text for guessed dates and first-block nulls."""
    if pa.types.is_temporal(t) or pa.types.is_null(t):
        return pa.string()
    return t


def _json_errors(
    pieces: Iterator[pa.RecordBatch], name: str, chosen: set[str]
) -> Iterator[pa.RecordBatch]:
    done = 0  # rows delivered: pyarrow counts an error's row within its block
    try:
        for piece in pieces:
            yield piece
            done += piece.num_rows
    except pa.ArrowInvalid as e:
        raise DataError(f"{name}: {_explain_json(e, None, chosen, done)}") from None


#: Missing numbers written as strings ("NA", "NaN", "") are the usual cause of mixed types.
_NULL_HINT = ' (write a missing number as null, not as a string such as "NA")'
_JSON_TYPE = re.compile(r"Column\(/([^)]*)\) changed from (\w+) to (\w+)(?: in row (\d+))?")


def _explain_json(
    e: BaseException, inferred: pa.Schema | None, chosen: set[str], done: int = 0
) -> str:
    text = _short(e)
    m = _JSON_TYPE.search(text)
    at = f" (line {done + int(m.group(4)) + 1})" if m and m.group(4) else ""
    if m and m.group(1) in chosen:
        column = m.group(1)
        return (
            f'column "{column}": a JSON {m.group(3)} where a number is expected{at}; fix the'
            f" value{_NULL_HINT if m.group(3) == 'string' else ''}, or leave the column out"
            f" with -x {column}"
        )
    if m:
        mixed = {m.group(2), m.group(3)} == {"string", "number"}
        return (
            f'column "{m.group(1)}": a JSON {m.group(3)}{at} where the first rows hold'
            f" {m.group(2)} values; give each field one type throughout the file"
            + (_NULL_HINT if mixed else "")
        )
    if "unexpected field" in text:
        return (
            "a field that the first block of the file does not have; bnorm takes the fields"
            f" of an NDJSON input from its first {CSV_BLOCK_SIZE >> 20} MiB"
        )
    if "Empty JSON stream" in text:
        return "the file is empty; an NDJSON input needs at least one line"
    if "straddl" in text:
        return (
            f"a line longer than {CSV_BLOCK_SIZE >> 20} MiB, or not one JSON object per line;"
            " check that the input is NDJSON"
        )
    return f"{text}; check that the input is NDJSON (one JSON object per line)"


def count_rows(path: str, fmt: str) -> int | None:
    """Rows in a file whose metadata tells (Parquet, Arrow IPC file) without reading it.

    None for stdin, a FIFO or a device: those are opened once only, by the reader.
    """
    if not _regular_file(path):
        return None
    try:
        if fmt == "parquet":
            return int(pq.read_metadata(path).num_rows)
        if fmt == "ipc":
            with pa.OSFile(path) as f:
                if f.read(len(_IPC_MAGIC)) != _IPC_MAGIC:
                    return None
                f.seek(0)
                return int(pa.ipc.open_file(f).count_rows())
    except (pa.ArrowException, OSError):
        return None  # the reader reports the problem when it gets there
    return None


def read_schema(path: str, fmt: str) -> pa.Schema | None:
    """The schema of a typed file (Parquet, Arrow IPC) from its metadata, or None."""
    try:
        if path == "-":
            return None
        if is_url(path):
            if fmt == "parquet":
                return pq.read_schema(storage.open_binary(path))
            return pa.ipc.open_file(storage.open_binary(path)).schema if fmt == "ipc" else None
        if fmt == "parquet":
            return pq.read_schema(path)
        if fmt == "ipc":
            with open(path, "rb") as f:
                is_file = f.read(len(_IPC_MAGIC)) == _IPC_MAGIC
            if is_file:
                return pa.ipc.open_file(pa.memory_map(path)).schema
            with pa.OSFile(path) as stream:
                return pa.ipc.open_stream(stream).schema
    except (pa.ArrowException, OSError):
        return None  # the reader reports the problem when it gets there
    return None


_READERS: dict[str, Callable[[str, str, int, Selector | None, str, bool], Source]] = {
    "parquet": _open_parquet,
    "ipc": _open_ipc,
    "ndjson": _open_ndjson,
}
