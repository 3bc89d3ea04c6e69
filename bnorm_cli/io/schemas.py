"""Several input files as one dataset: do their schemas agree, and the schema to read.

Tools encode the same data differently: pyarrow writes ``string``, polars
``large_string`` or ``string_view``; a column is dictionary-encoded in one file
and plain in the next, required in one and nullable in another. Such files are
one dataset: their batches are cast to the dataset's types (the first file's).
Columns to normalize may also differ in number type (int32 and int64, int and
float): they are then read as float64, which is what they are normalized in.
Anything else is an error naming the column, both types and both files.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import pyarrow as pa

from ..core.errors import DataError

_SAME = "inputs read as one dataset need the same columns, in the same order"


def logical(t: pa.DataType) -> pa.DataType:
    """``t`` without its physical encoding: string for large_string/string_view,
    the value type of a dictionary, list for large_list/list_view (recursively)."""
    if pa.types.is_dictionary(t):
        return logical(t.value_type)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if (
        pa.types.is_list(t)
        or pa.types.is_large_list(t)
        or pa.types.is_list_view(t)
        or pa.types.is_large_list_view(t)
    ):
        return pa.list_(logical(t.value_type))
    if pa.types.is_struct(t):
        return pa.struct([pa.field(f.name, logical(f.type)) for f in t])
    return t


def is_number(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def check_same(
    first: str, schema: pa.Schema, other: str, theirs: pa.Schema, normalized: Collection[str]
) -> None:
    """``other``'s schema ``theirs`` holds the same dataset as ``first``'s ``schema``."""
    mine = schema.names
    for name in mine:
        if name not in theirs.names:
            raise DataError(f'{other}: no column "{name}", which {first} has; {_SAME}')
    for name in theirs.names:
        if name not in mine:
            raise DataError(f'{other}: column "{name}" is not in {first}; {_SAME}')
    for a, b in zip(mine, theirs.names, strict=True):
        if a != b:
            raise DataError(
                f'{other}: the columns are in another order than in {first} ("{b}" where'
                f' {first} has "{a}"); {_SAME}'
            )
    for f in schema:
        t = theirs.field(f.name).type
        if logical(t) == logical(f.type):
            continue
        if f.name in normalized and is_number(f.type) and is_number(t):
            continue
        raise DataError(
            f'{other}: column "{f.name}" is {t} here but {f.type} in {first}; inputs read as'
            " one dataset need the same types (cast the column in one of them, or read the"
            " files apart)"
        )


def dataset_schema(
    schema: pa.Schema, others: Sequence[pa.Schema | None], normalized: Collection[str]
) -> pa.Schema:
    """The first file's schema, as every file of the dataset is read.

    ``others``: the later files' schemas (None: not known before the file is read).
    A normalized column whose number types differ becomes float64; a field is
    nullable if it is in any file, or in a file not known yet.
    """
    unknown = any(s is None for s in others)
    known = [s for s in others if s is not None]
    fields = []
    for f in schema:
        types = {s.field(f.name).type for s in known}
        t = f.type
        if f.name in normalized and is_number(t) and (unknown or types - {t}):
            t = pa.float64()
        nullable = f.nullable or unknown or any(s.field(f.name).nullable for s in known)
        fields.append(pa.field(f.name, t, nullable, f.metadata))
    return pa.schema(fields, metadata=schema.metadata)


def conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the types of ``schema`` (its columns may be a subset: fit)."""
    target = pa.schema([schema.field(n) for n in batch.schema.names])
    if batch.schema.equals(target):
        return batch
    arrays = [
        col if col.type == f.type else col.cast(f.type)
        for col, f in zip(batch.columns, target, strict=True)
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=target)
