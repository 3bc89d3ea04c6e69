"""Run one command as its own process; measure wall time and peak RSS.

Wall time is ``time.perf_counter`` around the process; peak RSS is the
kernel's high-water mark from ``os.wait4`` (``ru_maxrss``, KiB on Linux), with
no sampling and no psutil. Both (and the CPU time other processes took,
a noise indicator) are taken in _spawn.py, a tiny intermediate
process, so the harness's own memory does not leak into ``ru_maxrss``.
"""

from __future__ import annotations

import compileall
import functools
import importlib.util
import statistics
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

SPAWN_PY = Path(__file__).resolve().with_name("_spawn.py")


@dataclass(frozen=True)
class Sample:
    """One timed run."""

    wall_s: float
    maxrss_kib: int
    returncode: int
    cpu_s: float = 0.0  # the workload's user + system CPU time
    other_cpu_s: float = 0.0  # CPU time other processes took meanwhile (noise)

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def maxrss_mib(self) -> float:
        return self.maxrss_kib / 1024


@functools.cache
def compile_bnorm() -> None:
    """Write bnorm's bytecode (``__pycache__``) before the first run, as an installed
    wheel has it: an editable checkout run with PYTHONDONTWRITEBYTECODE=1 would
    otherwise compile its ~60 modules from source in every measured process (~0.1 s
    of start-up that users do not pay). The anchors' packages have theirs."""
    spec = importlib.util.find_spec("bnorm_cli")
    if spec is not None and spec.origin is not None:
        compileall.compile_dir(Path(spec.origin).parent, quiet=1)


def run_process(
    argv: Sequence[str],
    *,
    log: Path | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> Sample:
    """Run ``argv`` to completion; its stdout is discarded, its stderr goes to ``log``."""
    compile_bnorm()
    with open(log if log is not None else "/dev/null", "wb") as err:
        r = subprocess.run(
            [sys.executable, "-S", str(SPAWN_PY), *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=err,
            cwd=cwd,
            env=env,
            check=False,
        )
    try:
        wall, rss, rc, cpu, busy = r.stdout.split()
        other = max(0.0, float(busy) - float(cpu))
        return Sample(float(wall), int(rss), int(rc), float(cpu), other)
    except ValueError:  # the spawner itself failed (e.g. command not found)
        return Sample(wall_s=0.0, maxrss_kib=0, returncode=r.returncode or 127)


def median(values: Sequence[float]) -> float:
    return statistics.median(values)
