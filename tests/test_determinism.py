"""Same answers at every speed: bit-identical results run to run and whatever the
thread count (POLARS_MAX_THREADS must be set before polars is imported, so each
run is its own process)."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(11)
    n = 300_000
    frame = pl.DataFrame(
        {f"c{i}": rng.normal(10.0**i, 10.0 ** (i - 3), n) for i in range(-3, 9)}
        | {"k": rng.integers(0, 1000, n), "s": rng.choice(["a", "b"], n)}
    )
    path = tmp_path_factory.mktemp("det") / "in.parquet"
    frame.write_parquet(path, row_group_size=40_000)
    return path


def run(args: list[str], threads: int | None) -> None:
    env = dict(os.environ)
    env.pop("POLARS_MAX_THREADS", None)
    if threads is not None:
        env["POLARS_MAX_THREADS"] = str(threads)
    subprocess.run([sys.executable, "-m", "bnorm_cli", *args, "-q"], check=True, env=env)


def digest(path: Path) -> str:
    if path.suffix == ".parquet":  # compare values, not the writer's metadata
        table = pl.read_parquet(path)
        return hashlib.sha256(table.write_ipc(None).getvalue()).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("command", ["fit", "transform", "normalize-batch", "normalize-running"])
def test_bit_identical_across_runs_and_thread_counts(
    tmp_path: Path, data: Path, command: str
) -> None:
    stats = tmp_path / "fitted.json"
    run(["fit", str(data), "-s", str(stats), "-b", "4096"], None)
    results = []
    for i, threads in enumerate([None, 1, None, 2]):
        out = tmp_path / f"out{i}.json"
        if command == "fit":
            run(["fit", str(data), "-s", str(out), "-b", "4096"], threads)
        elif command == "transform":
            out = out.with_suffix(".parquet")
            run(["transform", str(data), "-s", str(stats), "-o", str(out)], threads)
        else:
            mode = command.split("-")[1]
            out = out.with_suffix(".parquet")
            run(["normalize", str(data), "-o", str(out), "--mode", mode, "-b", "4096"], threads)
        results.append(digest(out))
    assert len(set(results)) == 1
