"""The Dask engine against the serial one: fit and transform on 8+ Parquet files.

    python benchmarks/engines.py [--files 8] [--rows 4000000] [--cols 8] [--repeat 3]
        [--workdir benchmarks/.work/engines] [--json engines.json]

Every bnorm run is a fresh ``python -m bnorm_cli`` process (as a user runs it).
The Dask runs go to a local cluster started here once per size (``--workers 1``
and ``2``: single-threaded worker processes on 127.0.0.1) and reached with
``--scheduler``, so the cluster's start-up is measured apart from the runs; one
``--workers N`` run per size shows the total a user sees without a cluster.
Reported: median wall seconds, each Dask run relative to serial (the issue's
targets, excluding start-up: fit with 2 workers <= 1.0x serial, transform <=
1.1x), and the scaling efficiency from 1 to 2 workers, ``t(1) / (2 * t(2))``
(1.0 = linear). The statistics files are checked byte-identical to serial's.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parent.parent
TARGETS = {("fit", 2): 1.0, ("transform", 2): 1.1}


def make_files(directory: Path, files: int, rows: int, cols: int) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = [directory / f"part-{i}.parquet" for i in range(files)]
    stamp = directory / f".made-{files}-{rows}-{cols}"
    if stamp.exists():
        return paths
    rng = np.random.default_rng(0)
    each = rows // files
    for path in paths:
        table = pa.table({f"f{j}": rng.normal(j, 1 + j, each) for j in range(cols)})
        pq.write_table(table, path, row_group_size=1 << 17)
    stamp.write_text("")
    return paths


def bnorm(*args: Any) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bnorm_cli", *map(str, args), "-q"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"bnorm {' '.join(map(str, args))} failed: {done.stderr.strip()}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--rows", type=int, default=4_000_000)
    parser.add_argument("--cols", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=REPO / "benchmarks" / ".work" / "engines")
    parser.add_argument("--json", type=Path)
    a = parser.parse_args()
    if a.files < 8:
        parser.error("--files: at least 8 (the issue's dataset)")
    from distributed import Client, LocalCluster

    paths = make_files(a.workdir / "data", a.files, a.rows, a.cols)
    out = a.workdir / "out"
    stats = {name: a.workdir / f"{name}.json" for name in ("serial", "dask1", "dask2")}
    times: dict[str, list[float]] = {}
    startup: dict[int, float] = {}
    total: dict[int, float] = {}

    def timed(key: str, *args: Any) -> None:
        times.setdefault(key, []).append(bnorm(*args))

    def clean() -> None:
        shutil.rmtree(out, ignore_errors=True)
        (a.workdir / "out.parquet").unlink(missing_ok=True)

    scratch = tempfile.mkdtemp(prefix="bnorm-bench-")
    try:
        clusters = {}
        for n in (1, 2):
            began = time.perf_counter()
            clusters[n] = LocalCluster(
                n_workers=n,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address="127.0.0.1:0",
                local_directory=scratch,
                silence_logs=logging.CRITICAL,
            )
            with Client(clusters[n]) as c:
                c.wait_for_workers(n)
            startup[n] = time.perf_counter() - began
        for _ in range(a.repeat):  # alternating, so a noisy minute hits every engine alike
            timed("fit serial", "fit", *paths, "-s", stats["serial"])
            clean()
            timed("transform serial", "transform", *paths, "-s", stats["serial"], "-o",
                  a.workdir / "out.parquet")  # fmt: skip
            for n in (1, 2):
                dask = ["--engine", "dask", "--scheduler", clusters[n].scheduler_address]
                timed(f"fit dask x{n}", "fit", *paths, "-s", stats[f"dask{n}"], *dask)
                clean()
                timed(f"transform dask x{n}", "transform", *paths, "-s", stats["serial"],
                      "-o", out, *dask)  # fmt: skip
        for n in (1, 2):
            clusters[n].close()
            total[n] = bnorm("fit", *paths, "-s", stats[f"dask{n}"], "--engine", "dask",
                             "--workers", n)  # fmt: skip
    finally:
        clean()
        shutil.rmtree(scratch, ignore_errors=True)
    same = all(stats[k].read_bytes() == stats["serial"].read_bytes() for k in ("dask1", "dask2"))
    med = {k: statistics.median(v) for k, v in times.items()}
    cpus = os.cpu_count()
    load = os.getloadavg()[0]
    print(f"{a.files} files, {a.rows:,} rows x {a.cols} float64 columns; {cpus} CPUs,"
          f" load average {load:.1f}; median of {a.repeat}")  # fmt: skip
    print(f"{'run':<22}{'wall s':>8}{'vs serial':>11}{'target':>8}")
    for command in ("fit", "transform"):
        base = med[f"{command} serial"]
        print(f"{command + ' serial':<22}{base:>8.2f}")
        for n in (1, 2):
            t = med[f"{command} dask x{n}"]
            target = TARGETS.get((command, n))
            mark = "" if target is None else f"<={target}" + (" ok" if t / base <= target else "")
            print(f"{f'{command} dask x{n}':<22}{t:>8.2f}{t / base:>10.2f}x{mark:>9}")
        eff = med[f"{command} dask x1"] / (2 * med[f"{command} dask x2"])
        print(f"{command} scaling efficiency 1 -> 2 workers: {eff:.2f}")
    for n in (1, 2):
        print(f"cluster start-up, {n} worker(s): {startup[n]:.2f} s; fit --workers {n}"
              f" end to end (start-up included): {total[n]:.2f} s")  # fmt: skip
    print(f"statistics files byte-identical to serial: {same}")
    if a.json:
        a.json.write_text(json.dumps(
            {"args": {k: str(v) for k, v in vars(a).items()}, "times": times,
             "startup": startup, "end_to_end": total, "identical": same,
             "cpus": cpus, "load": load}, indent=2) + "\n")  # fmt: skip


if __name__ == "__main__":
    main()
