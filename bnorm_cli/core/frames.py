"""Arrow data as polars frames, with every column name kept as it is.

``pl.from_arrow`` renames a column named ``""`` to ``column_0`` (and so on),
which would lose a column of a real file (R's ``write.csv`` row-name column,
a Parquet file written by pandas with an unnamed index). Everything in bnorm
converts through `to_polars` instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa

from .errors import UsageError


def to_polars(data: pa.Table | pa.RecordBatch) -> pl.DataFrame:
    """``data`` as a polars DataFrame with the same column names."""
    names = data.schema.names
    if "" not in names:
        frame = pl.from_arrow(data)
    else:  # positional names on the way in, the real ones back on the frame
        frame = pl.from_arrow(data.rename_columns([f"c{i}" for i in range(len(names))]))
        assert isinstance(frame, pl.DataFrame)
        frame.columns = list(names)
    assert isinstance(frame, pl.DataFrame)
    return frame


def string_array(values: Sequence[str]) -> pa.Array:
    """``values`` as an Arrow string array, built from its buffers: ``pa.array`` of
    Python objects makes pyarrow import pandas, when installed (~0.2 s a process), and
    ``Array.cast`` imports pyarrow.compute (~50 ms)."""
    data = [v.encode() for v in values]
    offsets = np.cumsum([0, *map(len, data)], dtype=np.int32)
    buffers = [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(data))]
    return pa.Array.from_buffers(pa.string(), len(data), buffers)


def is_pandas(data: object) -> bool:
    """A pandas DataFrame (recognized without importing pandas, an optional dependency)."""
    return any(
        k.__name__ == "DataFrame" and k.__module__.split(".")[0] == "pandas"
        for k in type(data).__mro__
    )


def is_frame(data: object) -> bool:
    """One table the API accepts: polars, pyarrow (Table or RecordBatch) or pandas."""
    return isinstance(data, pl.DataFrame | pa.Table | pa.RecordBatch) or is_pandas(data)


def as_polars(data: object) -> pl.DataFrame:
    """Any accepted table as a polars DataFrame (pandas: its columns, not its index)."""
    if isinstance(data, pl.DataFrame):
        return data
    if isinstance(data, pa.Table | pa.RecordBatch):
        return to_polars(data)
    if is_pandas(data):
        for c in data.columns:  # type: ignore[attr-defined]
            if not isinstance(c, str):
                raise UsageError(
                    f"pandas DataFrame column names must be strings, got {c!r};"
                    " rename them, e.g. df.columns = df.columns.astype(str)"
                )
        return pl.from_pandas(data, include_index=False, nan_to_null=False)  # type: ignore[arg-type]
    raise UsageError(
        "expected a polars or pandas DataFrame or a pyarrow Table/RecordBatch,"
        f" got {type(data).__name__}"
    )


def as_arrow(data: object) -> pa.Table:
    """Any accepted table as a pyarrow Table."""
    if isinstance(data, pa.Table):
        return data
    if isinstance(data, pa.RecordBatch):
        return pa.Table.from_batches([data])
    return as_polars(data).to_arrow()


def like(data: object, out: pl.DataFrame, changed: Sequence[str]) -> Any:
    """``out`` as the kind of table ``data`` is: polars, a pyarrow Table, or pandas.

    pandas: ``data`` with its ``changed`` columns replaced by float numpy columns
    (NaN for null); its index and other columns are kept as they were."""
    if isinstance(data, pl.DataFrame):
        return out
    if is_pandas(data):
        frame = data.copy(deep=False)  # type: ignore[attr-defined]
        for c in changed:
            frame[c] = out.get_column(c).to_numpy()
        return frame
    return out.to_arrow()
