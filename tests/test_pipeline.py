"""The streaming passes: what a quiet run skips must not change the result."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

runner = CliRunner()


def test_quiet_transform_gives_the_same_output_and_still_refuses_inf(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    frame = pl.DataFrame({"a": rng.normal(0, 1, 500), "b": rng.normal(5, 2, 500)})
    data, stats = tmp_path / "d.parquet", tmp_path / "s.json"
    frame.write_parquet(data)
    assert runner.invoke(app, ["fit", str(data), "-s", str(stats), "-b", "64"]).exit_code == 0
    loud, quiet = tmp_path / "loud.parquet", tmp_path / "quiet.parquet"
    assert (
        runner.invoke(app, ["transform", str(data), "-s", str(stats), "-o", str(loud)]).exit_code
        == 0
    )
    args = ["transform", str(data), "-s", str(stats), "-o", str(quiet), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    assert pl.read_parquet(loud).equals(pl.read_parquet(quiet))

    bad = tmp_path / "inf.parquet"
    frame.with_columns(
        pl.when(pl.int_range(500) == 300).then(float("inf")).otherwise(pl.col("b")).alias("b")
    ).write_parquet(bad)
    result = runner.invoke(
        app, ["transform", str(bad), "-s", str(stats), "-o", str(quiet), "-q", "-b", "100"]
    )
    assert result.exit_code == 1
    assert 'batch 4: column "b", row 301' in result.stderr


def test_header_only_csv_round_trip(tmp_path: Path) -> None:
    data, stats, out = tmp_path / "h.csv", tmp_path / "s.json", tmp_path / "o.csv"
    data.write_text("a,b\n")
    assert runner.invoke(app, ["fit", str(data), "-s", str(stats), "-c", "a", "-q"]).exit_code == 0
    result = runner.invoke(app, ["transform", str(data), "-s", str(stats), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.stderr
    assert out.read_text() == "a,b\n"
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    result = runner.invoke(app, ["fit", str(empty), "-s", str(stats), "-q"])
    assert result.exit_code == 1 and "empty" in result.stderr


@pytest.mark.parametrize("statistics", [True, False])
def test_an_inf_is_refused_with_or_without_parquet_statistics(
    tmp_path: Path, statistics: bool
) -> None:
    """transform skips its infinity scan only where the statistics bound the values:
    a file whose statistics show the inf, or that has none, is still refused."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(3)
    good, bad, stats = tmp_path / "g.parquet", tmp_path / "b.parquet", tmp_path / "s.json"
    a = rng.normal(0, 1, 1000)
    pq.write_table(pa.table({"a": a}), good)
    a[700] = -math.inf
    pq.write_table(pa.table({"a": a}), bad, write_statistics=statistics, row_group_size=300)
    assert runner.invoke(app, ["fit", str(good), "-s", str(stats), "-q"]).exit_code == 0
    out = tmp_path / "o.parquet"
    result = runner.invoke(app, ["transform", str(bad), "-s", str(stats), "-o", str(out), "-q"])
    assert result.exit_code == 1
    assert 'column "a", row 701' in result.stderr
    assert not out.exists()
