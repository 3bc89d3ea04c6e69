"""Arrow data as polars frames, with every column name kept as it is.

``pl.from_arrow`` renames a column named ``""`` to ``column_0`` (and so on),
which would lose a column of a real file (R's ``write.csv`` row-name column,
a Parquet file written by pandas with an unnamed index). Everything in bnorm
converts through `to_polars` instead.
"""

from __future__ import annotations

import polars as pl
import pyarrow as pa


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
