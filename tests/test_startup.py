"""Start-up: the common commands import only what they use.

Every `bnorm` command pays its imports, so a heavy module that a command does not
need (pandas, which pyarrow imports behind ``pa.array`` / ``pa.scalar`` of Python
objects; pyarrow.compute, which loads pydoc; Rich when nothing is printed; the
optional extras) must stay out of its process. Each test runs a real process and
reads its ``sys.modules`` as it exits: a check of what is imported, not a timing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import polars as pl
import pytest

# Runs `bnorm ARGS...` in this process and writes sys.modules to OUT when it leaves
# (through os._exit: cli.exits.exit_now does not finalize the interpreter).
PROBE = textwrap.dedent(
    """
    import json, os, runpy, sys
    out, sys.argv = sys.argv[1], ["bnorm", *sys.argv[2:]]
    real_exit = os._exit
    def dump(code):
        with open(out, "w") as f:
            json.dump(sorted(sys.modules), f)
        real_exit(code)
    os._exit = dump
    runpy.run_module("bnorm_cli", run_name="__main__")
    """
)

# Never needed by fit or transform of a local Parquet/CSV file with --quiet.
HEAVY = (
    "pandas",  # ~0.2 s; pyarrow imports it for pa.array/pa.scalar of Python objects
    "pyarrow.compute",  # ~50 ms with pydoc
    "pydoc",
    "pyarrow.dataset",
    "rich",  # nothing is printed with --quiet
    "dask",
    "distributed",
    "sklearn",
    "fsspec",
    "bnorm_cli.engines.dask_engine",
    "bnorm_cli.report.html",
    "bnorm_cli.report.svg",
    "bnorm_cli.io.export",
    "bnorm_cli.io.importers",
    "bnorm_cli.report.drift",  # a drift report
    "bnorm_cli.report.profile",  # an HTML report
    "bnorm_cli.engines.grouped",  # --by
    "bnorm_cli.io.groups_file",
    "bnorm_cli.core.groups",
)


def loaded(tmp_path: Path, *args: object) -> set[str]:
    """The modules a `bnorm` process has imported when it exits (it must exit 0)."""
    out = tmp_path / "modules.json"
    run = subprocess.run(
        [sys.executable, "-c", PROBE, str(out), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    modules = set(json.loads(out.read_text()))
    assert "bnorm_cli.engines.serial" in modules  # the probe saw a real run
    return modules


def heavy(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in HEAVY or m in HEAVY)


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(3)
    n = 500
    frame = pl.DataFrame(
        {
            "a": rng.normal(size=n),
            "b": pl.Series(rng.integers(0, 9, n), dtype=pl.Int32),
            "c": [
                None if m else v
                for m, v in zip(rng.random(n) < 0.2, rng.normal(size=n), strict=True)
            ],
        }
    )
    paths = {"parquet": tmp_path / "x.parquet", "csv": tmp_path / "x.csv"}
    frame.write_parquet(paths["parquet"])
    frame.write_csv(paths["csv"], null_value="NA")
    return paths


def test_importing_the_cli_loads_no_heavy_module() -> None:
    code = "import bnorm_cli.cli.app, json, sys; print(json.dumps(sorted(sys.modules)))"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    modules = set(json.loads(run.stdout))
    assert "bnorm_cli.cli.app" in modules
    assert heavy(modules) == []


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_quiet_fit_and_transform_load_no_heavy_module(
    tmp_path: Path, files: dict[str, Path], fmt: str
) -> None:
    stats = tmp_path / "st.json"
    assert heavy(loaded(tmp_path, "fit", files[fmt], "-s", stats, "--quiet")) == []
    for out in ("y.parquet", "y.csv"):
        args = ("transform", files[fmt], "-s", stats, "-o", tmp_path / out, "--quiet")
        assert heavy(loaded(tmp_path, *args)) == []


def test_a_csv_text_column_is_checked_without_pyarrow_compute(tmp_path: Path) -> None:
    """The check for numbers among text (and decimal commas) runs on polars; the
    warning it gives is pinned by test_real_files."""
    path = tmp_path / "t.csv"
    path.write_text("a,name,b\n" + "".join(f"{i}.5,x{i},{i}\n" for i in range(30)) + "1,y,oops\n")
    modules = loaded(tmp_path, "fit", path, "-s", tmp_path / "st.json", "--quiet")
    assert heavy(modules) == []


def test_by_loads_the_per_key_modules(tmp_path: Path, files: dict[str, Path]) -> None:
    """The lazy --by modules are imported when --by is given."""
    stats = tmp_path / "st.json"
    modules = loaded(tmp_path, "fit", files["parquet"], "-s", stats, "--by", "b", "--quiet")
    assert {
        "bnorm_cli.engines.grouped",
        "bnorm_cli.io.groups_file",
        "bnorm_cli.core.groups",
    } <= modules


def test_rich_is_imported_when_something_is_printed(tmp_path: Path, files: dict[str, Path]) -> None:
    """Without --quiet fit prints its summary: Rich is loaded then (the probe sees it)."""
    modules = loaded(tmp_path, "fit", files["parquet"], "-s", tmp_path / "st.json")
    assert "rich" in modules


# Runs `bnorm ARGS...` in this process and writes, as it leaves, how many threads
# each BLAS library numpy loaded runs.
BLAS_PROBE = textwrap.dedent(
    """
    import json, os, runpy, sys
    out, sys.argv = sys.argv[1], ["bnorm", *sys.argv[2:]]
    real_exit = os._exit
    def dump(code):
        import threadpoolctl
        with open(out, "w") as f:
            json.dump([i["num_threads"] for i in threadpoolctl.threadpool_info()
                       if i["user_api"] == "blas"], f)
        real_exit(code)
    os._exit = dump
    runpy.run_module("bnorm_cli", run_name="__main__")
    """
)


@pytest.mark.parametrize("setting", [None, "2"])
def test_the_cli_starts_no_blas_threads(
    tmp_path: Path, files: dict[str, Path], setting: str | None
) -> None:
    """No command does linear algebra: OpenBLAS's spinning worker threads would only
    cost start-up CPU. A user's OPENBLAS_NUM_THREADS is kept."""
    pytest.importorskip("threadpoolctl")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if setting is not None:
        env["OPENBLAS_NUM_THREADS"] = setting
    out = tmp_path / "blas.json"
    args = ["fit", str(files["parquet"]), "-s", str(tmp_path / "st.json"), "--quiet"]
    run = subprocess.run(
        [sys.executable, "-c", BLAS_PROBE, str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    threads = json.loads(out.read_text())
    assert threads, "numpy loaded no BLAS library that threadpoolctl knows"
    assert set(threads) == {int(setting or 1)}


def test_importing_bnorm_loads_numpy_only_when_batchnorm_is_used() -> None:
    code = (
        "import sys, bnorm_cli; before = 'numpy' in sys.modules\n"
        "from bnorm_cli import BatchNorm\n"
        "print(before, 'numpy' in sys.modules, BatchNorm.__name__)"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "True", "BatchNorm"]
