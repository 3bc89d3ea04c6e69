"""One conformance suite for every engine: the serial engine and the Dask engine
(a local cluster of two worker processes on 127.0.0.1, started once for this
module and stopped at its end) write the same statistics file bytes and the
same output values, and fail with the same messages.

The Dask engine's tasks are cut small here (`SPAN_ROWS`) so that a few thousand
rows make many spans, computed on different workers and folded on the client.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.engines import dask_engine

runner = CliRunner()
ENGINES = ["serial", "dask"]


@pytest.fixture(scope="module")
def scheduler() -> Iterator[str]:
    from distributed import LocalCluster

    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",  # None still binds :8787
    )
    try:
        yield cluster.scheduler_address
    finally:
        cluster.close()


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The options that select the engine (the Dask one with small tasks)."""
    if request.param == "serial":
        return []
    monkeypatch.setattr(dask_engine, "SPAN_ROWS", 1500)
    return ["--engine", "dask", "--scheduler", request.getfixturevalue("scheduler")]


def run(args: list[Any], code: int = 0) -> Any:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr, result.exception)
    assert "Traceback" not in result.stderr
    return result


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], pl.DataFrame]:
    """Three Parquet files with uneven row groups: NaN, nulls, a jump, an offset."""
    tmp = tmp_path_factory.mktemp("engines")
    rng = np.random.default_rng(3)
    frames, paths = [], []
    for i, (rows, group) in enumerate([(2000, 300), (7, 7), (3001, 1000)]):
        x = rng.normal(1e9, 1e-3, rows)
        x[::13] = np.nan
        k = [None if j % 11 == 3 else int(v) for j, v in enumerate(rng.integers(-50, 50, rows))]
        frame = pl.DataFrame(
            {
                "x": x,
                "t": [f"r{i}-{j}" for j in range(rows)],
                "k": pl.Series(k, dtype=pl.Int64),
                "j": np.concatenate([np.zeros(rows // 2), np.full(rows - rows // 2, 1e9)]),
            }
        )
        path = tmp / f"part-{i}.parquet"
        pq.write_table(frame.to_arrow(), path, row_group_size=group)
        frames.append(frame)
        paths.append(path)
    return paths, pl.concat(frames)


def read_output(path: Path) -> pl.DataFrame:
    if path.is_dir():
        return pl.read_parquet(sorted(path.glob("part-*.parquet")))
    return pl.read_parquet(path)


def serial_reference(tmp: Path, paths: list[Path], *args: Any) -> Path:
    out = tmp / "serial-reference.parquet"
    run([*args[:1], *paths, *args[1:], "-o", out, "-q"])
    return out


@pytest.mark.parametrize(
    "options",
    [
        ["-b", "7"],
        ["-b", "1000", "--momentum", "cumulative"],
        ["-b", "65536", "-x", "k"],
        ["-b", "7", "--scale", "range", "--range", "-1,1"],
        ["-b", "64", "--scale", "maxabs", "--center", "mean"],
    ],
)
def test_fit(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], engine: list[str], options: list[str]
) -> None:
    paths, _ = dataset
    serial, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    run(["fit", *paths, "-s", serial, *options, "-q"])
    run(["fit", *paths, "-s", stats, *options, "-q", *engine])
    assert stats.read_text() == serial.read_text()


def test_fit_update(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], engine: list[str]
) -> None:
    paths, _ = dataset
    serial, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    for target, extra in ((serial, []), (stats, engine)):
        run(["fit", paths[0], "-s", target, "-b", "64", "-q", *extra])
        run(["fit", *paths[1:], "-s", target, "--update", "-q", *extra])
    assert stats.read_text() == serial.read_text()


@pytest.mark.parametrize(
    ("options", "scaling"),
    [
        (["--use", "population"], []),
        (["--use", "running", "--dtype", "float32"], []),
        (["--inverse"], []),
        (["--dtype", "same"], ["--scale", "range"]),
        (["--inverse"], ["--scale", "maxabs"]),
    ],
)
def test_transform(
    tmp_path: Path,
    dataset: tuple[list[Path], pl.DataFrame],
    engine: list[str],
    options: list[str],
    scaling: list[str],
) -> None:
    paths, whole = dataset
    stats = tmp_path / "stats.json"
    run(["fit", *paths, "-s", stats, "-b", "100", "-q", *scaling])
    expected = serial_reference(tmp_path, paths, "transform", "-s", stats, *options)
    out = tmp_path / ("out" if engine else "out.parquet")
    run(["transform", *paths, "-s", stats, "-o", out, *options, "-q", *engine])
    got = read_output(out)
    assert got.height == whole.height and got.columns == whole.columns
    assert_frame_equal(got, read_output(expected))


@pytest.mark.parametrize(
    "mode",
    [
        ["batch"],
        ["running"],
        ["batch", "--scale", "range"],
        ["batch", "--center", "none"],
        ["renorm"],
    ],
)
def test_normalize(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], engine: list[str], mode: list[str]
) -> None:
    paths, _ = dataset
    serial_stats, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    expected = serial_reference(
        tmp_path, paths, "normalize", "--mode", *mode, "-b", "64", "-s", serial_stats
    )
    out = tmp_path / ("out" if engine else "out.parquet")
    run(["normalize", *paths, "-o", out, "--mode", *mode, "-b", "64", "-s", stats, "-q", *engine])
    assert_frame_equal(read_output(out), read_output(expected))
    assert stats.read_text() == serial_stats.read_text()


@pytest.mark.parametrize("command", ["fit", "batch", "running"])
def test_weighted(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], engine: list[str], command: str
) -> None:
    """--weight j (weights 0 and 1e9): the same statistics and output on every engine."""
    paths, _ = dataset
    serial_stats, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    weighted = ["-b", "64", "--weight", "j", "-s"]
    if command == "fit":
        run(["fit", *paths, *weighted, serial_stats, "-q"])
        run(["fit", *paths, *weighted, stats, "-q", *engine])
    else:
        mode = ["normalize", "--mode", command]
        expected = serial_reference(tmp_path, paths, *mode, *weighted, serial_stats)
        out = tmp_path / ("out" if engine else "out.parquet")
        run([*mode[:1], *paths, *mode[1:], "-o", out, *weighted, stats, "-q", *engine])
        assert_frame_equal(read_output(out), read_output(expected))
    assert stats.read_text() == serial_stats.read_text()
    assert json.loads(stats.read_text())["weight"] == "j"


def test_bad_weights_fail_alike(tmp_path: Path, engine: list[str]) -> None:
    frame = pl.DataFrame({"x": np.arange(5000, dtype=np.float64), "w": np.ones(5000)})
    frame[4321, "w"] = -2.0
    path = tmp_path / "w.parquet"
    pq.write_table(frame.to_arrow(), path, row_group_size=700)
    failed = run(["fit", path, "-s", tmp_path / "s.json", "-b", "100", "--weight", "w", *engine], 1)
    assert "batch 44:" in failed.stderr and "row 4322" in failed.stderr
    assert "negative" in failed.stderr and len(failed.stderr.strip().splitlines()) == 1


def test_dask_refuses_median_and_iqr(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], scheduler: str
) -> None:
    paths, _ = dataset
    dask = ["--engine", "dask", "--scheduler", scheduler]
    for cmd in (
        ["fit", *paths, "-s", tmp_path / "s.json"],
        ["normalize", *paths, "-o", tmp_path / "o"],
    ):
        for choice in (["--scale", "iqr"], ["--center", "median"]):
            result = run([*cmd, *choice, *dask], 2)
            assert "--engine dask: a median or IQR needs exact quantiles" in result.stderr
    assert not (tmp_path / "s.json").exists() and not (tmp_path / "o").exists()


def test_arrow_ipc_file(tmp_path: Path, engine: list[str]) -> None:
    frame = pl.DataFrame({"x": np.random.default_rng(1).normal(5, 2, 3000), "t": ["a"] * 3000})
    path = tmp_path / "in.arrow"
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, frame.to_arrow().schema) as w:
        w.write_table(frame.to_arrow(), max_chunksize=700)
    serial, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    run(["fit", path, "-s", serial, "-b", "64", "-q"])
    run(["fit", path, "-s", stats, "-b", "64", "-q", *engine])
    assert stats.read_text() == serial.read_text()


def test_bad_values_fail_alike(tmp_path: Path, engine: list[str]) -> None:
    frame = pl.DataFrame({"x": np.arange(5000, dtype=np.float64)})
    frame[4321, "x"] = np.inf
    path = tmp_path / "inf.parquet"
    pq.write_table(frame.to_arrow(), path, row_group_size=700)
    stats = tmp_path / "s.json"
    failed = run(["fit", path, "-s", stats, "-b", "100", *engine], 1)
    assert "batch 44:" in failed.stderr and "row 4322" in failed.stderr
    assert not stats.exists()
    run(["fit", path, "-s", stats, "-b", "100", "--inf", "missing", "-q"])
    out = tmp_path / ("out" if engine else "out.parquet")
    again = run(["transform", path, "-s", stats, "-o", out, "--inf", "error", *engine], 1)
    assert "row 4322" in again.stderr
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if ".bnorm-" in p.name] == []


def test_dask_refuses_what_it_cannot_plan(tmp_path: Path, scheduler: str) -> None:
    path = tmp_path / "a.csv"
    path.write_text("x\n1\n2\n")
    dask = ["--engine", "dask", "--scheduler", scheduler]
    text = run(["fit", path, "-s", tmp_path / "s.json", *dask], 2)
    assert "Parquet or Arrow IPC" in text.stderr and "--engine serial" in text.stderr
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "a.parquet")
    run(["fit", tmp_path / "a.parquet", "-s", tmp_path / "s.json", "-q"])
    for output in ("-", tmp_path / "o.csv"):
        bad = run(
            ["transform", tmp_path / "a.parquet", "-s", tmp_path / "s.json", "-o", output, *dask], 2
        )
        assert "directory of Parquet parts" in bad.stderr
    drift = run(
        [
            "transform",
            tmp_path / "a.parquet",
            "-s",
            tmp_path / "s.json",
            "-o",
            tmp_path / "d",
            "--drift",
            *dask,
        ],
        2,
    )
    assert "--engine serial" in drift.stderr and not (tmp_path / "d").exists()
    alone = run(["fit", tmp_path / "a.parquet", "-s", tmp_path / "s.json", "--workers", "2"], 2)
    assert "--workers needs --engine dask" in alone.stderr


def test_output_dataset_is_published_whole(tmp_path: Path, scheduler: str) -> None:
    """Parts and _SUCCESS appear together; a non-empty target needs --overwrite, and
    even then only a bnorm dataset is replaced."""
    pq.write_table(pa.table({"x": [1.0, 2.0, 4.0]}), tmp_path / "a.parquet")
    stats = tmp_path / "s.json"
    run(["fit", tmp_path / "a.parquet", "-s", stats, "-q"])
    dask = ["--engine", "dask", "--scheduler", scheduler, "-q"]
    out = tmp_path / "out"
    transform = ["transform", tmp_path / "a.parquet", "-s", stats, "-o", out, *dask]
    run(transform)
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    first = (out / "part-00000.parquet").stat().st_mtime_ns
    refused = run(transform, 1)
    assert "--overwrite" in refused.stderr and "not empty" in refused.stderr
    assert (out / "part-00000.parquet").stat().st_mtime_ns == first  # untouched
    run([*transform, "--overwrite"])  # a second run replaces the first one's parts
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet"]
    (out / "notes.txt").write_text("mine")
    kept = run([*transform, "--overwrite"], 1)
    assert "notes.txt" in kept.stderr and "not part of a bnorm dataset" in kept.stderr
    assert (out / "notes.txt").read_text() == "mine"
    # bnorm refuses to read one of its datasets without the marker (still being written)
    (out / "notes.txt").unlink()
    (out / "_SUCCESS").unlink()
    partial = run(["fit", out, "-s", tmp_path / "t.json"], 1)
    assert "_SUCCESS" in partial.stderr
    assert [p.name for p in tmp_path.iterdir() if ".bnorm-" in p.name] == []


def test_dataset_reads_back_in_row_order(
    tmp_path: Path,
    dataset: tuple[list[Path], pl.DataFrame],
    scheduler: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """polars, pyarrow.dataset and DuckDB (if installed) read the parts in row order."""
    import pyarrow.dataset as pads

    monkeypatch.setattr(dask_engine, "SPAN_ROWS", 1500)
    paths, whole = dataset
    stats = tmp_path / "s.json"
    run(["fit", *paths, "-s", stats, "-b", "100", "-q"])
    out = tmp_path / "out"
    run(
        [
            "transform",
            *paths,
            "-s",
            stats,
            "-o",
            out,
            "-q",
            "--engine",
            "dask",
            "--scheduler",
            scheduler,
        ]
    )
    assert len(list(out.glob("part-*.parquet"))) > 1
    expected = whole["t"].to_list()
    assert pl.read_parquet(out / "*.parquet")["t"].to_list() == expected
    assert pl.scan_parquet(out).collect()["t"].to_list() == expected
    assert pads.dataset(out, format="parquet").to_table()["t"].to_pylist() == expected
    assert pq.read_table(out)["t"].to_pylist() == expected
    try:
        import duckdb
    except ImportError:  # an optional reader (bnorm[bench]); the others are checked
        return
    got = duckdb.sql(f"SELECT t FROM read_parquet('{out}/*.parquet')").fetchall()
    assert [r[0] for r in got] == expected


def test_hive_partitioned_directory(tmp_path: Path, engine: list[str]) -> None:
    """Partition folders' values are text columns, the same with both engines."""
    rng = np.random.default_rng(8)
    root = tmp_path / "ds"
    for i, folder in enumerate(
        ["y=2023/c=Oslo", "y=2023/c=S%C3%A3o", "y=__HIVE_DEFAULT_PARTITION__/c=x"]
    ):
        (root / folder).mkdir(parents=True)
        frame = pa.table({"x": rng.normal(1e9, 1e-3, 900 + i), "c": ["own"] * (900 + i)})
        pq.write_table(frame, root / folder / "part-0.parquet", row_group_size=250)
    serial, stats = tmp_path / "serial.json", tmp_path / "stats.json"
    run(["fit", root, "-s", serial, "-b", "64", "-q"])
    run(["fit", root, "-s", stats, "-b", "64", "-q", *engine])
    assert stats.read_text() == serial.read_text()
    expected = serial_reference(tmp_path, [root], "normalize", "--mode", "running", "-b", "64")
    out = tmp_path / ("out" if engine else "out.parquet")
    run(["normalize", root, "-o", out, "--mode", "running", "-b", "64", "-q", *engine])
    got = read_output(out)
    assert got.columns == ["x", "c", "y"] and got["c"].unique().to_list() == ["own"]
    assert got["y"].to_list() == ["2023"] * 1801 + [None] * 902
    assert_frame_equal(got, read_output(expected))


def test_unreachable_scheduler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """One line within the connect timeout, from --scheduler or DASK_SCHEDULER_ADDRESS."""
    import time

    monkeypatch.setattr(dask_engine, "CONNECT_TIMEOUT", "2s")
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "a.parquet")
    fit = ["fit", tmp_path / "a.parquet", "-s", tmp_path / "s.json", "--engine", "dask"]
    dead = f"tcp://127.0.0.1:{_free_port()}"
    started = time.monotonic()
    failed = run([*fit, "--scheduler", dead], 1)
    assert time.monotonic() - started < 10
    assert "cannot reach the Dask scheduler" in failed.stderr and dead in failed.stderr
    assert len(failed.stderr.strip().splitlines()) == 1
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", dead)
    from_env = run(fit, 1)
    assert f"DASK_SCHEDULER_ADDRESS={dead}: cannot reach" in from_env.stderr
    assert not (tmp_path / "s.json").exists()


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_against_dask_scheduler_and_worker_processes(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame]
) -> None:
    """`dask scheduler` and `dask worker` started as processes on 127.0.0.1; the bnorm
    command (a process too) reaches them by --scheduler and by DASK_SCHEDULER_ADDRESS."""
    import os
    import time

    from distributed import Client

    paths, _ = dataset
    dask_cli = str(Path(sys.executable).with_name("dask"))
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [
        subprocess.Popen(
            [dask_cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
            cwd=scratch,
            **quiet,  # type: ignore[call-overload]
        )
    ]
    try:
        procs.append(
            subprocess.Popen(
                [
                    dask_cli,
                    "worker",
                    address,
                    "--host",
                    "127.0.0.1",
                    "--nthreads",
                    "1",
                    "--no-dashboard",
                    "--local-directory",
                    str(scratch),
                ],
                cwd=scratch,
                **quiet,  # type: ignore[call-overload]
            )
        )
        deadline = time.monotonic() + 60
        while True:  # the scheduler takes a moment to listen
            try:
                with Client(address, timeout="5s") as client:
                    client.wait_for_workers(1, timeout=60)
                break
            except (OSError, TimeoutError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        bnorm = [sys.executable, "-m", "bnorm_cli"]
        serial, stats = tmp_path / "serial.json", tmp_path / "stats.json"
        run(["fit", *paths, "-s", serial, "-b", "100", "-q"])
        done = subprocess.run(
            [
                *bnorm,
                "fit",
                *map(str, paths),
                "-s",
                str(stats),
                "-b",
                "100",
                "-q",
                "--engine",
                "dask",
                "--scheduler",
                address,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert stats.read_text() == serial.read_text()
        out = tmp_path / "out"
        env = {**os.environ, "DASK_SCHEDULER_ADDRESS": address}
        done = subprocess.run(
            [
                *bnorm,
                "transform",
                *map(str, paths),
                "-s",
                str(stats),
                "-o",
                str(out),
                "-q",
                "--engine",
                "dask",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert done.returncode == 0, done.stderr
        expected = serial_reference(tmp_path, paths, "transform", "-s", stats)
        assert_frame_equal(read_output(out), read_output(expected))
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()


def test_ctrl_c_removes_the_temporary_parts(tmp_path: Path, scheduler: str) -> None:
    """SIGINT to bnorm while the workers write: no output, no temporary directory."""
    import signal
    import time

    rng = np.random.default_rng(4)
    rows = 3_000_000
    path = tmp_path / "big.parquet"
    pq.write_table(
        pa.table({f"c{i}": rng.normal(0, 1, rows) for i in range(3)}), path, row_group_size=100_000
    )
    stats = tmp_path / "s.json"  # statistics of the same columns, from a few rows
    small = tmp_path / "small.parquet"
    pq.write_table(pq.read_table(path).slice(0, 1000), small)
    run(["fit", small, "-s", stats, "-q"])
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bnorm_cli",
            "transform",
            str(path),
            "-s",
            str(stats),
            "-o",
            str(out),
            "-q",
            "--engine",
            "dask",
            "--scheduler",
            scheduler,
        ],
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not [p for p in tmp_path.iterdir() if ".bnorm-" in p.name]:
        assert proc.poll() is None, "the run ended before its parts were under way"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert b"Traceback" not in err
    time.sleep(1)  # a task still running on a worker cannot write into a removed directory
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.parquet", "s.json", "small.parquet"]


def test_the_serial_engine_never_imports_dask(tmp_path: Path) -> None:
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "a.parquet")
    code = (
        "import sys\n"
        "import bnorm_cli, bnorm_cli.cli.app, bnorm_cli.engines.serial\n"
        "from bnorm_cli.cli.app import app\n"
        "from typer.testing import CliRunner\n"
        f"r = CliRunner().invoke(app, ['fit', {str(tmp_path / 'a.parquet')!r}, '-s',"
        f" {str(tmp_path / 's.json')!r}, '-q'])\n"
        "assert r.exit_code == 0, r.output\n"
        "loaded = [m for m in ('dask', 'distributed', 'fsspec', 's3fs') if m in sys.modules]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert json.loads((tmp_path / "s.json").read_text())["rows"] == 2


def test_workers_with_other_versions_are_refused(scheduler: str) -> None:
    from distributed import Client

    from bnorm_cli.core.errors import BnormError

    with Client(scheduler) as client:
        dask_engine.check_versions(client)  # the same environment: accepted
        other = {**dask_engine.versions(), "numpy": "0.0.1"}
        with pytest.raises(BnormError, match=r"Dask worker tcp://127\.0\.0\.1:\d+ runs numpy"):
            dask_engine.check_versions(client, other)


def test_an_input_removed_during_the_run(tmp_path: Path, scheduler: str) -> None:
    from distributed import Client

    from bnorm_cli import BatchNorm
    from bnorm_cli.core.errors import DataError
    from bnorm_cli.io.inputs import expand_inputs
    from bnorm_cli.io.plan import plan

    path = tmp_path / "gone.parquet"
    pq.write_table(pa.table({"x": np.arange(3000.0)}), path, row_group_size=1000)
    units = plan(expand_inputs([str(path)], None))
    assert units is not None
    path.unlink()
    model = BatchNorm(batch_size=100)
    model.start(pl.Schema({"x": pl.Float64}))
    with Client(scheduler) as client, pytest.raises(DataError, match="changed or removed"):
        dask_engine.fit(model, units, client, str(path), lambda rows: None, span_rows=1000)


def test_a_worker_dying_during_the_run_changes_nothing(
    tmp_path: Path, dataset: tuple[list[Path], pl.DataFrame], scheduler: str
) -> None:
    """Tasks are pure: the scheduler reruns a dead worker's on another, same bits."""
    import os as _os

    from distributed import Client

    from bnorm_cli import BatchNorm
    from bnorm_cli.io.inputs import expand_inputs
    from bnorm_cli.io.plan import plan

    paths, whole = dataset
    units = plan(expand_inputs([str(p) for p in paths], None))
    assert units is not None
    model = BatchNorm(batch_size=50)
    model.start(pl.Schema({"x": pl.Float64, "t": pl.String, "k": pl.Int64, "j": pl.Float64}))
    with Client(scheduler) as client:
        victim = sorted(client.scheduler_info()["workers"])[0]
        killed = []

        def progress(rows: int) -> None:
            if not killed:  # after the first span: kill a worker with spans still to do
                killed.append(victim)
                with contextlib.suppress(Exception):
                    client.run(_os._exit, 1, workers=[victim])

        dask_engine.fit(model, units, client, "data", progress, span_rows=500)
        client.wait_for_workers(2, timeout=60)  # the nanny restarts it for the next tests
        assert victim not in client.scheduler_info()["workers"]  # it did die
    assert killed
    serial = BatchNorm(batch_size=50, columns=["x", "k", "j"]).fit(whole)
    assert model.population_ == serial.population_ and model.running_ == serial.running_


def test_a_local_cluster_leaves_no_scratch_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--workers N starts a cluster whose spill space is a temporary directory, removed."""
    import tempfile

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    pq.write_table(pa.table({"x": np.arange(300.0)}), tmp_path / "a.parquet")
    serial, stats = tmp_path / "serial.json", tmp_path / "s.json"
    run(["fit", tmp_path / "a.parquet", "-s", serial, "-b", "7", "-q"])
    run(
        [
            "fit",
            tmp_path / "a.parquet",
            "-s",
            stats,
            "-b",
            "7",
            "-q",
            "--engine",
            "dask",
            "--workers",
            "1",
        ]
    )
    assert stats.read_text() == serial.read_text()
    assert list(scratch.iterdir()) == []
