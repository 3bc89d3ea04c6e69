"""--report report.html: one self-contained file with the table and the plots."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.report.profile import Profile

runner = CliRunner()


@pytest.fixture
def data(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    n = 3000
    drift = np.linspace(0, 10, n)  # a shifting mean: the running statistics lag behind
    frame = pl.DataFrame(
        {
            "t": [f"r{i}" for i in range(n)],
            "a": drift + rng.normal(0, 1, n),
            "b": rng.normal(1e3, 5, n),
        }
    )
    path = tmp_path / "in.parquet"
    frame.write_parquet(path)
    return path


@pytest.mark.parametrize("command", ["fit", "transform", "normalize"])
def test_html_report_is_self_contained(tmp_path: Path, data: Path, command: str) -> None:
    stats = tmp_path / "s.json"
    assert (
        runner.invoke(app, ["fit", str(data), "-s", str(stats), "-b", "100", "-q"]).exit_code == 0
    )
    html = tmp_path / "r.html"
    args = {
        "fit": ["fit", str(data), "-s", str(tmp_path / "s2.json")],
        "transform": ["transform", str(data), "-s", str(stats), "-o", str(tmp_path / "o.parquet")],
        "normalize": [
            "normalize",
            str(data),
            "-o",
            str(tmp_path / "o.parquet"),
            "--mode",
            "running",
        ],
    }[command]
    result = runner.invoke(app, [*args, "-b", "100", "-q", "--report", str(html)])
    assert result.exit_code == 0, result.output
    text = html.read_text(encoding="utf-8")
    assert text.startswith("<!doctype html>")
    assert not re.search(r"""(src|href)=["']?(https?:|//)""", text), "must open offline"
    # per column: two histograms, two traces (transform: moments per reader piece, not
    # per batch, since main's engine; with one piece the numbers replace the traces)
    assert text.count("<svg") == (8 if command != "transform" else text.count("<svg"))
    assert text.count("<svg") >= 4
    assert '<a href="#col-0">a</a>' in text and '<a href="#col-1">b</a>' in text
    assert "3,000" in text
    assert "<td>batch size</td><td>100</td>" in text
    assert "Output statistics" in text
    assert "<td>t</td><td>not numeric (String)</td>" in text  # passed through, and why


def test_html_report_single_batch_and_warnings(tmp_path: Path) -> None:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"a": [1.0, 2.0, 4.0], "big": [2**60, 1, 2], "x": [1, 2, 3]}).write_parquet(path)
    html = tmp_path / "r.html"
    args = ["fit", str(path), "-s", str(tmp_path / "s.json"), "-x", "x", "--report", str(html)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    text = html.read_text(encoding="utf-8")
    assert "One batch" in text and text.count("<svg") == 4  # histograms only, numbers instead
    assert "warning:" in text and "2^53" in text
    assert "<td>x</td><td>excluded (-x)</td>" in text
    assert f"wrote {tmp_path / 's.json'} (2 columns)" in result.stderr
    assert f"wrote {html}" in result.stderr


def test_profile_sample_is_bounded_and_paired() -> None:
    profile = Profile(size=100, seed=1)
    for start in range(0, 10_000, 1000):
        x = pl.DataFrame({"x": np.arange(start, start + 1000, dtype=float)})
        profile.add_batch(x, x.with_columns(pl.col("x") * 2))
    before, after = profile.before("x"), profile.after("x")
    assert before.size == after.size == 100
    assert np.array_equal(after, before * 2)  # rows stay paired
    assert before.min() < 2000 and before.max() > 8000  # drawn from the whole stream


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_html_report_renders_in_chromium(tmp_path: Path, data: Path) -> None:
    html = tmp_path / "r.html"
    args = ["normalize", str(data), "-o", str(tmp_path / "o.csv"), "-b", "100", "-q"]
    assert runner.invoke(app, [*args, "--report", str(html)]).exit_code == 0
    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'profile'}",
            "--window-size=1200,900",
            f"--screenshot={shot}",
            html.as_uri(),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    assert shot.read_bytes().startswith(b"\x89PNG") and shot.stat().st_size > 20_000
