"""transform's polars path: a local Parquet file of small row groups, with nothing to
check or measure on the way, is read, mapped and written by polars alone
(`readers.Source.scan`). It must write the same file as the pyarrow reader's path,
and say what a broken file is as that path does: one line, nothing published."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bnorm_cli.io import readers, writers
from tests.test_cli import run

ROWS = 5000


def _table(seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    x = rng.normal(1e6, 3.0, ROWS)
    x[::7] = math.nan
    x_mask = np.zeros(ROWS, bool)
    x_mask[3::11] = True
    days = [dt.date(2020, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 999, ROWS)]
    return pa.table(
        {
            "x": pa.array(x, mask=x_mask),
            "count": pa.array(rng.integers(-5, 10**12, ROWS)),
            "small": pa.array(rng.integers(0, 100, ROWS), pa.int16()),
            "label": pa.array(rng.choice(["a", "é", "", "zz"], ROWS)).dictionary_encode(),
            "text": pa.array([None if i % 5 == 0 else f"r{i}" for i in range(ROWS)]),
            "day": pa.array(days),
            "flag": pa.array(rng.integers(0, 2, ROWS).astype(bool)),
            "tags": pa.array([[i, None] if i % 3 else None for i in range(ROWS)]),
        }
    )


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Whether each Parquet sink read its input through polars' scan."""
    used: list[bool] = []
    scanned = writers._scanned

    def spy(batches: Any) -> Any:
        got = scanned(batches)
        used.append(got is not None)
        return got

    monkeypatch.setattr(writers, "_scanned", spy)
    return used


@pytest.mark.parametrize("group", [10, 999, ROWS])
@pytest.mark.parametrize(
    "options",
    [
        [],
        ["--inverse", "--dtype", "float64"],
        ["--use", "running"],
        ["--dtype", "float32"],
        ["--gamma", "2"],
    ],
)
def test_the_scan_writes_what_the_reader_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: int, options: list[str]
) -> None:
    data = tmp_path / "in.parquet"
    pq.write_table(_table(group), data, row_group_size=group)
    stats = tmp_path / "s.json"
    run(["fit", data, "-s", stats, "-q", "-b", "512"])
    used = _spy(monkeypatch)
    fast, slow = tmp_path / "fast.parquet", tmp_path / "slow.parquet"
    run(["transform", data, "-s", stats, "-o", fast, "-q", *options])
    monkeypatch.setattr(readers, "SCAN_ROW_GROUP_BYTES", -1)  # every file: pyarrow's reader
    run(["transform", data, "-s", stats, "-o", slow, "-q", *options])
    assert used == [True, False]
    assert fast.read_bytes() == slow.read_bytes()
    assert pq.read_table(fast).num_rows == ROWS


def test_the_scan_is_left_when_anything_watches_the_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A report, the drift summary or a +/-inf to look for need the rows in turn."""
    data = tmp_path / "in.parquet"
    pq.write_table(_table(3), data, row_group_size=1000)
    stats = tmp_path / "s.json"
    run(["fit", data, "-s", stats, "-q"])
    used = _spy(monkeypatch)
    run(["transform", data, "-s", stats, "-o", tmp_path / "a.parquet"])  # the terminal report
    run(["transform", data, "-s", stats, "-o", tmp_path / "b.parquet", "-q", "--drift"])
    report = ["--report", tmp_path / "r.json"]
    run(["transform", data, "-s", stats, "-o", tmp_path / "c.parquet", "-q", *report])
    no_stats = tmp_path / "nostats.parquet"  # statistics cannot rule out an infinity
    pq.write_table(_table(3), no_stats, row_group_size=1000, write_statistics=False)
    run(["transform", no_stats, "-s", stats, "-o", tmp_path / "n.parquet", "-q"])
    assert used == [False, False, False, False]
    bad = tmp_path / "inf.parquet"
    table = _table(3)
    x = table["x"].to_numpy(zero_copy_only=False).copy()
    x[4321] = math.inf
    pq.write_table(table.set_column(0, "x", pa.array(x)), bad, write_statistics=False)
    result = run(["transform", bad, "-s", stats, "-o", tmp_path / "i.parquet", "-q"], code=1)
    assert 'column "x", row 4322' in result.stderr
    assert not (tmp_path / "i.parquet").exists()


def test_a_file_broken_in_the_middle_is_one_line_and_nothing_is_published(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = tmp_path / "in.parquet"
    pq.write_table(_table(4).select(["x", "count"]), data, row_group_size=1000)
    stats = tmp_path / "s.json"
    run(["fit", data, "-s", stats, "-q"])
    raw = bytearray(data.read_bytes())  # a data page of the third row group overwritten;
    start = pq.ParquetFile(data).metadata.row_group(2).column(0).data_page_offset
    raw[start + 30 : start + 3000] = b"\xff" * 2970  # the footer still reads
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(bytes(raw))
    used = _spy(monkeypatch)
    out = tmp_path / "out.parquet"
    result = run(["transform", broken, "-s", stats, "-o", out, "-q"], code=1)
    assert used == [True]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(broken) in lines[0], result.stderr
    assert "not a readable Parquet file" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.parquet", "in.parquet", "s.json"]


def test_large_row_groups_stay_with_pyarrow(tmp_path: Path) -> None:
    """polars holds whole row groups: beyond `SCAN_ROW_GROUP_BYTES` pyarrow reads."""
    small, large = tmp_path / "small.parquet", tmp_path / "large.parquet"
    table = pa.table({"x": np.arange(3 * 10**5, dtype=np.float64)})
    pq.write_table(table, small, row_group_size=10**5)
    pq.write_table(table, large)
    assert readers.open_source(str(small), "parquet", 1024).scan is not None
    old = readers.SCAN_ROW_GROUP_BYTES
    try:
        meta = pq.ParquetFile(small).metadata
        readers.SCAN_ROW_GROUP_BYTES = max(meta.row_group(i).total_byte_size for i in range(3))
        assert readers.open_source(str(small), "parquet", 1024).scan is not None
        assert readers.open_source(str(large), "parquet", 1024).scan is None
    finally:
        readers.SCAN_ROW_GROUP_BYTES = old
