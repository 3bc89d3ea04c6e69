"""Interrupted runs, as real processes: signals, a reader that goes away, a full disk.

design.md §4: a failed run leaves no partial output file. bnorm writes to a hidden
``.NAME.bnorm-*.tmp`` beside the target and renames it into place at the end, so
an interrupted run leaves the target absent or exactly as it was. SIGINT and
SIGTERM also remove the temporary file and exit quietly (130, 143); SIGKILL
cannot be caught and may leave only the hidden temporary file.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

BNORM = [sys.executable, "-m", "bnorm_cli"]
TIMEOUT = 120
PREVIOUS = b"previous output, must survive\n"
ROWS = 3_000_000  # about 130 MB of CSV output: writing takes a few seconds


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A large Parquet input, the same rows as CSV (a third of them), and their statistics."""
    directory = tmp_path_factory.mktemp("interrupts")
    rng = np.random.default_rng(7)
    frame = pl.DataFrame(
        {
            "i": np.arange(ROWS),
            "x": rng.normal(3.0, 2.0, ROWS),
            "tag": pl.Series(np.array(["ab", "c,d", ""])[rng.integers(0, 3, ROWS)]),
        }
    )
    parquet = directory / "big.parquet"
    frame.write_parquet(parquet)
    csv = directory / "big.csv"
    frame.head(ROWS // 3).write_csv(csv)
    stats = directory / "stats.json"
    result = CliRunner().invoke(app, ["fit", str(parquet), "-s", str(stats), "-q"])
    assert result.exit_code == 0, result.stderr
    return parquet, csv, stats


def temporaries(directory: Path, target: str) -> list[Path]:
    return sorted(directory.glob(f".{target}.bnorm-*.tmp"))


def start(
    args: Sequence[str | Path], cwd: Path, stdin: int | None = None
) -> subprocess.Popen[bytes]:
    def child() -> None:  # a shell may have started the test run with SIGINT ignored
        signal.signal(signal.SIGINT, signal.SIG_DFL)

    return subprocess.Popen(
        [*BNORM, *map(str, args)],
        cwd=cwd,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=child,
    )


def wait_for_temporary(process: subprocess.Popen[bytes], directory: Path, target: str) -> Path:
    """Block until the temporary output exists and holds data: the run is mid-write."""
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        found = temporaries(directory, target)
        if found and found[0].stat().st_size > 0:
            return found[0]
        if process.poll() is not None:
            _, err = process.communicate()
            pytest.fail(f"finished before the signal (exit {process.returncode}): {err!r}")
        time.sleep(0.01)
    process.kill()
    pytest.fail("no temporary output appeared")


def assert_no_traceback(stderr: bytes) -> None:
    text = stderr.decode(errors="replace")
    assert "Traceback" not in text, text
    assert "Exception ignored" not in text, text
    assert "terminate called" not in text, text


# -- signals ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("sig", "code", "source", "target", "existing"),
    [
        (signal.SIGINT, 130, "parquet", "out.csv", False),
        (signal.SIGINT, 130, "parquet", "out.csv", True),
        (signal.SIGTERM, 143, "parquet", "out.csv", False),
        (signal.SIGTERM, 143, "parquet", "out.csv", True),
        (signal.SIGKILL, -signal.SIGKILL, "parquet", "out.csv", False),
        (signal.SIGKILL, -signal.SIGKILL, "parquet", "out.csv", True),
        (signal.SIGINT, 130, "csv", "out.parquet", True),
        (signal.SIGTERM, 143, "csv", "out.parquet", False),
    ],
    ids=[
        "SIGINT-new-target",
        "SIGINT-existing-target",
        "SIGTERM-new-target",
        "SIGTERM-existing-target",
        "SIGKILL-new-target",
        "SIGKILL-existing-target",
        "SIGINT-csv-to-parquet-existing-target",
        "SIGTERM-csv-to-parquet-new-target",
    ],
)
def test_signal_while_writing_leaves_the_target_intact(
    big: tuple[Path, Path, Path],
    tmp_path: Path,
    sig: signal.Signals,
    code: int,
    source: str,
    target: str,
    existing: bool,
) -> None:
    parquet, csv, stats = big
    data = parquet if source == "parquet" else csv
    out = tmp_path / target
    if existing:
        out.write_bytes(PREVIOUS)
    process = start(["transform", data, "-s", stats, "-o", out, "-q"], tmp_path)
    wait_for_temporary(process, tmp_path, target)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == code, stderr
    assert stdout == b""
    if existing:
        assert out.read_bytes() == PREVIOUS
    else:
        assert not out.exists()
    assert_no_traceback(stderr)
    if sig == signal.SIGKILL:  # cannot be caught: a hidden temporary file may stay behind
        for leftover in temporaries(tmp_path, target):
            leftover.unlink()
    else:  # caught: the temporary file is removed and the exit is quiet
        assert temporaries(tmp_path, target) == []
        assert stderr == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ([target] if existing else [])


def wait_until_open(process: subprocess.Popen[bytes], path: Path) -> None:
    """Block until the process has opened ``path``: imports are done, the pass has begun."""
    fds = Path(f"/proc/{process.pid}/fd")
    if not fds.is_dir():
        process.kill()
        pytest.skip("needs /proc to see the open files of a process")
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        for fd in fds.glob("*"):
            try:
                if os.readlink(fd) == str(path):
                    return
            except OSError:  # closed meanwhile
                continue
        if process.poll() is not None:
            pytest.fail(f"finished before the signal (exit {process.returncode})")
        time.sleep(0.01)
    process.kill()
    pytest.fail(f"{path} was never opened")


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_during_fit_keeps_the_old_statistics(
    big: tuple[Path, Path, Path], tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """fit writes its file only at the end: interrupted, the old statistics stay."""
    parquet, _, _ = big
    stats = tmp_path / "stats.json"
    stats.write_bytes(PREVIOUS)
    # batches of one row: the running statistics take seconds of work after the input opens
    process = start(["fit", parquet, "-s", stats, "-q", "-b", "1"], tmp_path)
    wait_until_open(process, parquet)
    time.sleep(0.2)
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == code, stderr
    assert stderr == b""
    assert stats.read_bytes() == PREVIOUS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]


@pytest.mark.parametrize(
    ("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"]
)
def test_signal_while_waiting_for_input_on_a_pipe(
    big: tuple[Path, Path, Path], tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    """Blocked inside pyarrow, waiting for more input, bnorm still stops at once."""
    _, csv, _ = big
    process = start(["normalize", "-", "-o", "out.csv", "-q"], tmp_path, stdin=subprocess.PIPE)
    assert process.stdin is not None
    with csv.open("rb") as f:
        process.stdin.write(f.read(1 << 20))  # returns once bnorm has read most of it
    process.stdin.flush()
    time.sleep(0.3)
    process.send_signal(sig)
    try:
        got: int | None = process.wait(timeout=3)
    except subprocess.TimeoutExpired:
        got = None
    _, stderr = process.communicate(timeout=TIMEOUT)  # closes stdin: end of input, it stops
    assert_no_traceback(stderr)
    assert os.listdir(tmp_path) == []  # no output, no temporary file
    assert got == code, f"still running 3 s after {sig.name}"
    assert stderr == b""


# -- the reader of stdout goes away -------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_stdout_closed_before_anything_is_read(
    big: tuple[Path, Path, Path], tmp_path: Path, fmt: str
) -> None:
    parquet, _, stats = big
    process = start(
        ["transform", parquet, "-s", stats, "-o", "-", "--output-format", fmt, "-q"], tmp_path
    )
    assert process.stdout is not None
    process.stdout.close()  # like `| head -c 0`, or a consumer that crashed
    _, stderr = process.communicate(timeout=TIMEOUT)
    assert process.returncode == 0, stderr
    assert stderr == b""
    assert os.listdir(tmp_path) == []


def test_shell_pipe_into_head(big: tuple[Path, Path, Path], tmp_path: Path) -> None:
    _, csv, _ = big
    command = " ".join(
        [*map(str, BNORM), "normalize", "-", "-o", "-", "-b", "1000", "<", str(csv), "| head -n 3"]
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr  # pipefail: bnorm itself exited 0
    assert done.stdout.decode().splitlines()[0] == "i,x,tag"
    assert len(done.stdout.splitlines()) == 3
    assert_no_traceback(done.stderr)


# -- the disk fills up --------------------------------------------------------------------------
FILE_SIZE_LIMIT = 1 << 20  # 1 MiB: the output is far larger


def _limited_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write then fails with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE_LIMIT, FILE_SIZE_LIMIT))


@pytest.mark.parametrize("existing", [False, True], ids=["new-target", "existing-target"])
@pytest.mark.parametrize(
    ("command", "target"),
    [
        (["transform", "{parquet}", "-s", "{stats}", "-o", "out.csv"], "out.csv"),
        (["transform", "{parquet}", "-s", "{stats}", "-o", "out.parquet"], "out.parquet"),
        (["normalize", "{csv}", "-o", "out.csv", "-s", "new.json"], "out.csv"),
    ],
    ids=["csv", "parquet", "normalize-csv"],
)
def test_full_disk_fails_cleanly(
    big: tuple[Path, Path, Path],
    tmp_path: Path,
    command: list[str],
    target: str,
    existing: bool,
) -> None:
    parquet, csv, stats = big
    out = tmp_path / target
    if existing:
        out.write_bytes(PREVIOUS)
    args = [a.format(parquet=parquet, csv=csv, stats=stats) for a in command]
    done = subprocess.run(
        [*BNORM, *args, "-q"],
        cwd=tmp_path,
        capture_output=True,
        timeout=TIMEOUT,
        check=False,
        preexec_fn=_limited_file_size,
    )
    stderr = done.stderr.decode()
    assert done.returncode == 1, stderr
    assert_no_traceback(done.stderr)
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert target in lines[0] and "File too large" in lines[0], lines[0]
    assert done.stdout == b""
    assert sorted(p.name for p in tmp_path.iterdir()) == ([target] if existing else [])
    if existing:
        assert out.read_bytes() == PREVIOUS


DASK_LOCAL = ["--engine", "dask", "--workers", "2"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_a_local_dask_run_is_quiet(
    big: tuple[Path, Path, Path], tmp_path: Path, sig: signal.Signals
) -> None:
    """Stopped while its local cluster works, a --engine dask run exits at once and
    says nothing: not multiprocessing's "leaked semaphore objects" from its tracker."""
    pytest.importorskip("distributed")
    parquet, _, _ = big
    stats = tmp_path / "stats.json"
    env = {**os.environ, "TMPDIR": str(tmp_path)}  # the cluster's scratch space shows here
    process = subprocess.Popen(
        [*BNORM, "fit", str(parquet), "-s", str(stats), "-q", "-b", "7", *DASK_LOCAL],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + TIMEOUT
    while not list(tmp_path.glob("bnorm-dask-*/**/worker-*")) and time.monotonic() < deadline:
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    time.sleep(1.0)  # the workers are up and reading
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=TIMEOUT)
    time.sleep(0.5)  # the tracker, a process of its own, would print as it ends
    assert process.returncode == (130 if sig == signal.SIGINT else 143), stderr
    assert stderr == b"", stderr.decode(errors="replace")
    assert not stats.exists()
