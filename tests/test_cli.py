"""The `bnorm` command line through typer's CliRunner (in-process, fast).

Every command and option of design.md §4; numbers are checked against the
plain-numpy reference (tests/reference.py), never against hard-coded values.
stdout and stderr are checked apart: stdout carries data only.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal, assert_series_equal
from typer.testing import CliRunner, Result

import bnorm_cli
from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import BnormError
from bnorm_cli.io import readers

try:  # works whether or not tests/ is a package
    from tests import reference as ref
except ImportError:  # pragma: no cover
    import reference as ref  # type: ignore[no-redef]

N = 23
NUMERIC = ["a", "b", "big", "const"]  # normalized by default (zip is excluded: -x zip)
PASSTHROUGH = ["ts", "name", "zip", "flag"]
EPS = 1e-5
NAMES = ["plain", "comma, inside", 'a "quoted" word', "two\nlines", "  spaced  ", "ünïcødé", ""]

runner = CliRunner()


# -- data ------------------------------------------------------------------------------------
def make_frame(n: int = N, seed: int = 0) -> pl.DataFrame:
    """Numeric columns with nulls, NaN, a large offset and a constant; text that must survive."""
    rng = np.random.default_rng(seed)
    a = rng.normal(5.0, 2.0, n)
    a[3] = np.nan
    a_list: list[float | None] = [None if i == 8 else float(v) for i, v in enumerate(a)]
    b = [None if i % 6 == 1 else int(v) for i, v in enumerate(rng.integers(-50, 50, n))]
    start = datetime(2024, 3, 1, 6, 0, 0)
    return pl.DataFrame(
        {
            "ts": [start + timedelta(minutes=7 * i, milliseconds=i) for i in range(n)],
            "a": pl.Series(a_list, dtype=pl.Float64),
            "name": [NAMES[i % len(NAMES)] for i in range(n)],
            "b": pl.Series(b, dtype=pl.Int64),
            "zip": [f"{v:05d}" for v in rng.integers(0, 2000, n)],
            "big": 1e6 + rng.normal(0.0, 0.01, n),
            "flag": [bool(v) for v in rng.integers(0, 2, n)],
            "const": [3.25] * n,
        }
    )


def write(frame: pl.DataFrame, path: Path, row_group_size: int | None = None) -> Path:
    if path.suffix == ".csv":
        frame.write_csv(path)
    else:
        pq.write_table(frame.to_arrow(), path, row_group_size=row_group_size)
    return path


def column(frame: pl.DataFrame, name: str) -> np.ndarray:
    """A column as the reference wants it: float64, null -> NaN."""
    return frame.get_column(name).cast(pl.Float64).fill_null(math.nan).to_numpy()


def read_output(path: Path | bytes, fmt: str) -> pl.DataFrame:
    """An output file; CSV is read as text, then the normalized columns as Float64."""
    data = path if isinstance(path, bytes) else path.read_bytes()
    if fmt == "parquet":
        return pl.read_parquet(io.BytesIO(data))
    frame = pl.read_csv(io.BytesIO(data), infer_schema=False)
    return frame.with_columns(pl.col(c).cast(pl.Float64) for c in NUMERIC if c in frame.columns)


def csv_cells(data: str | bytes) -> list[list[str]]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    return list(csv.reader(io.StringIO(text, newline="")))


def run(args: Sequence[str | Path], code: int = 0, stdin: bytes | None = None) -> Result:
    """Invoke the CLI; check the exit code and that no traceback leaked."""
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    detail = f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(detail) from result.exception
    assert result.exit_code == code, detail
    assert "Traceback" not in result.stderr
    return result


def fit(data: Path, stats: Path, *options: str | Path) -> dict[str, Any]:
    run(["fit", data, "-s", stats, "-x", "zip", "-q", *options])
    doc: dict[str, Any] = json.loads(stats.read_text())
    return doc


def without_created(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "created"}


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".bnorm-" in p.name)


# -- comparisons against the reference ---------------------------------------------------------
def assert_stats(col: dict[str, Any], x: np.ndarray, batch_size: int, momentum: Any) -> None:
    pop = ref.population(x)
    assert col["count"] == pop["count"]
    assert col["null_count"] == pop["null_count"]
    for key in ("mean", "var", "std", "min", "max"):
        if pop[key] is None:
            assert col[key] is None, key
        else:
            assert col[key] == pytest.approx(pop[key], rel=1e-13, abs=0.0), key
    run_ = ref.running(x, batch_size, momentum)
    magnitude = float(np.nanmax(np.abs(x))) if pop["count"] else 1.0
    assert col["running_mean"] == pytest.approx(
        run_["running_mean"], rel=1e-12, abs=1e-14 * magnitude
    )
    assert col["running_var"] == pytest.approx(run_["running_var"], rel=1e-12, abs=1e-300)
    assert col["running_updates"] == run_["batches_used"]


def assert_normalized(
    out: pl.Series,
    expected: np.ndarray,
    source: pl.Series,
    eps: float = EPS,
    gamma: float = 1.0,
    dtype: type[pl.DataType] = pl.Float64,
) -> None:
    """Equal to the reference up to its own rounding; nulls stay null and NaN stays NaN.

    The reference's mean is off by a few ulps of the data and the scale is at most
    gamma/sqrt(eps), which bounds the difference (large for a 1e6 + N(0, 0.01) column).
    """
    assert out.dtype == dtype
    assert out.is_null().to_list() == source.is_null().to_list()
    x = source.cast(pl.Float64).fill_null(math.nan).to_numpy()
    tol = (1e-12 + 8 * float(np.spacing(np.nanmax(np.abs(x)))) / math.sqrt(eps)) * max(
        1.0, abs(gamma)
    )
    got = out.cast(pl.Float64).fill_null(math.nan).to_numpy()
    if dtype == pl.Float32:
        expected = expected.astype(np.float32).astype(np.float64)
        tol = max(tol, 1e-6 * float(np.nanmax(np.abs(expected))))
    np.testing.assert_allclose(got, expected, rtol=0.0, atol=tol)


def assert_passthrough(out: pl.DataFrame, frame: pl.DataFrame, columns: Sequence[str]) -> None:
    assert out.columns == frame.columns
    assert out.height == frame.height
    for c in columns:
        assert_series_equal(out.get_column(c), frame.get_column(c))


@pytest.fixture
def frame() -> pl.DataFrame:
    return make_frame()


# -- fit ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("batch_size", [1, 2, 7, N, N + 42])
def test_fit_statistics_match_the_reference(
    tmp_path: Path, frame: pl.DataFrame, fmt: str, batch_size: int
) -> None:
    data = write(frame, tmp_path / f"data.{fmt}")
    doc = fit(data, tmp_path / "stats.json", "-b", str(batch_size))
    assert list(doc["columns"]) == NUMERIC
    assert doc["format"] == "bnorm-stats"
    assert doc["version"] == 1
    assert doc["batch_size"] == batch_size
    assert doc["momentum"] == 0.1
    assert doc["eps"] == EPS
    assert doc["rows"] == N
    assert doc["num_batches_tracked"] == ref.num_batches(column(frame, "a"), batch_size)
    for c in NUMERIC:
        col = doc["columns"][c]
        assert_stats(col, column(frame, c), batch_size, 0.1)
        assert (col["gamma"], col["beta"]) == (1.0, 0.0)
        assert col["std"] == pytest.approx(math.sqrt(col["var"]), rel=1e-15)


@pytest.mark.parametrize(
    ("option", "momentum"), [("0.3", 0.3), ("0", 0.0), ("1", 1.0), ("cumulative", "cumulative")]
)
def test_fit_momentum(tmp_path: Path, frame: pl.DataFrame, option: str, momentum: Any) -> None:
    data = write(frame, tmp_path / "data.parquet")
    doc = fit(data, tmp_path / "stats.json", "-b", "4", "--momentum", option)
    assert doc["momentum"] == momentum
    for c in NUMERIC:
        assert_stats(doc["columns"][c], column(frame, c), 4, momentum)


def test_fit_eps_is_stored_and_used_by_transform(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    doc = fit(data, stats, "--eps", "0.5")
    assert doc["eps"] == 0.5
    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", stats, "-o", out, "-q"])
    got = pl.read_parquet(out)
    for c in ("a", "b", "big"):
        col = doc["columns"][c]
        expected = ref.normalize_with(column(frame, c), col["mean"], col["var"], eps=0.5)
        assert_normalized(got[c], expected, frame[c], eps=0.5)
    # --eps at transform overrides the saved value; eps 0 on a constant column stays finite
    run(["transform", data, "-s", stats, "-o", out, "-q", "--eps", "0"])
    got = pl.read_parquet(out)
    col = doc["columns"]["a"]
    expected = ref.normalize_with(column(frame, "a"), col["mean"], col["var"], eps=0.0)
    assert_normalized(got["a"], expected, frame["a"], eps=1e-30)
    assert got["const"].to_list() == [0.0] * N


def test_fit_several_inputs_are_one_dataset(tmp_path: Path, frame: pl.DataFrame) -> None:
    whole = fit(write(frame, tmp_path / "all.csv"), tmp_path / "all.json", "-b", "7")
    first = write(frame.head(10), tmp_path / "first.csv")
    second = write(frame.tail(N - 10), tmp_path / "second.csv")
    parts = fit(first, tmp_path / "parts.json", "-b", "7", second)
    assert parts["columns"] == whole["columns"]
    assert parts["num_batches_tracked"] == whole["num_batches_tracked"] == 4


def test_fit_all_null_column(tmp_path: Path) -> None:
    frame = pl.DataFrame({"x": [1.0, 2.0, 4.0], "empty": pl.Series([None] * 3, dtype=pl.Float64)})
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    run(["fit", data, "-s", stats, "-q", "-b", "2"])
    col = json.loads(stats.read_text())["columns"]["empty"]
    assert_stats(col, column(frame, "empty"), 2, 0.1)
    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", stats, "-o", out, "-q"])
    assert pl.read_parquet(out)["empty"].is_null().all()


# -- stats do not depend on how the reader chunks the input ------------------------------------
def test_statistics_independent_of_parquet_row_groups(tmp_path: Path, frame: pl.DataFrame) -> None:
    docs, outputs = [], []
    for size in (1, 7, 1000):
        data = write(frame, tmp_path / f"rg{size}.parquet", row_group_size=size)
        assert pq.ParquetFile(data).metadata.num_row_groups == -(-N // size)
        docs.append(without_created(fit(data, tmp_path / f"rg{size}.json", "-b", "5")))
        out = tmp_path / f"rg{size}.out.parquet"
        run(["normalize", data, "-o", out, "-b", "5", "-x", "zip", "-q"])
        outputs.append(pl.read_parquet(out))
    assert docs[0] == docs[1] == docs[2]  # bit for bit: JSON floats round-trip exactly
    for other in outputs[1:]:
        assert_frame_equal(outputs[0], other, check_exact=True)


def test_statistics_independent_of_csv_blocks(
    tmp_path: Path, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write(frame, tmp_path / "data.csv")
    assert data.stat().st_size > 4 * 400
    docs = []
    for block in (400, 1000, readers.CSV_BLOCK_SIZE):
        monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", block)
        docs.append(without_created(fit(data, tmp_path / f"b{block}.json", "-b", "5")))
    assert docs[0] == docs[1] == docs[2]
    # and the same numbers as from Parquet (CSV reads every normalized column as Float64)
    pq_doc = fit(write(frame, tmp_path / "data.parquet"), tmp_path / "pq.json", "-b", "5")
    for c in NUMERIC:
        csv_col = {k: v for k, v in docs[0]["columns"][c].items() if k != "dtype"}
        pq_col = {k: v for k, v in pq_doc["columns"][c].items() if k != "dtype"}
        assert csv_col == pq_col


# -- transform ---------------------------------------------------------------------------------
@pytest.mark.parametrize("out_fmt", ["parquet", "csv"])
@pytest.mark.parametrize("use", ["population", "running"])
def test_transform_matches_the_reference(
    tmp_path: Path, frame: pl.DataFrame, use: str, out_fmt: str
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    doc = fit(data, tmp_path / "stats.json", "-b", "7")
    out = tmp_path / f"out.{out_fmt}"
    args = ["transform", data, "-s", tmp_path / "stats.json", "-o", out, "-q"]
    run([*args, "--use", use] if use == "running" else args)
    got = read_output(out, out_fmt)
    for c in NUMERIC:
        col = doc["columns"][c]
        center, var = (
            (col["mean"], col["var"])
            if use == "population"
            else (col["running_mean"], col["running_var"])
        )
        assert_normalized(got[c], ref.normalize_with(column(frame, c), center, var), frame[c])
    if use == "population":
        assert got["const"].to_list() == [0.0] * N  # a constant column becomes beta exactly
    if out_fmt == "parquet":
        assert_passthrough(got, frame, PASSTHROUGH)
    else:
        assert got.columns == frame.columns
        expected = csv_cells(frame.write_csv())
        cells = csv_cells(out.read_bytes())
        keep = [frame.columns.index(c) for c in PASSTHROUGH]
        assert [[r[i] for i in keep] for r in cells] == [[r[i] for i in keep] for r in expected]


def test_transform_reordered_columns_and_rows_kept_in_order(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    doc = fit(write(frame, tmp_path / "data.parquet"), tmp_path / "stats.json")
    shuffled = frame.select(list(reversed(frame.columns)))
    data = write(shuffled, tmp_path / "reordered.parquet")
    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", tmp_path / "stats.json", "-o", out, "-q"])
    got = pl.read_parquet(out)
    assert_passthrough(got, shuffled, PASSTHROUGH)
    for c in NUMERIC:
        col = doc["columns"][c]
        expected = ref.normalize_with(column(frame, c), col["mean"], col["var"])
        assert_normalized(got[c], expected, frame[c])


def test_transform_batch_size_does_not_change_the_result(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    fit(data, tmp_path / "stats.json")
    outs = []
    for b in ("1", "5", "1000"):
        out = tmp_path / f"out{b}.parquet"
        run(["transform", data, "-s", tmp_path / "stats.json", "-o", out, "-q", "-b", b])
        outs.append(pl.read_parquet(out))
    assert_frame_equal(outs[0], outs[1], check_exact=True)
    assert_frame_equal(outs[0], outs[2], check_exact=True)


def test_transform_columns_subset(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    doc = fit(data, tmp_path / "stats.json")
    for options in (["-c", "a,big"], ["-c", "a", "-c", "big"], ["-x", "b,const"]):
        out = tmp_path / "out.parquet"
        run(["transform", data, "-s", tmp_path / "stats.json", "-o", out, "-q", *options])
        got = pl.read_parquet(out)
        assert_passthrough(got, frame, [*PASSTHROUGH, "b", "const"])  # b stays Int64
        col = doc["columns"]["big"]
        expected = ref.normalize_with(column(frame, "big"), col["mean"], col["var"])
        assert_normalized(got["big"], expected, frame["big"])


def test_transform_float32(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    doc = fit(data, tmp_path / "stats.json")
    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", tmp_path / "stats.json", "-o", out, "-q", "--dtype", "float32"])
    got = pl.read_parquet(out)
    assert_passthrough(got, frame, PASSTHROUGH)
    for c in NUMERIC:
        col = doc["columns"][c]
        expected = ref.normalize_with(column(frame, c), col["mean"], col["var"])
        assert_normalized(got[c], expected, frame[c], dtype=pl.Float32)


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("use", ["population", "running"])
def test_inverse_round_trip(tmp_path: Path, frame: pl.DataFrame, fmt: str, use: str) -> None:
    data = write(frame, tmp_path / f"data.{fmt}")
    stats = tmp_path / "stats.json"
    fit(data, stats, "-b", "7", "--gamma", "2.5", "--beta", "a=-1", "--beta", "big=3")
    norm, back = tmp_path / f"norm.{fmt}", tmp_path / f"back.{fmt}"
    run(["transform", data, "-s", stats, "-o", norm, "--use", use, "-q"])
    run(["transform", norm, "-s", stats, "-o", back, "--use", use, "--inverse", "-q"])
    got = read_output(back, fmt)
    original = frame if fmt == "parquet" else read_output(data, "csv")
    assert_passthrough(got, original, [c for c in PASSTHROUGH if fmt == "parquet" or c != "zip"])
    for c in NUMERIC:
        assert got[c].is_null().to_list() == frame[c].is_null().to_list()
        np.testing.assert_allclose(column(got, c), column(frame, c), rtol=1e-12, atol=1e-12)


def test_inverse_refuses_gamma_zero(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    fit(data, tmp_path / "stats.json", "--gamma", "a=0")
    out = tmp_path / "out.parquet"
    result = run(["transform", data, "-s", tmp_path / "stats.json", "-o", out, "--inverse"], code=2)
    assert '"a"' in result.stderr and "gamma" in result.stderr
    assert not out.exists()


def test_gamma_beta_stored_by_fit_and_overridden_by_transform(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    doc = fit(data, stats, "--gamma", "2", "--gamma", "a=3", "--beta", "b=-1", "--beta", "0.5")
    cols = doc["columns"]
    assert {c: cols[c]["gamma"] for c in NUMERIC} == {"a": 3.0, "b": 2.0, "big": 2.0, "const": 2.0}
    assert {c: cols[c]["beta"] for c in NUMERIC} == {"a": 0.5, "b": -1.0, "big": 0.5, "const": 0.5}

    def check(out: Path, gamma: dict[str, float], beta: dict[str, float]) -> None:
        got = pl.read_parquet(out)
        for c in NUMERIC:
            expected = ref.normalize_with(
                column(frame, c), cols[c]["mean"], cols[c]["var"], EPS, gamma[c], beta[c]
            )
            assert_normalized(got[c], expected, frame[c], gamma=gamma[c])

    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", stats, "-o", out, "-q"])
    check(
        out, {"a": 3, "b": 2, "big": 2, "const": 2}, {"a": 0.5, "b": -1, "big": 0.5, "const": 0.5}
    )
    run(["transform", data, "-s", stats, "-o", out, "-q", "--gamma", "big=-4", "--beta", "0.25"])
    check(out, {"a": 3, "b": 2, "big": -4, "const": 2}, dict.fromkeys(NUMERIC, 0.25))
    assert json.loads(stats.read_text())["columns"] == cols  # transform never rewrites stats


def test_transform_stdin_to_stdout(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.csv")
    stats = tmp_path / "stats.json"
    doc = fit(data, stats, "-b", "5")
    from_stdin = tmp_path / "stdin.json"
    run(["fit", "-", "-s", from_stdin, "-b", "5", "-x", "zip", "-q"], stdin=data.read_bytes())
    assert without_created(json.loads(from_stdin.read_text())) == without_created(doc)
    out = tmp_path / "out.csv"
    run(["transform", data, "-s", stats, "-o", out, "-q"])
    piped = run(["transform", "-", "-s", stats, "-o", "-"], stdin=data.read_bytes())
    assert piped.stdout_bytes == out.read_bytes()  # stdout: the data and nothing else
    assert "bnorm transform" in piped.stderr  # the report went to stderr
    # Parquet both ways through the pipe
    pq_data = write(frame, tmp_path / "data.parquet")
    result = run(
        [
            *("transform", "-", "-s", stats, "-o", "-", "-q"),
            *("--input-format", "parquet", "--output-format", "parquet"),
        ],
        stdin=pq_data.read_bytes(),
    )
    assert result.stderr == ""
    got = read_output(result.stdout_bytes, "parquet")
    assert_passthrough(got, frame, PASSTHROUGH)


def test_explicit_formats(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = tmp_path / "data.txt"
    frame.write_csv(data)
    stats = tmp_path / "stats.json"
    run(["fit", data, "-s", stats, "-q", "-x", "zip", "--input-format", "csv"])
    out = tmp_path / "out.bin"
    run(
        [
            *("transform", data, "-s", stats, "-o", out, "-q"),
            *("--input-format", "CSV", "--output-format", "parquet"),
        ]
    )
    got = pl.read_parquet(out)  # really Parquet
    assert got.columns == frame.columns
    assert got["a"].dtype == pl.Float64
    assert got["zip"].to_list() == frame["zip"].to_list()


# -- normalize ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["parquet", "csv"])
@pytest.mark.parametrize("mode", ["batch", "running"])
@pytest.mark.parametrize("batch_size", [1, 2, 7, N, N + 42])
def test_normalize_matches_the_reference(
    tmp_path: Path, frame: pl.DataFrame, mode: str, batch_size: int, fmt: str
) -> None:
    data = write(frame, tmp_path / f"data.{fmt}")
    out = tmp_path / f"out.{fmt}"
    options = ["-b", str(batch_size), "-x", "zip", "--momentum", "0.2", "--gamma", "a=1.5"]
    run(["normalize", data, "-o", out, "--mode", mode, "-q", *options])
    got = read_output(out, fmt)
    for c in NUMERIC:
        x, gamma = column(frame, c), 1.5 if c == "a" else 1.0
        if mode == "batch":
            expected = ref.normalize_batch(x, batch_size, EPS, gamma)
        else:
            expected = ref.normalize_running(x, batch_size, 0.2, EPS, gamma)
        assert_normalized(got[c], expected, frame[c], gamma=gamma)
    if fmt == "parquet":
        assert_passthrough(got, frame, PASSTHROUGH)


@pytest.mark.parametrize("mode", ["batch", "running"])
def test_normalize_saves_what_fit_would(tmp_path: Path, frame: pl.DataFrame, mode: str) -> None:
    data = write(frame, tmp_path / "data.parquet")
    options = ["-b", "7", "--momentum", "cumulative", "--beta", "2"]
    fitted = fit(data, tmp_path / "fit.json", *options)
    saved = tmp_path / "normalize.json"
    out = tmp_path / "out.parquet"
    run(["normalize", data, "-o", out, "--mode", mode, "-s", saved, "-x", "zip", "-q", *options])
    assert without_created(json.loads(saved.read_text())) == without_created(fitted)


def test_normalize_without_stats_writes_no_stats(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    run(["normalize", data, "-o", tmp_path / "out.parquet", "-q"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "out.parquet"]


def test_normalize_float32_and_stdin_to_stdout(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.csv")
    result = run(
        ["normalize", "-", "-o", "-", "-b", "7", "-x", "zip", "-q", "--dtype", "float32"],
        stdin=data.read_bytes(),
    )
    assert result.stderr == ""
    got = read_output(result.stdout_bytes, "csv")
    for c in NUMERIC:
        expected = ref.normalize_batch(column(frame, c), 7)
        assert_normalized(got[c].cast(pl.Float32), expected, frame[c], dtype=pl.Float32)
    out = tmp_path / "out.parquet"
    run(["normalize", data, "-o", out, "-b", "7", "-x", "zip", "-q", "--dtype", "float32"])
    got = pl.read_parquet(out)
    for c in NUMERIC:
        expected = ref.normalize_batch(column(frame, c), 7)
        assert_normalized(got[c], expected, frame[c], dtype=pl.Float32)


# -- column selection --------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "fitted"),
    [
        (["-c", "a,b"], ["a", "b"]),
        (["-c", "b", "-c", "a"], ["a", "b"]),  # file order, not option order
        (["-c", " a , big "], ["a", "big"]),
        (["-x", "zip,big"], ["a", "b", "const"]),
        (["-x", "zip", "-x", "const", "-x", "a"], ["b", "big"]),
        (["-c", "a,b,big", "-x", "b"], ["a", "big"]),
    ],
)
def test_columns_and_exclude(
    tmp_path: Path, frame: pl.DataFrame, options: list[str], fitted: list[str]
) -> None:
    data = write(frame, tmp_path / "data.csv")
    stats = tmp_path / "stats.json"
    run(["fit", data, "-s", stats, "-q", *options])
    assert list(json.loads(stats.read_text())["columns"]) == fitted
    out = tmp_path / "out.csv"
    run(["normalize", data, "-o", out, "-q", *options])
    cells = csv_cells(out.read_bytes())
    source = csv_cells(data.read_bytes())
    assert cells[0] == source[0]
    untouched = [i for i, c in enumerate(frame.columns) if c not in fitted]
    assert [[r[i] for i in untouched] for r in cells] == [[r[i] for i in untouched] for r in source]


def test_csv_text_passes_through_byte_identical(tmp_path: Path) -> None:
    text = (
        "ts,x,zip,note,flag,code\n"
        '2024-03-01T06:00:00.123+01:00,1.5,00123,"a, b",TRUE,1e5\n'
        '2024-03-01T06:01:00Z,2.5,007,"line1\nline2",false,NaN\n'
        '2024-03-01,,0,"say ""hi""",,  x \n'
        "2024-03-01 06:03:00,4,00000,plain,T,é\n"
        '2024-03-01T06:04:00,-1e3,01,"",yes,""\n'
    )
    data = tmp_path / "data.csv"
    data.write_text(text, encoding="utf-8")
    stats = tmp_path / "stats.json"
    run(["fit", data, "-s", stats, "-q", "-x", "zip"])
    assert list(json.loads(stats.read_text())["columns"]) == ["x"]
    for command in (
        ["transform", data, "-s", stats],
        ["normalize", data, "-x", "zip"],
    ):
        out = tmp_path / "out.csv"
        run([*command, "-o", out, "-q"])
        written = out.read_text(encoding="utf-8")
        cells, source = csv_cells(written), csv_cells(text)
        assert len(cells) == len(source)
        for row, src in zip(cells, source, strict=True):
            assert row[:1] + row[2:] == src[:1] + src[2:]
        for raw in ('"a, b"', '"line1\nline2"', '"say ""hi"""', "00123", ",007,", "  x \n"):
            assert raw in written
        # a line holding only text columns is written back byte for byte
        assert written.splitlines()[5].split(",", 2)[2] == "00000,plain,T,é"


def test_empty_text_fields_pass_through_byte_identical(tmp_path: Path) -> None:
    """An empty field and a quoted empty string are different things to many readers."""
    text = 'x,note\n1,\n2,""\n3,z\n'
    data = tmp_path / "data.csv"
    data.write_text(text)
    out = tmp_path / "out.csv"
    run(["normalize", data, "-o", out, "-q"])
    lines = out.read_text().splitlines()
    assert [line.split(",", 1)[1] for line in lines] == ["note", "", '""', "z"]


# -- --inf ---------------------------------------------------------------------------------------
def test_inf_stops_fit_by_default_and_is_missing_on_request(
    tmp_path: Path, frame: pl.DataFrame
) -> None:
    a = frame["a"].to_list()
    a[9], a[15] = math.inf, -math.inf
    frame = frame.with_columns(pl.Series("a", a, dtype=pl.Float64))
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    result = run(["fit", data, "-s", stats, "-b", "7"], code=1)
    for needle in ("data.parquet", "batch 2", '"a"', "row 10", "--inf missing"):
        assert needle in result.stderr
    assert result.stdout == ""
    assert not stats.exists()

    doc = fit(data, stats, "-b", "7", "--inf", "missing")
    x = column(frame, "a")
    x_missing = np.where(np.isinf(x), math.nan, x)
    assert_stats(doc["columns"]["a"], x_missing, 7, 0.1)
    assert doc["inf"] == "missing"
    out = tmp_path / "out.parquet"
    # transform follows the saved policy, like eps, gamma and beta; --inf overrides it
    result = run(["transform", data, "-s", stats, "-o", out, "--inf", "error"], code=1)
    assert '"a"' in result.stderr and "row 10" in result.stderr
    run(["transform", data, "-s", stats, "-o", out, "-q"])
    got = column(pl.read_parquet(out), "a")
    col = doc["columns"]["a"]
    expected = ref.normalize_with(x_missing, col["mean"], col["var"])
    finite = np.isfinite(x)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=0, atol=1e-12)
    np.testing.assert_array_equal(got[np.isinf(x)], x[np.isinf(x)])  # README: stays +/-inf


# -- reports, quiet, debug, version ----------------------------------------------------------
def test_report_files(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    run(["fit", data, "-s", stats, "-b", "7", "-x", "zip", "-q", "--report", tmp_path / "r.md"])
    md = (tmp_path / "r.md").read_text()
    assert md.startswith(f"# bnorm fit: {data}\n")
    assert f"{N} rows in 4 batches; running statistics not converged:" in md
    rows = [line for line in md.splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows] == ["column", *NUMERIC]

    doc = json.loads(stats.read_text())
    run(["fit", data, "-s", stats, "-b", "7", "-x", "zip", "-q", "--report", tmp_path / "r.json"])
    rep = json.loads((tmp_path / "r.json").read_text())
    assert (rep["command"], rep["rows"], rep["batches"]) == ("fit", N, 4)
    assert [r["column"] for r in rep["columns"]] == NUMERIC
    for r in rep["columns"]:
        col = doc["columns"][r["column"]]
        assert (r["count"], r["nulls"], r["mean"]) == (col["count"], col["null_count"], col["mean"])

    # transform reports what it saw in its input (here: a slice of the fitted data)
    part = write(frame.head(10), tmp_path / "part.parquet")
    out = tmp_path / "out.parquet"
    report = tmp_path / "t.json"
    run(["transform", part, "-s", stats, "-o", out, "-q", "--report", report])
    rep = json.loads(report.read_text())
    assert (rep["command"], rep["rows"]) == ("transform", 10)
    for r in rep["columns"]:
        pop = ref.population(column(frame.head(10), r["column"]))
        assert r["mean"] == pytest.approx(pop["mean"], rel=1e-13)

    run(["normalize", data, "-o", out, "-q", "--report", tmp_path / "n.md"])
    assert (tmp_path / "n.md").read_text().startswith("# bnorm normalize --mode batch: ")


def test_quiet_and_report_on_stderr(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    loud = run(["fit", data, "-s", stats, "-x", "zip"])
    assert loud.stdout == ""
    assert "bnorm fit" in loud.stderr
    for c in NUMERIC:
        assert re.search(rf"^\s*{c}\s", loud.stderr, re.MULTILINE), c
    quiet = run(["fit", data, "-s", stats, "-x", "zip", "--quiet"])
    assert (quiet.stdout, quiet.stderr) == ("", "")
    out = tmp_path / "out.parquet"
    for command in (["transform", data, "-s", stats], ["normalize", data, "--mode", "running"]):
        assert run([*command, "-o", out]).stderr != ""
        result = run([*command, "-o", out, "-q"])
        assert (result.stdout, result.stderr) == ("", "")


def test_debug_shows_the_exception(tmp_path: Path) -> None:
    args = ["fit", tmp_path / "missing.csv", "-s", tmp_path / "stats.json"]
    plain = run(args, code=1)
    assert isinstance(plain.exception, SystemExit)
    assert plain.stderr.count("\n") == 1 and "missing.csv" in plain.stderr
    debug = runner.invoke(app, [str(a) for a in [*args, "--debug"]])
    assert debug.exit_code == 1
    assert isinstance(debug.exception, BnormError)
    assert "missing.csv" in str(debug.exception)


def test_version() -> None:
    result = run(["--version"])
    assert result.stdout == f"bnorm {bnorm_cli.__version__}\n"
    assert result.stderr == ""


# -- inspect -----------------------------------------------------------------------------------
def test_inspect_table_and_json(tmp_path: Path, frame: pl.DataFrame) -> None:
    stats = tmp_path / "stats.json"
    fit(write(frame, tmp_path / "data.parquet"), stats, "-b", "7", "--momentum", "cumulative")
    table = run(["inspect", stats])
    assert table.stdout == ""  # the table is a report: stderr
    for c in NUMERIC:
        assert re.search(rf"^\s*{c}\s", table.stderr, re.MULTILINE), c
    assert "momentum cumulative" in table.stderr
    assert "batch size 7" in table.stderr
    as_json = run(["inspect", "--json", stats])
    assert as_json.stderr == ""
    assert json.loads(as_json.stdout) == json.loads(stats.read_text())


# -- statistics file validation ---------------------------------------------------------------
def _edit(path: Path, change: Any) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc))


@pytest.mark.parametrize(
    ("edit", "needles"),
    [
        (lambda d: d.update(version=2), ["stats.json", "version 2"]),
        (lambda d: d.update(format="something-else"), ["stats.json", "format"]),
        (lambda d: d["columns"]["a"].pop("running_var"), ["stats.json", "running_var"]),
        (lambda d: d["columns"]["a"].update(count=1), ["stats.json", '"a"']),
        (lambda d: d["columns"]["a"].update(var=-1.0), ["stats.json", "var"]),
        (lambda d: d.update(momentum=2), ["stats.json", "momentum"]),
        (lambda d: d.update(batch_size=0), ["stats.json", "batch_size"]),
    ],
)
def test_bad_statistics_file(
    tmp_path: Path, frame: pl.DataFrame, edit: Any, needles: list[str]
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    fit(data, stats)
    _edit(stats, edit)
    out = tmp_path / "out.parquet"
    for command in (["transform", data, "-s", stats, "-o", out], ["inspect", stats]):
        result = run(command, code=1)
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1  # one line
        for needle in needles:
            assert needle in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    "content", ["{", '{"format": "bnorm-stats", "version": 1', "", "[]", "NaN", "\xff"]
)
def test_malformed_statistics_file(tmp_path: Path, frame: pl.DataFrame, content: str) -> None:
    data = write(frame, tmp_path / "data.csv")
    stats = tmp_path / "stats.json"
    stats.write_bytes(content.encode("latin-1"))
    out = tmp_path / "out.csv"
    result = run(["transform", data, "-s", stats, "-o", out], code=1)
    assert "stats.json" in result.stderr and result.stdout == ""
    assert not out.exists()
    assert leftovers(tmp_path) == []
    assert "stats.json" in run(["inspect", stats], code=1).stderr


def test_missing_statistics_file(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.csv")
    result = run(["transform", data, "-s", tmp_path / "nope.json", "-o", "-"], code=1)
    assert "nope.json" in result.stderr and "bnorm fit" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_fitted_column_missing_at_transform(tmp_path: Path, frame: pl.DataFrame, fmt: str) -> None:
    fit(write(frame, tmp_path / f"data.{fmt}"), tmp_path / "stats.json")
    data = write(frame.drop("big"), tmp_path / f"new.{fmt}")
    out = tmp_path / f"out.{fmt}"
    result = run(["transform", data, "-s", tmp_path / "stats.json", "-o", out], code=1)
    assert '"big"' in result.stderr and "missing" in result.stderr and "new." in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_fitted_column_now_text_at_transform(tmp_path: Path, frame: pl.DataFrame, fmt: str) -> None:
    fit(write(frame, tmp_path / f"data.{fmt}"), tmp_path / "stats.json")
    retyped = frame.with_columns(pl.format("v{}", pl.col("b")).alias("b"))
    data = write(retyped, tmp_path / f"new.{fmt}")
    out = tmp_path / f"out.{fmt}"
    result = run(["transform", data, "-s", tmp_path / "stats.json", "-o", out], code=1)
    assert '"b"' in result.stderr and "String" in result.stderr and "new." in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


def test_csv_text_in_a_fitted_column_after_the_first_block(
    tmp_path: Path, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 400)
    fit(write(frame, tmp_path / "data.csv"), tmp_path / "stats.json")
    b = frame["b"].cast(pl.String).to_list()
    b[N - 2] = "oops"
    data = write(frame.with_columns(pl.Series("b", b)), tmp_path / "new.csv")
    out = tmp_path / "out.csv"
    result = run(["transform", data, "-s", tmp_path / "stats.json", "-o", out], code=1)
    assert '"b"' in result.stderr and "oops" in result.stderr and "new.csv" in result.stderr
    assert not out.exists() and leftovers(tmp_path) == []


# -- usage errors (exit 2) ---------------------------------------------------------------------
@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--momentum", "1.5"], "--momentum"),
        (["--momentum", "-0.1"], "--momentum"),
        (["--momentum", "fast"], "--momentum"),
        (["--batch-size", "0"], "--batch-size"),
        (["-b", "-3"], "--batch-size"),
        (["-b", "many"], "batch-size"),
        (["--eps", "-1"], "--eps"),
        (["--eps", "nan"], "--eps"),
        (["-c", "bigg"], 'did you mean "big"'),
        (["-c", "a,nmae"], 'did you mean "name"'),
        (["-x", "cnst"], 'did you mean "const"'),
        (["-c", "name"], "not numeric"),
        (["--gamma", "a=x"], "--gamma"),
        (["--beta", "bb=1"], 'did you mean "b"'),
        (["--input-format", "xlsx"], "xlsx"),
        (["--report", "r.txt"], "--report"),
        (["--inf", "ignore"], "--inf"),
    ],
)
def test_fit_usage_errors(
    tmp_path: Path, frame: pl.DataFrame, options: list[str], needle: str
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    stats = tmp_path / "stats.json"
    result = run(["fit", data, "-s", stats, *options], code=2)
    assert needle in result.stderr
    assert result.stdout == ""
    assert not stats.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["-o", "out.xlsx"], "--output-format"),
        (["-o", "out.csv", "--output-format", "json"], "json"),
        (["-o", "out.csv", "--use", "batch"], "--use"),
        (["-o", "out.csv", "--dtype", "float16"], "--dtype"),
        (["-o", "out.csv", "-c", "bigg"], 'did you mean "big"'),
        (["-o", "out.csv", "--gamma", "bigg=2"], 'did you mean "big"'),
        (["-o", "out.csv", "-b", "0"], "--batch-size"),
        ([], "--output"),
    ],
)
def test_transform_usage_errors(
    tmp_path: Path,
    frame: pl.DataFrame,
    options: list[str],
    needle: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    fit(data, tmp_path / "stats.json")
    monkeypatch.chdir(tmp_path)
    result = run(["transform", "data.parquet", "-s", "stats.json", *options], code=2)
    assert needle in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.parquet", "stats.json"]


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        (["--mode", "population"], "--mode"),
        (["--momentum", "2"], "--momentum"),
        (["-b", "0"], "--batch-size"),
    ],
)
def test_normalize_usage_errors(
    tmp_path: Path, frame: pl.DataFrame, options: list[str], needle: str
) -> None:
    data = write(frame, tmp_path / "data.parquet")
    out = tmp_path / "out.parquet"
    result = run(["normalize", data, "-o", out, *options], code=2)
    assert needle in result.stderr
    assert not out.exists()


def test_stdin_given_twice(tmp_path: Path) -> None:
    result = run(["fit", "-", "-", "-s", tmp_path / "s.json"], code=2, stdin=b"a\n1\n")
    assert "stdin" in result.stderr


def test_no_arguments_shows_help() -> None:
    result = runner.invoke(app, [])
    assert result.exit_code in (0, 2)
    assert "fit" in result.stdout + result.stderr


# -- outputs are safe: never onto an input, nothing partial on failure -----------------------------
@pytest.mark.parametrize(
    "command",
    [
        ["transform", "data.csv", "-s", "stats.json", "-o", "data.csv"],
        ["transform", "data.csv", "-s", "stats.json", "-o", "./sub/../data.csv"],
        ["transform", "data.csv", "-s", "stats.json", "-o", "link.csv"],
        ["transform", "data.csv", "-s", "stats.json", "-o", "stats.json", "--output-format", "csv"],
        ["fit", "data.csv", "-s", "data.csv"],
        ["fit", "other.csv", "data.csv", "-s", "link.csv"],
        ["normalize", "data.csv", "-o", "data.csv"],
        ["normalize", "data.csv", "-o", "out.csv", "-s", "./data.csv"],
    ],
)
def test_never_writes_onto_an_input(
    tmp_path: Path, frame: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, command: list[str]
) -> None:
    data = write(frame, tmp_path / "data.csv")
    write(frame, tmp_path / "other.csv")
    fit(data, tmp_path / "stats.json")
    (tmp_path / "sub").mkdir()
    (tmp_path / "link.csv").symlink_to(data)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    monkeypatch.chdir(tmp_path)
    result = run(command, code=1)
    assert "input" in result.stderr
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    assert after == before  # nothing changed, nothing new (no out.csv, no temporary file)


@pytest.mark.parametrize("existing", [False, True])
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_failed_run_leaves_no_partial_output(
    tmp_path: Path, frame: pl.DataFrame, existing: bool, fmt: str
) -> None:
    data = write(frame, tmp_path / f"data.{fmt}")
    stats = tmp_path / "stats.json"
    fit(data, stats)
    a = frame["a"].to_list()
    a[N - 1] = math.inf  # in the last batch: earlier batches were already written
    bad = write(frame.with_columns(pl.Series("a", a, dtype=pl.Float64)), tmp_path / f"bad.{fmt}")
    out = tmp_path / f"out.{fmt}"
    report = tmp_path / "report.md"
    if existing:
        out.write_bytes(b"previous")
    options = ["-b", "5", "--report", report]
    for command in (
        ["transform", bad, "-s", stats, "-o", out, *options],
        ["normalize", bad, "-o", out, *options, "-x", "zip", "-s", tmp_path / "new.json"],
        ["fit", bad, "-s", tmp_path / "new.json", *options],
    ):
        result = run(command, code=1)
        assert '"a"' in result.stderr and f"row {N}" in result.stderr and "batch 5" in result.stderr
        assert out.exists() == existing
        if existing:
            assert out.read_bytes() == b"previous"
        assert not (tmp_path / "new.json").exists()
        assert not report.exists()
        assert leftovers(tmp_path) == []


def test_output_directory_missing(tmp_path: Path, frame: pl.DataFrame) -> None:
    data = write(frame, tmp_path / "data.csv")
    result = run(["normalize", data, "-o", tmp_path / "nope" / "out.csv"], code=1)
    assert "nope" in result.stderr and "does not exist" in result.stderr


@pytest.mark.parametrize(
    ("content", "needle"),
    [(b"", "empty"), (b"a,b\n1,2\n3\n", "data.csv"), (b"a\n\xff\xfe\n", "UTF-8")],
)
def test_bad_csv_input(tmp_path: Path, content: bytes, needle: str) -> None:
    data = tmp_path / "data.csv"
    data.write_bytes(content)
    result = run(["fit", data, "-s", tmp_path / "s.json"], code=1)
    assert needle in result.stderr and result.stderr.count("\n") == 1
    assert not (tmp_path / "s.json").exists()


def test_bad_parquet_input(tmp_path: Path) -> None:
    data = tmp_path / "data.parquet"
    data.write_bytes(b"PAR1 not really")
    result = run(["fit", data, "-s", tmp_path / "s.json"], code=1)
    assert "data.parquet" in result.stderr and "Parquet" in result.stderr


# -- help ---------------------------------------------------------------------------------------
def _flat(text: str) -> str:
    """Help text without Rich's boxes and line wrapping."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.mark.parametrize(
    ("command", "needles"),
    [
        ([], ["fit", "transform", "normalize", "inspect", "export", "--version"]),
        (
            ["fit"],
            [
                *("--stats", "--batch-size", "--momentum", "--eps", "--columns", "--exclude"),
                *("--gamma", "--beta", "--input-format", "--inf", "--report", "--quiet"),
                *("--debug", "every numeric column", "csv for -", "cumulative"),
            ],
        ),
        (
            ["transform"],
            [
                *("--stats", "--output", "--use", "population", "running", "--inverse"),
                *("--eps", "--columns", "--exclude", "--gamma", "--beta", "--dtype"),
                *("--input-format", "--output-format", "float32", "--report", "--quiet"),
            ],
        ),
        (
            ["normalize"],
            [
                *("--output", "--mode", "batch", "running", "--stats", "--batch-size"),
                *("--momentum", "--dtype", "--gamma", "--beta", "--output-format"),
            ],
        ),
        (["inspect"], ["--json", "Statistics file"]),
        (["export"], ["--to", "torch", "sklearn", "--output", "--columns"]),
    ],
)
def test_help(command: list[str], needles: list[str]) -> None:
    for flag in ("--help", "-h"):
        result = run([*command, flag])
        text = _flat(result.stdout)
        for needle in needles:
            assert needle in text, needle
        assert result.stderr == ""
