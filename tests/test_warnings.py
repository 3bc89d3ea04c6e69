"""Warnings where the statistics are right but likely not what was meant (issue 11 B8):
one line each on stderr, in --report files and fit --json; --quiet silences them,
--strict makes them errors (exit 1, no output published)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli import BatchNorm
from bnorm_cli.cli.app import app

runner = CliRunner()
rng = np.random.default_rng(11)


def run(*args: object) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.stdout, result.stderr


def warnings_of(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:")]


@pytest.fixture
def data(tmp_path: Path) -> Path:
    n = 5000
    frame = pl.DataFrame(
        {
            "ok": rng.normal(10, 2, n),
            "tiny": rng.normal(0, 5e-4, n),  # var 2.5e-7 << eps 1e-5
            "sorted": np.sort(rng.normal(0, 1, n)),
            "id": np.arange(n),
        }
    )
    path = tmp_path / "d.parquet"
    frame.write_parquet(path)
    return path


def test_fit_warns_about_eps_order_and_row_ids(data: Path, tmp_path: Path) -> None:
    code, _out, err = run("fit", data, "-s", tmp_path / "s.json", "-b", 250)
    assert code == 0
    lines = warnings_of(err)
    assert any('"tiny": eps 1e-05 dominates its variance' in w for w in lines)
    assert any('"sorted": batch means follow the row order' in w for w in lines)
    assert any(
        '"id": strictly increasing integers, like a row id' in w and "-x id" in w for w in lines
    )
    assert not any('"ok"' in w for w in lines)
    assert not any('"id": batch means follow' in w for w in lines)  # said once, as a row id
    # fit marks unconverged running statistics in the report instead of warning
    assert "running statistics not converged" not in " ".join(lines)
    code, _out, err = run("fit", data, "-s", tmp_path / "s2.json", "-b", 2500)
    assert "running statistics not converged: ok, tiny, sorted, id" in " ".join(err.split())


def test_warnings_go_into_reports_and_json_and_quiet_silences(data: Path, tmp_path: Path) -> None:
    code, out, err = run(
        "fit",
        data,
        "-s",
        tmp_path / "s.json",
        "-b",
        250,
        "--json",
        "-q",
        "--report",
        tmp_path / "r.json",
    )
    assert code == 0 and warnings_of(err) == []
    summary = json.loads(out)
    assert any("dominates its variance" in w for w in summary["warnings"])
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["warnings"] == summary["warnings"]
    run("fit", data, "-s", tmp_path / "s.json", "-b", 250, "-q", "--report", tmp_path / "r.md")
    assert "## Warnings" in (tmp_path / "r.md").read_text()


def test_strict_makes_a_warning_an_error_and_writes_nothing(data: Path, tmp_path: Path) -> None:
    stats = tmp_path / "s.json"
    code, _out, err = run("fit", data, "-s", stats, "-b", 250, "--strict")
    assert code == 1 and "--strict:" in err and not stats.exists()
    assert len(err.strip().splitlines()) == 1
    clean = tmp_path / "clean.parquet"
    pl.read_parquet(data).select("ok").write_parquet(clean)
    assert run("fit", clean, "-s", stats, "-b", 250, "--strict")[0] == 0
    out_path = tmp_path / "n.parquet"
    code, _, err = run("normalize", data, "-o", out_path, "-b", 250, "--strict")
    assert code == 1 and not out_path.exists() and "--strict:" in err
    assert not list(tmp_path.glob(".*tmp"))


def test_running_statistics_that_have_not_converged(tmp_path: Path) -> None:
    """One 5,000-row batch: the running mean is 0.1 x the mean (PyTorch's 0/1 start)."""
    data = tmp_path / "d.csv"
    pl.DataFrame({"a": rng.normal(100, 1, 5000), "b": rng.normal(5, 1, 5000)}).write_csv(data)
    stats = tmp_path / "s.json"
    assert run("fit", data, "-s", stats, "-q")[0] == 0
    code, _, err = run("transform", data, "-s", stats, "-o", tmp_path / "o.csv", "--use", "running")
    lines = warnings_of(err)
    assert len(lines) == 1  # one line for the columns that share the problem
    assert 'columns "a", "b": running statistics have not converged' in lines[0]
    assert "90% after 1 update" in lines[0] and "--momentum cumulative" in lines[0]
    # population statistics do not warn; cumulative momentum converges at once
    assert warnings_of(run("transform", data, "-s", stats, "-o", tmp_path / "p.csv")[2]) == []
    assert run("fit", data, "-s", stats, "-q", "--momentum", "cumulative")[0] == 0
    code, _, err = run("transform", data, "-s", stats, "-o", tmp_path / "o.csv", "--use", "running")
    assert warnings_of(err) == []
    code, _, err = run("normalize", data, "-o", tmp_path / "n.csv", "--mode", "running")
    assert any("have not converged" in w for w in warnings_of(err))
    code, _, err = run("export", stats, "--to", "torch", "-o", tmp_path / "bn.safetensors")
    assert code == 0 and warnings_of(err) == []  # cumulative: converged


def test_batches_too_small_to_update(tmp_path: Path) -> None:
    data = tmp_path / "d.csv"
    pl.DataFrame({"a": rng.normal(0, 1, 50)}).write_csv(data)
    code, _, err = run("normalize", data, "-o", tmp_path / "n.csv", "-b", 1)
    assert code == 0
    assert any(
        "no batch had 2 or more valid values, so batch mode mapped every value to beta" in w
        for w in warnings_of(err)
    )
    stats = tmp_path / "s.json"
    run("fit", data, "-s", stats, "-b", 1, "-q")
    code, _, err = run("transform", data, "-s", stats, "-o", tmp_path / "o.csv", "--use", "running")
    assert any(
        "were never updated" in w and "use a larger --batch-size" in w for w in warnings_of(err)
    )


def test_the_rules_against_direct_computations() -> None:
    from bnorm_cli.core import diagnostics as dg

    x = np.concatenate([rng.normal(0, 1, 1000), rng.normal(3, 1, 1000)])
    model = BatchNorm(batch_size=100).fit(pl.DataFrame({"x": x}))
    trend = model.state_.trend  # type: ignore[union-attr]
    means = np.array([x[i : i + 100].mean() for i in range(0, 2000, 100)])
    from scipy.stats import spearmanr

    assert trend.spearman()[0] == pytest.approx(spearmanr(np.arange(20), means)[0], abs=1e-12)
    shuffled = rng.permutation(x)
    assert not BatchNorm(batch_size=100).fit(pl.DataFrame({"x": shuffled})).diagnose()
    # the trend keeps a bounded sample of batch means whatever the batch count
    many = BatchNorm(batch_size=1).fit(pl.DataFrame({"x": np.arange(10_000.0)}))
    assert many.state_.trend.index.size <= dg.TREND_KEEP  # type: ignore[union-attr]
    assert many.state_.trend.spearman()[0] == pytest.approx(1.0)  # type: ignore[union-attr]
    # not strictly increasing: a repeated value, or a later file going back
    ids = BatchNorm(batch_size=3).fit(pl.DataFrame({"i": [1, 2, 3, 4, 5, 5, 6]}))
    assert not any("row id" in w for w in ids.diagnose())
    back = BatchNorm(batch_size=3).fit(pl.DataFrame({"i": [1, 2, 3, 4, 5, 6, 2]}))
    assert not any("row id" in w for w in back.diagnose())
    ok = BatchNorm(batch_size=3).fit(pl.DataFrame({"i": [1, 2, 3, 4, 5, 6, 9]}))
    assert any("row id" in w for w in ok.diagnose())


def test_no_false_alarm_for_shuffled_data_with_few_batches() -> None:
    for seed in range(60):
        x = np.random.default_rng(seed).normal(0, 1, 1000)
        assert not BatchNorm(batch_size=100).fit(pl.DataFrame({"x": x})).diagnose(), seed


def test_a_decimal_column_left_as_it_is_is_named(tmp_path: Path) -> None:
    """Spark and DuckDB write money as DECIMAL: bnorm leaves it as it is, and says so
    once, with the fix (named with -c it is a usage error; excluded, nothing is said)."""
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 200
    prices = pa.array([decimal.Decimal(i) / 100 for i in range(n)], pa.decimal128(10, 2))
    table = pa.table({"price": prices, "cost": prices, "x": np.arange(n, dtype=np.float64)})
    src = tmp_path / "in.parquet"
    pq.write_table(table, src)
    stats = tmp_path / "s.json"
    code, _, err = run("fit", src, "-s", stats, "-b", "200")
    assert code == 0, err
    said = [w for w in warnings_of(err) if "decimal" in w]
    assert said == [
        'warning: columns "price", "cost": decimal, left as it is (bnorm normalizes integer'
        " and float columns); cast to float64 before bnorm to normalize, or leave out with -x"
        " price,cost"
    ]
    assert BatchNorm.load(stats).columns_ == ["x"]
    code, _, err = run("fit", src, "-s", stats, "-b", "200", "-x", "price,cost")
    assert code == 0 and not [w for w in warnings_of(err) if "decimal" in w], err
    code, _, err = run("fit", src, "-s", stats, "-b", "200", "-c", "x")
    assert code == 0 and not [w for w in warnings_of(err) if "decimal" in w], err
