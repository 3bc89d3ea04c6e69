"""The benchmark workloads: bnorm commands and the anchors they are compared with.

``CATALOG`` is in run order: within each repeat the workloads run in this
order, so every bnorm command sits next to its anchors (alternating runs share
the same machine state, e.g. page cache and CPU frequency).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
ANCHORS_PY = BENCH_DIR / "anchors.py"
DEFAULT_BATCH_SIZE = 65536
#: Codec of the anchors' Parquet outputs: bnorm writes snappy, so the copy anchors do too.
ANCHOR_COMPRESSION = "snappy"


@dataclass(frozen=True)
class Spec:
    """A workload: ``kind`` is "bnorm" or "anchor", ``fmt`` its input format."""

    name: str
    kind: str
    fmt: str
    module: str  # what must be importable: bnorm_cli, polars, sklearn, torch
    needs: str | None = None  # the workload whose artifact (stats, scaler) this one reads


CATALOG: list[Spec] = [
    Spec("fit", "bnorm", "parquet", "bnorm_cli"),
    Spec("polars_agg", "anchor", "parquet", "polars"),
    Spec("sklearn_fit", "anchor", "parquet", "sklearn"),
    Spec("transform", "bnorm", "parquet", "bnorm_cli", needs="fit"),
    Spec("transform-drift", "bnorm", "parquet", "bnorm_cli", needs="fit"),
    Spec("polars_copy", "anchor", "parquet", "polars"),
    Spec("sklearn_transform", "anchor", "parquet", "sklearn", needs="sklearn_fit"),
    Spec("normalize-batch", "bnorm", "parquet", "bnorm_cli"),
    Spec("normalize-running", "bnorm", "parquet", "bnorm_cli"),
    Spec("torch_bn", "anchor", "parquet", "torch"),
    Spec("csv-fit", "bnorm", "csv", "bnorm_cli"),
    Spec("polars_csv_agg", "anchor", "csv", "polars"),
    Spec("csv-transform", "bnorm", "csv", "bnorm_cli", needs="csv-fit"),
    Spec("polars_csv_to_parquet", "anchor", "csv", "polars"),
]
NO_OUTPUT = {"fit", "csv-fit", "polars_agg", "polars_csv_agg", "sklearn_fit", "torch_bn"}
BY_NAME = {s.name: s for s in CATALOG}
GROUPS = {
    "bnorm": [s.name for s in CATALOG if s.kind == "bnorm"],
    "anchors": [s.name for s in CATALOG if s.kind == "anchor"],
    "csv": [s.name for s in CATALOG if s.fmt == "csv"],
    "parquet": [s.name for s in CATALOG if s.fmt == "parquet"],
}


def select(only: list[str] | None, csv: bool) -> list[Spec]:
    """Workloads to run, in catalog order: the names or groups in ``only``
    (CSV ones included), else the Parquet workloads plus, with ``csv``, the CSV ones."""
    if not only:
        return [s for s in CATALOG if s.fmt == "parquet" or csv]
    wanted: set[str] = set()
    for item in only:
        if item in GROUPS:
            wanted.update(GROUPS[item])
        elif item in BY_NAME:
            wanted.add(item)
        else:
            choices = ", ".join([*BY_NAME, *GROUPS])
            raise ValueError(f"unknown workload {item!r}; choose from: {choices}")
    return [s for s in CATALOG if s.name in wanted]


def child_env() -> dict[str, str]:
    """The environment of every workload: ours, with the repo on PYTHONPATH so
    ``python -m bnorm_cli`` works without installing the package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    return env


def unavailable(module: str) -> str | None:
    """Why workloads needing ``module`` cannot run (None if they can)."""
    if module == "bnorm_cli":
        try:
            r = subprocess.run(
                [sys.executable, "-m", "bnorm_cli", "--help"],
                capture_output=True,
                cwd=REPO_ROOT,
                env=child_env(),
                timeout=120,
            )
        except subprocess.TimeoutExpired:
            return "`python -m bnorm_cli --help` timed out"
        if r.returncode != 0:
            last = (r.stderr.decode(errors="replace").strip().splitlines() or [""])[-1]
            return f"`python -m bnorm_cli --help` failed (rc={r.returncode}): {last[:120]}"
        return None
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install -r benchmarks/requirements.txt)"
    return None


@dataclass(frozen=True)
class Paths:
    """Inputs and per-workload output locations."""

    parquet: Path
    csv: Path | None
    outdir: Path

    def input(self, spec: Spec) -> Path:
        path = self.csv if spec.fmt == "csv" else self.parquet
        if path is None:
            raise ValueError(f"{spec.name} needs the CSV copy of the dataset")
        return path

    def output(self, spec: Spec) -> Path | None:
        """The data file a workload writes (deleted after each run)."""
        return None if spec.name in NO_OUTPUT else self.outdir / f"{spec.name}.parquet"

    def artifact(self, spec: Spec) -> Path | None:
        """The file a workload leaves for a later one (stats file, pickled scaler)."""
        producer = spec.needs or spec.name
        if producer in {"fit", "csv-fit"}:
            return self.outdir / f"stats-{producer}.json"
        if producer == "sklearn_fit":
            return self.outdir / "sklearn-scaler.pkl"
        return None


def argv(
    spec: Spec, paths: Paths, batch_size: int, compression: str = ANCHOR_COMPRESSION
) -> list[str]:
    """The command line of one run of ``spec`` (``compression``: the anchors' output codec)."""
    src = str(paths.input(spec))
    out = paths.output(spec)
    art = paths.artifact(spec)
    if spec.kind == "anchor":
        cmd = [sys.executable, str(ANCHORS_PY), spec.name, src, "--batch-size", str(batch_size)]
        cmd += ["--compression", compression]
        cmd += ["--out", str(out)] if out else []
        cmd += ["--state", str(art)] if art else []
        return cmd
    bnorm = [sys.executable, "-m", "bnorm_cli"]
    batch = ["-b", str(batch_size)]
    if spec.name in {"fit", "csv-fit"}:
        return [*bnorm, "fit", src, "-s", str(art), *batch, "--quiet"]
    if spec.name in {"transform", "csv-transform", "transform-drift"}:
        # -b is transform's chunk size (it applies one saved map per column)
        drift = ["--drift"] if spec.name == "transform-drift" else []
        return [*bnorm, "transform", src, "-s", str(art), "-o", str(out), *batch, *drift, "-q"]
    mode = spec.name.removeprefix("normalize-")
    return [*bnorm, "normalize", src, "-o", str(out), "--mode", mode, *batch, "--quiet"]
