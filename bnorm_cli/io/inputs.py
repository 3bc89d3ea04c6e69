"""INPUT arguments -> the files to read, in order, opened as one `Source`.

Each INPUT may be a file, a glob or a directory (``open_inputs`` expands and
opens them, one file at a time, as one dataset).

Several inputs are one dataset, read in this order: each INPUT in the order given;
a glob's matches, and a directory's files, sorted by path. A directory contributes
every file below it whose name says a format bnorm reads (``.csv``, ``.parquet``,
``.csv.gz``, ...), skipping names that start with ``.`` or ``_`` (``_SUCCESS``,
``.crc`` files, ``_temporary/``), as pyarrow and Spark do.

Hive-style partition folders (``year=2024/city=Oslo/part-0.parquet``) under a
directory INPUT become columns appended after the file's own columns, as polars
does for a directory: one text column per key, outermost first, its value
URL-decoded from the folder name (``__HIVE_DEFAULT_PARTITION__`` is null). They are
text, so they pass through and are never normalized by default; a file that holds
a column of the same name keeps its own. Globs add no partition columns.
"""

from __future__ import annotations

import functools
import glob
import os
import re
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from urllib.parse import unquote

import polars as pl
import pyarrow as pa

from ..core.batching import polars_schema
from ..core.errors import DataError, UsageError
from ..core.model import BatchNorm, chunk_rows, is_numeric
from . import storage
from .dataset import check_complete
from .formats import infer_format, is_data_file
from .readers import (
    ENCODING_FIX,
    Selector,
    Source,
    TextOptions,
    count_rows,
    open_source,
    read_schema,
    shell_word,
)
from .schemas import check_same, conform, dataset_schema
from .storage import is_url

#: The folder name of a null partition value (Hive, Spark, pyarrow, polars).
HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_GLOB = re.compile(r"[*?[]")
_KEY_VALUE = re.compile(r"^([^=]+)=(.*)$")

Partitions = tuple[tuple[str, str | None], ...]


@dataclass(frozen=True)
class InputFile:
    """One file to read: its path ("-" for stdin), format and partition values."""

    path: str
    fmt: str
    partitions: Partitions = ()


def expand_inputs(patterns: Sequence[str], fmt: str | None) -> list[InputFile]:
    """Every file the INPUT arguments name, in reading order."""
    if fmt is not None:
        infer_format("-", fmt, "--input-format")  # an unknown name is a usage error first
    files: list[InputFile] = []
    for pattern in patterns:
        if is_url(pattern):
            urls = storage.glob(pattern) if storage.has_glob(pattern) else [pattern]
            if not urls:
                raise DataError(f"{pattern}: no object matches this pattern; check it")
            # the name says the format; a query string (a presigned URL's) does not count
            files += [
                InputFile(u, infer_format(u.split("?", 1)[0], fmt, "--input-format")) for u in urls
            ]
        elif pattern != "-" and os.path.isdir(pattern):
            files += _directory(pattern, fmt)
        elif _GLOB.search(pattern) and not os.path.lexists(pattern):
            matches = sorted(p for p in glob.glob(pattern, recursive=True) if os.path.isfile(p))
            if not matches:
                raise DataError(
                    f"{pattern}: no file matches this pattern; check it (and quote it, so"
                    " that bnorm expands it rather than the shell)"
                )
            files += [InputFile(p, infer_format(p, fmt, "--input-format")) for p in matches]
        else:
            files.append(InputFile(pattern, infer_format(pattern, fmt, "--input-format")))
    check_complete([f.path for f in files])  # a bnorm dataset still being written
    return files


def input_paths(patterns: Sequence[str]) -> list[str]:
    """Every file the INPUT arguments may read, for the never-write-onto-an-input check."""
    paths: list[str] = []
    for pattern in patterns:
        if is_url(pattern):
            paths.append(pattern)  # never a local output
        elif pattern != "-" and os.path.isdir(pattern):
            paths += [path for path, _ in _walk(pattern)]
        elif _GLOB.search(pattern) and not os.path.lexists(pattern):
            paths += glob.glob(pattern, recursive=True)
        else:
            paths.append(pattern)
    return paths


def _walk(root: str) -> Iterator[tuple[str, list[str]]]:
    """(path, folders below ``root``) of each visible file under ``root``."""
    for folder, subfolders, names in os.walk(root):
        subfolders[:] = [d for d in subfolders if not _hidden(d)]
        parts = os.path.relpath(folder, root).split(os.sep)
        parts = [] if parts == ["."] else parts
        for name in names:
            if not _hidden(name):
                yield os.path.join(folder, name), parts


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def _directory(root: str, fmt: str | None) -> list[InputFile]:
    found = sorted((p, parts) for p, parts in _walk(root) if is_data_file(p))
    files = [
        InputFile(p, infer_format(p, None, "--input-format"), _hive(parts)) for p, parts in found
    ]
    if fmt is not None:
        files = [f for f in files if f.fmt == fmt]
    if not files:
        kind = f"{fmt} " if fmt else ""
        raise DataError(
            f"{root}: no {kind}data files in this directory (looked for names such as"
            " *.parquet, *.csv, *.csv.gz, *.arrow, *.ndjson); check the path"
        )
    kinds = sorted({f.fmt for f in files})
    if len(kinds) > 1:
        base = root.rstrip("/")
        raise UsageError(
            f"{root}: holds files of several formats ({', '.join(kinds)}); pick one with"
            f" --input-format, or give a glob such as '{base}/**/*.{kinds[0]}'"
        )
    keys = [k for k, _ in files[0].partitions]
    for f in files[1:]:
        if [k for k, _ in f.partitions] != keys:
            raise DataError(
                f"{f.path}: its partition folders ({_keys(f.partitions)}) differ from"
                f" {files[0].path}'s ({_keys(files[0].partitions)}); every file of a"
                " partitioned directory must sit at the same depth of key=value folders"
            )
    return files


def _hive(parts: list[str]) -> Partitions:
    """The ``key=value`` folders among ``parts``, URL-decoded like pyarrow and polars do."""
    out: list[tuple[str, str | None]] = []
    for part in parts:
        m = _KEY_VALUE.match(part)
        if m:
            value = unquote(m.group(2))
            out.append((unquote(m.group(1)), None if value == HIVE_NULL else value))
    return tuple(out)


def _keys(partitions: Partitions) -> str:
    return ", ".join(k for k, _ in partitions) or "none"


def _extra(names: Collection[str], partitions: Partitions) -> Partitions:
    """The partition columns a file with columns ``names`` gets (its own win)."""
    return tuple((k, v) for k, v in partitions if k not in names)


def partition_columns(
    table: pa.Table, partitions: Partitions, columns: Sequence[str] | None = None
) -> pa.Table:
    """``table`` (rows of one file) with its partition values appended as constant text
    columns, as `with_partitions` streams them (only those among ``columns``, if given)."""
    for key, value in _extra(table.schema.names, partitions):
        if columns is None or key in columns:
            table = table.append_column(
                pa.field(key, pa.string()), pa.repeat(pa.scalar(value, pa.string()), table.num_rows)
            )
    return table


def with_partitions(source: Source, partitions: Partitions) -> Source:
    """``source`` with its partition values appended as constant text columns."""
    extra = _extra(source.schema.names, partitions)
    if not extra:
        return source
    schema = source.schema
    for key, _ in extra:
        schema = schema.append(pa.field(key, pa.string()))
    values = [pa.scalar(v, pa.string()) for _, v in extra]

    def pieces() -> Iterator[pa.RecordBatch]:
        for batch in source.pieces:
            added = [pa.repeat(v, batch.num_rows) for v in values]
            names = [*batch.schema.names, *(k for k, _ in extra)]  # fit may read fewer columns
            yield pa.RecordBatch.from_arrays([*batch.columns, *added], names=names)

    return Source(source.name, schema, source.total_rows, pieces(), source.inferred)


def open_inputs(
    paths: list[str],
    fmt: str | None,
    model: BatchNorm,
    fitted: bool = False,
    encoding: str = "utf-8",
    project: bool = False,
    only: Sequence[str] | None = None,
    text: TextOptions | None = None,
) -> Source:
    """Open every input; CSV columns to normalize are read as float64, the rest as text.

    ``only``: read just these (numeric) columns, e.g. one column group of a wide fit.
    Without ``fitted``, an input with no column to normalize is an error that says why.
    """
    import codecs

    if paths.count("-") > 1:
        raise UsageError("stdin (-) can be given only once")
    try:
        codec = codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"--encoding {encoding!r}: unknown encoding; use a name such as utf-8, latin-1,"
            " cp1252 or utf-16"
        ) from None
    if not codec._is_text_encoding:  # type: ignore[attr-defined]  # rot13, base64, hex, zlib
        raise UsageError(
            f"--encoding {encoding!r}: not a text encoding (it maps bytes to bytes); use a name"
            " such as utf-8, latin-1, cp1252 or utf-16 (compressed input is detected by itself)"
        )

    def numeric(schema: pa.Schema) -> list[str]:
        chosen = numbers(schema)
        w = model.weight  # fit reads the weights as numbers too (normalize passes them through)
        if w is not None and project and w in schema.names and w not in chosen:
            chosen.append(w)
        return chosen

    def numbers(schema: pa.Schema) -> list[str]:
        found = polars_schema(schema)
        if only is not None:
            return [c for c in only if c in found]
        if fitted:  # transform: the fitted columns the reader found numeric
            # (a column empty throughout the first block has no type yet: a number then)
            return [
                c
                for c in model.columns_
                if c in found and (is_numeric(found[c]) or found[c] == pl.Null)
            ]
        if model.columns is not None:  # named columns are read as numbers, whatever was guessed
            return [c for c in found.names() if c in model.columns and c not in model.exclude]
        return model.select_columns(found)

    files = expand_inputs(paths, fmt)
    # fit and normalize read pieces of whole batches, about 64k rows (many small
    # batches at once); transform maps constants, so it reads pieces of about
    # 16 MiB whatever the batch size (a 1,000-column file: 2,048 rows; pyarrow holds
    # several pieces ahead: 32 MiB pieces peaked ~100 MiB higher, at the same CPU)
    width = max(len(model.input_schema_), len(model.columns_), 1)
    read_rows = (
        max(1024, min(1 << 16, (16 << 20) // (8 * width)))
        if fitted
        else chunk_rows(model.batch_size)
    )

    def open_file(f: InputFile, select: Selector) -> Source:
        source = open_source(f.path, f.fmt, read_rows, select, encoding, project, text)
        return with_partitions(source, f.partitions)

    chosen: list[str] = []

    def numeric_first(schema: pa.Schema) -> list[str]:
        chosen[:] = numeric(schema)
        return chosen

    first = open_file(files[0], numeric_first)
    if not fitted and not numeric(first.schema):
        raise DataError(f"{first.name}: {_nothing_to_normalize(first, model)}")
    first.warnings += [
        _suspect(first.name, c, *s) for c, s in first.suspects.items() if c not in model.exclude
    ]
    # Later files read as numbers the columns the first one does, even one that is
    # empty throughout a later CSV's first block (and fit reads just those).

    def like_first(schema: pa.Schema) -> list[str]:
        return [c for c in chosen if c in schema.names]

    later = [functools.partial(open_file, f, like_first) for f in files[1:]]
    if not later:
        return first
    normalized = numeric(first.schema)
    known = [_known_schema(f) for f in files[1:]]  # checked before the first batch
    for f, theirs in zip(files[1:], known, strict=True):
        if theirs is not None:
            check_same(first.name, first.schema, f.path, theirs, normalized)
    schema = dataset_schema(first.schema, known, normalized)
    return _chain(first, later, _total_rows(first, files[1:]), schema, normalized)


def _known_schema(f: InputFile) -> pa.Schema | None:
    """A typed file's schema from its metadata, with its partition columns."""
    schema = read_schema(f.path, f.fmt)
    if schema is None:
        return None
    for key, _ in f.partitions:
        if key not in schema.names:
            schema = schema.append(pa.field(key, pa.string()))
    return schema


def _nothing_to_normalize(source: Source, model: BatchNorm) -> str:
    """Why no column of ``source`` is to be normalized, and what to do."""
    if model.columns is not None:
        model.select_columns(polars_schema(source.schema))  # an unknown name: did you mean
        return "every column named with -c is also excluded with -x; nothing to normalize"
    schema = polars_schema(source.inferred or source.schema)
    for c in schema.names():
        if schema[c] == pl.Binary:  # what a CSV reader makes of text that is not UTF-8
            return f'column "{c}" holds text that is not UTF-8; {ENCODING_FIX}'

    numbers = [c for c in schema.names() if is_numeric(schema[c])]
    if numbers:
        return (
            f"every numeric column ({_quoted(numbers)}) is excluded with -x; nothing to normalize"
        )
    kinds = [f'"{c}" ({_kind(schema[c])})' for c in schema.names()[:4]]
    more = f" and {schema.len() - 4} more" if schema.len() > 4 else ""
    hint = ""
    if schema.len() == 1:
        for sep, shown in ((";", "';'"), ("\t", "tab"), ("|", "'|'")):
            if sep in schema.names()[0]:
                hint = f"; its one column's name holds {shown}: pass --delimiter {shown}"
                break
    if not hint and source.warnings:  # e.g. numbers with decimal commas
        hint = "; " + source.warnings[0].removeprefix(f"{source.name}: ")
    return (
        f"no numeric column to normalize ({', '.join(kinds)}{more}){hint}; name the columns"
        " to read as numbers with -c (a field that is not a number then stops the run at"
        " its line), or say how the file is written (--delimiter, --null-values,"
        " --decimal-comma)"
    )


def _kind(dtype: pl.DataType) -> str:
    return "empty" if dtype == pl.Null else "text" if dtype == pl.String else str(dtype)


def _suspect(name: str, column: str, line: int, value: str) -> str:
    return (
        f'{name}: column "{column}" is left as text because of {value!r} on line {line},'
        f" among numbers; to normalize it, name it with -c {shell_word(column)} (the run then"
        f" stops at that line), or pass --null-values {shell_word(value)} if it means missing"
    )


def _quoted(columns: Sequence[str]) -> str:
    return ", ".join(f'"{c}"' for c in columns)


def _total_rows(first: Source, later: Sequence[InputFile]) -> int | None:
    """The row count of every input together, when metadata tells it (for the progress bar)."""
    total = first.total_rows
    for f in later:
        if total is None or f.path == "-":
            return None
        rows = count_rows(f.path, f.fmt)
        total = None if rows is None else total + rows
    return total


def _chain(
    first: Source,
    later: Sequence[Callable[[], Source]],
    total: int | None,
    schema: pa.Schema,
    normalized: Collection[str],
) -> Source:
    """Several inputs read as one dataset (``schema``, see `schemas`); batches run
    across file boundaries.

    Later inputs are opened one at a time, when the batches reach them, so memory
    and open files stay bounded however many files a directory or glob holds.
    """

    def pieces() -> Iterator[pa.RecordBatch]:
        for batch in first.pieces:
            yield conform(batch, schema)
        for open_next in later:
            s = open_next()
            check_same(first.name, first.schema, s.name, s.schema, normalized)
            for batch in s.pieces:
                yield conform(batch, schema)

    name = f"{first.name} (+{len(later)} more)"
    return Source(name, schema, total, pieces(), first.inferred, first.suspects, first.warnings)
