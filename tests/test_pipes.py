"""`bnorm` as a real process in a shell pipeline: `python -m bnorm_cli ...`.

stdin and stdout are real pipes here (not seekable, closed early by `head`),
stderr is not a terminal: what users of `bnorm ... -o - | next-tool` see.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

BNORM = [sys.executable, "-m", "bnorm_cli"]
TIMEOUT = 60


def bnorm(
    args: Sequence[str | Path], stdin: bytes | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*BNORM, *map(str, args)],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=TIMEOUT,
        check=False,
    )


def in_process(args: Sequence[str | Path]) -> None:
    """Set-up and expected outputs, computed without a subprocess."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.stderr


def piped(
    producer: Sequence[str | Path], consumer: Sequence[str | Path]
) -> tuple[subprocess.CompletedProcess[bytes], bytes, bytes]:
    """Run ``producer | consumer``; return the consumer's result and the producer's stdout/stderr.

    ``producer`` gets no pipe of ours on stdout: its reader is ``consumer``.
    """
    first = subprocess.Popen(list(map(str, producer)), stdout=subprocess.PIPE)
    second = subprocess.Popen(
        list(map(str, consumer)),
        stdin=first.stdout,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert first.stdout is not None
    first.stdout.close()  # only the consumer holds the read end now
    out, err = second.communicate(timeout=TIMEOUT)
    assert first.wait(timeout=TIMEOUT) == 0
    done = subprocess.CompletedProcess(second.args, second.returncode, out, err)
    return done, out, err


def make_frame(n: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(5.0, 2.0, n)
    a[::11] = np.nan
    return pl.DataFrame(
        {
            "id": [f"{i:06d}" for i in range(n)],
            "a": a,
            "b": rng.integers(-1000, 1000, n),
            "note": ["x, y" if i % 3 else 'say "hi"' for i in range(n)],
        }
    )


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    """A small CSV and its statistics file (fitted in-process, batch size 7)."""
    data = tmp_path / "data.csv"
    make_frame(40).write_csv(data)
    stats = tmp_path / "stats.json"
    in_process(["fit", data, "-s", stats, "-x", "id", "-b", "7", "-q"])
    return data, stats


def assert_clean(stderr: bytes) -> None:
    text = stderr.decode()
    assert "Traceback" not in text
    assert "Exception ignored" not in text
    assert "BrokenPipe" not in text
    assert "\x1b[" not in text  # stderr is not a terminal: no colours, no progress bar


def test_module_help() -> None:
    done = bnorm(["--help"])
    assert done.returncode == 0
    for command in (b"fit", b"transform", b"normalize", b"inspect", b"--version"):
        assert command in done.stdout
    assert done.stderr == b""


def test_cat_into_transform_to_stdout(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, stats = small
    expected = tmp_path / "expected.csv"
    in_process(["transform", data, "-s", stats, "-o", expected, "-q"])

    done, out, err = piped(["cat", data], [*BNORM, "transform", "-", "-s", stats, "-o", "-"])
    assert done.returncode == 0, err
    assert out == expected.read_bytes()  # nothing but the data on stdout
    assert_clean(err)
    report = err.decode()
    assert "bnorm transform: <stdin>" in report
    assert "40 rows" in report

    done, out, err = piped(["cat", data], [*BNORM, "transform", "-", "-s", stats, "-o", "-", "-q"])
    assert done.returncode == 0
    assert out == expected.read_bytes()
    assert err == b""


def test_parquet_through_pipes(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, stats = small
    frame = pl.read_csv(data, schema_overrides={"id": pl.String})
    source = tmp_path / "data.parquet"
    frame.write_parquet(source)
    expected = tmp_path / "expected.parquet"
    in_process(["transform", source, "-s", stats, "-o", expected, "-q"])
    args = ["--input-format", "parquet", "--output-format", "parquet", "-q"]
    done, out, err = piped(
        ["cat", source], [*BNORM, "transform", "-", "-s", stats, "-o", "-", *args]
    )
    assert done.returncode == 0, err
    assert err == b""
    assert_frame_equal(pl.read_parquet(io.BytesIO(out)), pl.read_parquet(expected))


@pytest.mark.parametrize("mode", ["batch", "running"])
def test_normalize_stdin_to_stdout(tmp_path: Path, mode: str) -> None:
    data = tmp_path / "data.csv"
    make_frame(40).write_csv(data)
    options = ["--mode", mode, "-b", "7", "-x", "id"]
    expected = tmp_path / "expected.csv"
    in_process(["normalize", data, "-o", expected, "-q", *options])
    saved = tmp_path / "saved.json"
    done = bnorm(["normalize", "-", "-o", "-", "-s", saved, *options], stdin=data.read_bytes())
    assert done.returncode == 0, done.stderr
    assert done.stdout == expected.read_bytes()
    assert_clean(done.stderr)
    assert f"bnorm normalize --mode {mode}" in done.stderr.decode()
    assert json.loads(saved.read_text())["rows"] == 40


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CSV whose output is far larger than a pipe buffer (about 1.5 MB)."""
    directory = tmp_path_factory.mktemp("big")
    data = directory / "big.csv"
    make_frame(40_000, seed=1).write_csv(data)
    stats = directory / "stats.json"
    in_process(["fit", data, "-s", stats, "-x", "id", "-q"])
    return data, stats


def test_head_closes_the_pipe_early(big: tuple[Path, Path]) -> None:
    data, stats = big
    command = [*BNORM, "transform", data, "-s", stats, "-o", "-", "-b", "1000"]
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    head = subprocess.Popen(["head", "-n", "2"], stdin=first.stdout, stdout=subprocess.PIPE)
    assert first.stdout is not None
    first.stdout.close()
    lines, _ = head.communicate(timeout=TIMEOUT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert (first.returncode, err) == (0, b"")
    assert lines.decode().splitlines()[0] == "id,a,b,note"
    assert len(lines.splitlines()) == 2
    assert_clean(err)  # quietly: no traceback, no "Exception ignored", no report
    assert err == b""


def test_head_closes_a_parquet_pipe_early(big: tuple[Path, Path]) -> None:
    data, stats = big
    command = [*BNORM, "transform", data, "-s", stats, "-o", "-", "--output-format", "parquet"]
    first = subprocess.Popen(
        [*command, "-b", "1000", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    head = subprocess.Popen(["head", "-c", "100"], stdin=first.stdout, stdout=subprocess.PIPE)
    assert first.stdout is not None
    first.stdout.close()
    start, _ = head.communicate(timeout=TIMEOUT)
    _, err = first.communicate(timeout=TIMEOUT)
    assert (first.returncode, err) == (0, b"")
    assert start.startswith(b"PAR1")


def test_errors_are_one_line_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(10).write_csv(data)
    args = ["transform", data, "-s", tmp_path / "nope.json", "-o", "-"]
    done = bnorm(args)
    assert done.returncode == 1
    assert done.stdout == b""
    assert done.stderr.decode().count("\n") == 1
    assert "nope.json" in done.stderr.decode()
    assert_clean(done.stderr)

    debug = bnorm([*args, "--debug"])
    assert debug.returncode == 1
    assert debug.stdout == b""
    assert "Traceback" in debug.stderr.decode()
    assert "nope.json" in debug.stderr.decode()


def test_usage_error_exit_code(tmp_path: Path) -> None:
    data = tmp_path / "data.csv"
    make_frame(10).write_csv(data)
    done = bnorm(["fit", data, "-s", tmp_path / "s.json", "--momentum", "2"])
    assert done.returncode == 2
    assert b"--momentum" in done.stderr
    assert_clean(done.stderr)
    assert not (tmp_path / "s.json").exists()
