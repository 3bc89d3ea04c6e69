"""Generate the benchmark dataset: a seeded, chunk-written Parquet file.

Layout (for ``cols`` float columns, default 16):

- ``f00`` .. ``fNN``: float64 on very different scales (unit normal, 1e6 +/- 1e-2,
  1e-6 wide, -1e9 +/- 1e7, log-normal, rounded prices, 0/1 flags, ...);
  column ``NULL_COLUMN_INDEX`` (``f02``) has 1% nulls;
- ``count``: int64;
- ``label``: text (10,000 distinct values, dictionary encoded).

Rows are generated in chunks of ``CHUNK_ROWS`` (each chunk one row group, seeded
by ``(seed, chunk index)``), so the content only depends on ``rows``, ``cols``
and ``seed``, and 20M rows never sit in memory at once. ``ensure_*`` cache the
files in a work directory under names that encode those parameters.

Copies of the same data written by other libraries with their default settings
(``WRITERS``: polars' ``DataFrame.write_parquet``, pyarrow's ``pq.write_table``,
DuckDB's ``COPY ... TO 'x.parquet'``) are made from that file by
``ensure_parquet(..., writer=...)``; ``describe`` reads a file's codec and row-group
sizes from its Parquet metadata.

CLI: ``python benchmarks/make_data.py --rows 5000000 [--cols 16] [--csv]
[--writers polars,pyarrow,duckdb] [-o DIR]`` (default DIR: benchmarks/.work, the
cache run.py uses); prints each file with its codec and row groups.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

GENERATOR_VERSION = 1  # bump when the content changes, to invalidate caches
CHUNK_ROWS = 1 << 20
WIDE_CHUNK_BYTES = 1 << 28  # float64 bytes per chunk of a file wider than WIDE_COLS
WIDE_COLS = 64  # up to this many float columns, chunks (row groups) are CHUNK_ROWS
NULL_COLUMN_INDEX = 2
NULL_FRACTION = 0.01
N_LABELS = 10_000
DEFAULT_SEED = 42

Gen = Callable[[np.random.Generator, int], np.ndarray]

# One generator per float column, cycled when cols > len(_FLOAT_GENERATORS).
_FLOAT_GENERATORS: list[Gen] = [
    lambda g, n: g.normal(0.0, 1.0, n),
    lambda g, n: g.normal(1e6, 1e-2, n),  # |mean| >> std
    lambda g, n: g.normal(50.0, 10.0, n),  # the column with nulls
    lambda g, n: g.uniform(0.0, 1e-6, n),
    lambda g, n: g.lognormal(3.0, 1.0, n),
    lambda g, n: g.exponential(1e3, n),
    lambda g, n: g.normal(-1e9, 1e7, n),
    lambda g, n: g.uniform(-1.0, 1.0, n),
    lambda g, n: g.normal(1e-3, 1e-4, n),
    lambda g, n: np.round(g.normal(100.0, 30.0, n)),  # integral floats
    lambda g, n: g.normal(0.0, 1e12, n),
    lambda g, n: np.round(g.lognormal(2.0, 0.5, n), 2),  # prices
    lambda g, n: np.round(g.normal(273.15, 5.0, n), 1),  # temperatures
    lambda g, n: g.uniform(0.0, 100.0, n),
    lambda g, n: g.normal(1e3, 1.0, n),
    lambda g, n: (g.random(n) < 0.3).astype(np.float64),  # 0/1 flag
]


def float_column_names(cols: int) -> list[str]:
    return [f"f{i:02d}" for i in range(cols)]


def numeric_column_names(cols: int) -> list[str]:
    """The columns a normalizer should touch: every float column plus ``count``."""
    return [*float_column_names(cols), "count"]


def schema(cols: int) -> pa.Schema:
    fields = [pa.field(name, pa.float64()) for name in float_column_names(cols)]
    fields += [pa.field("count", pa.int64()), pa.field("label", pa.string())]
    return pa.schema(fields)


def _labels() -> pa.Array:
    words = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
    return pa.array([f"{words[i % len(words)]}-{i:05d}" for i in range(N_LABELS)])


def make_chunk(seed: int, index: int, n: int, cols: int, labels: pa.Array) -> pa.Table:
    """Chunk ``index`` of the dataset (``n`` rows); depends only on its arguments."""
    g = np.random.default_rng([seed, index])
    null_col = min(NULL_COLUMN_INDEX, cols - 1)
    arrays: list[pa.Array] = []
    for i in range(cols):
        values = _FLOAT_GENERATORS[i % len(_FLOAT_GENERATORS)](g, n)
        mask = g.random(n) < NULL_FRACTION if i == null_col else None
        arrays.append(pa.array(values, type=pa.float64(), mask=mask))
    arrays.append(pa.array(g.integers(0, 1_000_000, n), type=pa.int64()))
    arrays.append(labels.take(pa.array(g.integers(0, len(labels), n))))
    return pa.Table.from_arrays(arrays, schema=schema(cols))


def chunk_rows(cols: int) -> int:
    """Rows per generated chunk (and row group): CHUNK_ROWS up to WIDE_COLS float
    columns; for wider files the largest power of two whose float64 values fit in
    WIDE_CHUNK_BYTES (32,768 rows at 1,000 columns), so no chunk needs gigabytes."""
    if cols <= WIDE_COLS:
        return CHUNK_ROWS
    n = CHUNK_ROWS
    while n > 1 and n * cols * 8 > WIDE_CHUNK_BYTES:
        n //= 2
    return n


def write_parquet(path: Path, rows: int, cols: int = 16, seed: int = DEFAULT_SEED) -> Path:
    """Write the dataset to ``path`` (via a temporary file, then renamed)."""
    if rows < 1 or cols < 1:
        raise ValueError("rows and cols must be >= 1")
    labels = _labels()
    tmp = path.with_name(path.name + ".tmp")
    step = chunk_rows(cols)
    # No dictionary for floats (slow, bigger files); dictionary for the text column.
    with pq.ParquetWriter(tmp, schema(cols), compression="snappy", use_dictionary=["label"]) as w:
        for index, start in enumerate(range(0, rows, step)):
            n = min(step, rows - start)
            w.write_table(make_chunk(seed, index, n, cols, labels), row_group_size=step)
    os.replace(tmp, path)
    return path


# --- the same data written by other libraries, each with its default settings ------------

#: The file written by this module ("bench") and the libraries whose default Parquet
#: writers copy it. Each copy holds the same rows, in the same order, with the same schema.
WRITERS: dict[str, str] = {
    "bench": "benchmarks/make_data.py: pyarrow ParquetWriter, snappy, 1,048,576-row row groups, "
    "no dictionary for floats",
    "polars": "polars: pl.read_parquet(src).write_parquet(dst) (defaults)",
    "pyarrow": "pyarrow: pq.write_table(pq.read_table(src), dst) (defaults)",
    "duckdb": "DuckDB: COPY (SELECT * FROM read_parquet(src)) TO dst (FORMAT parquet) (defaults)",
}
_WRITER_PACKAGE = {"polars": "polars", "pyarrow": "pyarrow", "duckdb": "duckdb"}


def writer_version(writer: str) -> str:
    """The version of the library behind ``writer`` ("" for the bench file or if missing)."""
    pkg = _WRITER_PACKAGE.get(writer)
    try:
        return importlib.metadata.version(pkg) if pkg else ""
    except importlib.metadata.PackageNotFoundError:
        return ""


def _sql_string(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def copy_with(writer: str, src: Path, dst: Path) -> Path:
    """Write ``src``'s rows to ``dst`` with ``writer``'s default Parquet settings.

    polars and pyarrow write a table held in memory, as their users do
    (~140 MB per million rows at 16 columns); DuckDB streams.
    """
    pkg = _WRITER_PACKAGE.get(writer)
    if pkg and importlib.util.find_spec(pkg) is None:
        raise RuntimeError(
            f"the {writer} writer needs {pkg} (pip install -r benchmarks/requirements.txt)"
        )
    tmp = dst.with_name(dst.name + ".tmp")
    if writer == "polars":
        import polars as pl

        pl.read_parquet(src).write_parquet(tmp)
    elif writer == "pyarrow":
        pq.write_table(pq.read_table(src), tmp)
    elif writer == "duckdb":
        import duckdb

        with duckdb.connect() as con:
            # preserve_insertion_order is on by default: rows stay in file order.
            con.execute(
                f"COPY (SELECT * FROM read_parquet({_sql_string(src)})) "
                f"TO {_sql_string(tmp)} (FORMAT parquet)"
            )
    else:
        raise ValueError(f"unknown writer {writer!r}; choose from: {', '.join(WRITERS)}")
    os.replace(tmp, dst)
    return dst


def describe(path: Path) -> dict[str, Any]:
    """Codec(s), row-group sizes and writer of a Parquet file, from its metadata."""
    md = pq.ParquetFile(path).metadata
    sizes = [md.row_group(i).num_rows for i in range(md.num_row_groups)]
    codecs: dict[str, None] = {}
    encodings: dict[str, None] = {}
    for i in range(md.num_row_groups):
        rg = md.row_group(i)
        for j in range(rg.num_columns):
            c = rg.column(j)
            codecs[c.compression] = None
            if c.path_in_schema.startswith("f"):  # the float columns
                encodings.update(dict.fromkeys(c.encodings))
    return {
        "path": str(path),
        "bytes": path.stat().st_size,
        "created_by": md.created_by,
        "codecs": list(codecs),
        "float_encodings": list(encodings),
        "row_groups": md.num_row_groups,
        "row_group_rows_min": min(sizes, default=0),
        "row_group_rows_median": int(statistics.median(sizes)) if sizes else 0,
        "row_group_rows_max": max(sizes, default=0),
    }


def describe_line(d: dict[str, Any]) -> str:
    """One line: codec and row groups of a ``describe`` result."""
    rg = d["row_group_rows_max"]
    sizes = (
        f"{rg:,}"
        if d["row_group_rows_min"] == rg
        else (f"{d['row_group_rows_min']:,}-{rg:,} (median {d['row_group_rows_median']:,})")
    )
    return (
        f"{'/'.join(d['codecs']).lower()}, {d['row_groups']} row group(s) of {sizes} rows, "
        f"float encodings {'/'.join(d['float_encodings'])}, {d['bytes'] / 1e6:.1f} MB, "
        f"written by {d['created_by']}"
    )


def write_csv(parquet_path: Path, csv_path: Path) -> Path:
    """Stream a CSV copy of ``parquet_path`` (nulls as empty fields)."""
    tmp = csv_path.with_name(csv_path.name + ".tmp")
    pf = pq.ParquetFile(parquet_path, pre_buffer=False, buffer_size=1 << 20)
    with pacsv.CSVWriter(tmp, pf.schema_arrow) as w:
        for batch in pf.iter_batches(batch_size=CHUNK_ROWS // 4):
            w.write_batch(batch)
    os.replace(tmp, csv_path)
    return csv_path


def dataset_stem(rows: int, cols: int, seed: int = DEFAULT_SEED) -> str:
    return f"bnorm-bench-v{GENERATOR_VERSION}-r{rows}-c{cols}-s{seed}"


def ensure_parquet(
    workdir: Path, rows: int, cols: int = 16, seed: int = DEFAULT_SEED, writer: str = "bench"
) -> Path:
    """The cached Parquet dataset for these parameters, generated if missing;
    ``writer`` other than "bench": the copy written by that library (its name and
    version are part of the file name)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{dataset_stem(rows, cols, seed)}.parquet"
    if not path.exists():
        write_parquet(path, rows, cols, seed)
    if writer == "bench":
        return path
    if writer not in WRITERS:
        raise ValueError(f"unknown writer {writer!r}; choose from: {', '.join(WRITERS)}")
    copy = path.with_name(f"{path.stem}-{writer}{writer_version(writer)}.parquet")
    return copy if copy.exists() else copy_with(writer, path, copy)


def ensure_csv(workdir: Path, rows: int, cols: int = 16, seed: int = DEFAULT_SEED) -> Path:
    """The cached CSV copy of the dataset, generated (with its Parquet) if missing."""
    parquet_path = ensure_parquet(workdir, rows, cols, seed)
    path = parquet_path.with_suffix(".csv")
    return path if path.exists() else write_csv(parquet_path, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--cols", type=int, default=16, help="number of float64 columns")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--csv", action="store_true", help="also write a CSV copy")
    p.add_argument(
        "--writers",
        default="bench",
        help=f"comma list of Parquet writers ({', '.join(WRITERS)}; default bench)",
    )
    p.add_argument("-o", "--workdir", type=Path, default=Path(__file__).resolve().parent / ".work")
    a = p.parse_args(argv)
    writers = [w for w in a.writers.replace(" ", "").split(",") if w]
    if unknown := [w for w in writers if w not in WRITERS]:
        p.error(f"unknown writer(s) {', '.join(unknown)}; choose from: {', '.join(WRITERS)}")
    for writer in writers:
        path = ensure_parquet(a.workdir, a.rows, a.cols, a.seed, writer)
        print(f"{writer}\t{path}\n\t{describe_line(describe(path))}")
    if a.csv:
        path = ensure_csv(a.workdir, a.rows, a.cols, a.seed)
        print(f"csv\t{path}\t{path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
