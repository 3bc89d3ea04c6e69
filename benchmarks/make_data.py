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

CLI: ``python benchmarks/make_data.py --rows 5000000 [--cols 16] [--csv] [-o DIR]``
(default DIR: benchmarks/.work, the cache run.py uses).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

GENERATOR_VERSION = 1  # bump when the content changes, to invalidate caches
CHUNK_ROWS = 1 << 20
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


def write_parquet(path: Path, rows: int, cols: int = 16, seed: int = DEFAULT_SEED) -> Path:
    """Write the dataset to ``path`` (via a temporary file, then renamed)."""
    if rows < 1 or cols < 1:
        raise ValueError("rows and cols must be >= 1")
    labels = _labels()
    tmp = path.with_name(path.name + ".tmp")
    # No dictionary for floats (slow, bigger files); dictionary for the text column.
    with pq.ParquetWriter(tmp, schema(cols), compression="snappy", use_dictionary=["label"]) as w:
        for index, start in enumerate(range(0, rows, CHUNK_ROWS)):
            n = min(CHUNK_ROWS, rows - start)
            w.write_table(make_chunk(seed, index, n, cols, labels), row_group_size=CHUNK_ROWS)
    os.replace(tmp, path)
    return path


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


def ensure_parquet(workdir: Path, rows: int, cols: int = 16, seed: int = DEFAULT_SEED) -> Path:
    """The cached Parquet dataset for these parameters, generated if missing."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / f"{dataset_stem(rows, cols, seed)}.parquet"
    return path if path.exists() else write_parquet(path, rows, cols, seed)


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
    p.add_argument("-o", "--workdir", type=Path, default=Path(__file__).resolve().parent / ".work")
    a = p.parse_args(argv)
    paths = [ensure_parquet(a.workdir, a.rows, a.cols, a.seed)]
    if a.csv:
        paths.append(ensure_csv(a.workdir, a.rows, a.cols, a.seed))
    for path in paths:
        print(f"{path}\t{path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
