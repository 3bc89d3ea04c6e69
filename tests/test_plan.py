"""The plan: units from footers, readable on their own; moments computed span by
span (as a distributed engine would, in any order) fold to the serial result."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bnorm_cli import BatchNorm
from bnorm_cli.core import fold as fd
from bnorm_cli.core import moments as mom
from bnorm_cli.io.inputs import expand_inputs
from bnorm_cli.io.plan import batch_spans, plan


def dataset(tmp_path: Path) -> tuple[list[str], pl.DataFrame]:
    rng = np.random.default_rng(3)
    frames, paths = [], []
    for i, (rows, group) in enumerate([(1000, 300), (7, 7), (2500, 1000)]):
        x = rng.normal(1e9, 1e-3, rows)
        x[::13] = np.nan
        frame = pl.DataFrame(
            {
                "x": x,
                "j": np.concatenate([np.zeros(rows // 2), np.full(rows - rows // 2, 1e9)]),
                "t": ["a"] * rows,
            }
        )
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(frame.to_arrow(), path, row_group_size=group)
        frames.append(frame)
        paths.append(str(path))
    return paths, pl.concat(frames)


@pytest.mark.parametrize("batch_size", [1, 7, 1000, 65536])
def test_spans_of_units_fold_to_the_serial_fit(tmp_path: Path, batch_size: int) -> None:
    paths, whole = dataset(tmp_path)
    units = plan(expand_inputs(paths, None))
    assert units is not None and sum(u.rows for u in units) == whole.height
    assert [u.first_row for u in units] == list(np.cumsum([0] + [u.rows for u in units])[:-1])
    spans = batch_spans(units, batch_size, target_rows=1500)
    tables = {}
    for first, count, needed in reversed(spans):  # out of order, each on its own
        rows = pl.from_arrow(pa.concat_tables([u.read(["x", "j"]) for u in needed]))
        assert isinstance(rows, pl.DataFrame)
        start = first * batch_size - needed[0].first_row
        chunk = rows.slice(start, count * batch_size)
        tables[first] = mom.table_moments(chunk, ["x", "j"], batch_size, first, first * batch_size)
    fold = fd.Fold(["x", "j"], batch_size, 0.1)
    for first in sorted(tables):
        fold.add(tables[first])
    serial = BatchNorm(batch_size=batch_size, columns=["x", "j"]).fit(whole)
    assert [fold.population.at(j) for j in range(2)] == list(serial.population_.values())
    assert [fold.running.at(j) for j in range(2)] == list(serial.running_.values())


def test_text_inputs_have_no_plan(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n2\n")
    assert plan(expand_inputs([str(path)], None)) is None
