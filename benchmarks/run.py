"""Benchmark bnorm against its anchors on a generated dataset.

    python benchmarks/run.py --rows 5000000 --repeat 3 [--cols 16] [--batch-size 65536]
        [--csv] [--only fit,transform] [--workdir DIR] [--json out.json]
        [--rss-baseline run-1m.json | --rss-baseline-rows 1000000]
        [--writers bench,polars,pyarrow,duckdb] [--anchor-compression snappy]

Every workload runs as its own process, ``--repeat`` times, alternating
(for each repeat: every workload once, in catalog order); the report shows
medians and checks the targets of the benchmark issue. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import make_data
import measure
import report
import workloads as wl

DEFAULT_WORKDIR = wl.BENCH_DIR / ".work"


@dataclass(frozen=True)
class Config:
    rows: int = 1_000_000
    cols: int = 16
    batch_size: int = wl.DEFAULT_BATCH_SIZE
    repeat: int = 3
    csv: bool = False
    only: tuple[str, ...] = ()
    workdir: Path = DEFAULT_WORKDIR
    seed: int = make_data.DEFAULT_SEED
    retry_noisy: int = 0  # re-runs allowed for a run during which others took CPU
    writers: tuple[str, ...] = ("bench",)  # whose Parquet file(s) to run on (make_data.WRITERS)
    anchor_compression: str = wl.ANCHOR_COMPRESSION  # codec of the anchors' Parquet outputs


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    """Versions and machine facts, recorded with every run."""
    versions: dict[str, str] = {"python": platform.python_version()}
    for pkg in ("polars", "pyarrow", "numpy", "scikit-learn", "torch"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[pkg] = importlib.metadata.version(pkg)
    cpus = os.cpu_count() or 0
    summary = f"{cpus} CPUs, " + ", ".join(f"{k} {v}" for k, v in versions.items())
    return {
        "cpus": cpus,
        "platform": platform.platform(),
        "versions": versions,
        "summary": summary,
    }


def _warm(path: Path) -> None:
    """Read a file once so every workload starts with it in the page cache."""
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


def _remove(path: Path | None) -> None:
    if path is not None:
        path.unlink(missing_ok=True)


def _summarize(samples: list[measure.Sample]) -> dict[str, Any]:
    ok = [s for s in samples if s.ok]
    return {
        "runs": [asdict(s) for s in samples],
        "wall_median_s": measure.median([s.wall_s for s in ok]) if ok else None,
        "rss_median_mib": measure.median([s.maxrss_mib for s in ok]) if ok else None,
        "rss_max_mib": max(s.maxrss_mib for s in ok) if ok else None,
        "cpu_median_s": measure.median([s.cpu_s for s in ok]) if ok else None,
    }


def _noise(sample: measure.Sample) -> float:
    """Share of one core that other processes took during the run."""
    return sample.other_cpu_s / sample.wall_s if sample.wall_s > 0 else 0.0


def _noisy(sample: measure.Sample) -> bool:
    return _noise(sample) > report.BUSY_SHARE


def _run_once(
    s: wl.Spec, paths: wl.Paths, cfg: Config, env: dict[str, str], log: Path
) -> measure.Sample:
    _remove(paths.output(s))
    if not s.needs:
        _remove(paths.artifact(s))
    argv = wl.argv(s, paths, cfg.batch_size, cfg.anchor_compression)
    sample = measure.run_process(argv, cwd=wl.REPO_ROOT, env=env, log=log)
    _remove(paths.output(s))
    os.sync()  # flush written data now, not during the next workload
    return sample


@dataclass(frozen=True)
class _File:
    """One input file of a suite: the dataset as written by ``writer``."""

    writer: str
    paths: wl.Paths
    dataset: dict[str, Any]


def _prepare_file(cfg: Config, writer: str, need_csv: bool, say: Callable[[str], None]) -> _File:
    parquet = make_data.ensure_parquet(cfg.workdir, cfg.rows, cfg.cols, cfg.seed, writer)
    csv = make_data.ensure_csv(cfg.workdir, cfg.rows, cfg.cols, cfg.seed) if need_csv else None
    outdir = cfg.workdir / "out" if len(cfg.writers) == 1 else cfg.workdir / "out" / writer
    paths = wl.Paths(parquet=parquet, csv=csv, outdir=outdir)
    paths.outdir.mkdir(parents=True, exist_ok=True)
    desc = make_data.describe(parquet)
    say(f"file {writer}: {parquet.name}: {make_data.describe_line(desc)}")
    dataset = {
        "writer": writer,
        "writer_settings": make_data.WRITERS[writer],
        "parquet": str(parquet),
        "parquet_bytes": parquet.stat().st_size,
        "parquet_layout": desc,
        "csv": str(csv) if csv else None,
        "csv_bytes": csv.stat().st_size if csv else None,
    }
    return _File(writer, paths, dataset)


def run_suite(cfg: Config, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Generate (or reuse) the data, run the selected workloads, return the results.

    With several ``cfg.writers`` every workload runs on each writer's file, all
    alternating (for each repeat: for each file: every workload); ``files`` holds
    each file's results, and the top-level ``dataset``/``workloads`` are the first
    file's (what a one-file run returns). CSV workloads run on the first file only.
    """
    specs = wl.select(list(cfg.only), cfg.csv)
    env_before = environment()
    say(f"dataset: {cfg.rows:,} rows x {cfg.cols} float columns (cached in {cfg.workdir})")
    need_csv = any(s.fmt == "csv" for s in specs)
    files = [_prepare_file(cfg, w, need_csv and i == 0, say) for i, w in enumerate(cfg.writers)]
    logdir = cfg.workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = wl.child_env()

    reasons = {m: wl.unavailable(m) for m in {s.module for s in specs}}
    runnable = [s for s in specs if reasons[s.module] is None]
    per_file = {
        f.writer: [s for s in runnable if s.fmt == "parquet" or f is files[0]] for f in files
    }
    os.sync()  # write back freshly generated data now, not while timing
    for f in files:
        for p in {f.paths.input(s) for s in per_file[f.writer]}:
            _warm(p)

    def tag(f: _File, name: str) -> str:
        return name if len(files) == 1 else f"{f.writer}/{name}"

    # A consumer whose producer is not selected gets the producer's artifact from one untimed run.
    names = {s.name for s in runnable}
    for f in files:
        for s in per_file[f.writer]:
            if s.needs and s.needs not in names:
                producer = wl.BY_NAME[s.needs]
                say(f"setup: {tag(f, producer.name)} (untimed, for {s.name})")
                log = logdir / f"{tag(f, producer.name).replace('/', '-')}-setup.log"
                argv = wl.argv(producer, f.paths, cfg.batch_size, cfg.anchor_compression)
                if not measure.run_process(argv, cwd=wl.REPO_ROOT, env=env, log=log).ok:
                    say(f"setup: {producer.name} FAILED, see {log}")

    samples: dict[tuple[str, str], list[measure.Sample]] = {
        (f.writer, s.name): [] for f in files for s in per_file[f.writer]
    }
    for r in range(cfg.repeat):
        for f in files:
            for s in per_file[f.writer]:
                name = tag(f, s.name)
                log = logdir / f"{name.replace('/', '-')}-{r + 1}.log"
                sample = _run_once(s, f.paths, cfg, env, log)
                for _ in range(cfg.retry_noisy):
                    if not _noisy(sample):
                        break
                    say(
                        f"[{r + 1}/{cfg.repeat}] {name:<22} other processes took "
                        f"{sample.other_cpu_s:.1f} CPU-s in the quietest run so far; re-running"
                    )
                    sample = min(sample, _run_once(s, f.paths, cfg, env, log), key=_noise)
                samples[(f.writer, s.name)].append(sample)
                status = "" if sample.ok else f"  FAILED rc={sample.returncode}, see {log}"
                say(
                    f"[{r + 1}/{cfg.repeat}] {name:<22} {sample.wall_s:7.2f} s "
                    f"{sample.maxrss_mib:7.0f} MiB{status}"
                )

    out_files: dict[str, dict[str, Any]] = {}
    for f in files:
        results: dict[str, dict[str, Any]] = {}
        for s in specs:
            if s.fmt == "csv" and f is not files[0]:
                continue
            entry: dict[str, Any] = {
                "kind": s.kind,
                "fmt": s.fmt,
                "input_bytes": f.paths.input(s).stat().st_size,
            }
            reason = reasons[s.module]
            if reason is not None:
                entry |= {"status": "n/a", "reason": reason}
            else:
                got = samples[(f.writer, s.name)]
                failed = [x for x in got if not x.ok]
                entry |= _summarize(got)
                entry |= (
                    {"status": "failed", "reason": f"{len(failed)} run(s) failed, see {logdir}"}
                    if failed
                    else {"status": "ok", "reason": ""}
                )
            results[s.name] = entry
        out_files[f.writer] = {"dataset": f.dataset, "workloads": results}
    first = out_files[files[0].writer]
    run: dict[str, Any] = {
        "params": {
            **asdict(cfg),
            "workdir": str(cfg.workdir),
            "only": list(cfg.only),
            "writers": list(cfg.writers),
        },
        "env": env_before,
        "dataset": first["dataset"],
        "workloads": first["workloads"],
    }
    if len(files) > 1:
        run["files"] = out_files
    return run


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000, help="dataset rows (default 1M)")
    p.add_argument("--cols", type=int, default=16, help="float64 columns (default 16)")
    p.add_argument("--batch-size", type=int, default=wl.DEFAULT_BATCH_SIZE)
    p.add_argument("--repeat", type=int, default=3, help="alternating runs per workload")
    p.add_argument("--csv", action="store_true", help="also run the CSV workloads")
    p.add_argument(
        "--only",
        default="",
        help=f"comma list of workloads or groups ({', '.join(wl.GROUPS)}): {', '.join(wl.BY_NAME)}",
    )
    p.add_argument(
        "--workdir",
        type=Path,
        default=DEFAULT_WORKDIR,
        help="data cache, outputs and logs (default benchmarks/.work)",
    )
    p.add_argument("--seed", type=int, default=make_data.DEFAULT_SEED)
    p.add_argument(
        "--writers",
        default="bench",
        help="comma list: run the Parquet workloads on the same data as written by each of "
        f"these ({', '.join(make_data.WRITERS)}; default bench, the generator's own file), "
        "alternating across files",
    )
    p.add_argument(
        "--anchor-compression",
        default=wl.ANCHOR_COMPRESSION,
        help="codec of the anchors' Parquet outputs (default snappy, the codec bnorm writes)",
    )
    p.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help="re-run a run up to N times while other processes take over 5%% of a core; "
        "keeps the quietest (for shared machines)",
    )
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    base = p.add_mutually_exclusive_group()
    base.add_argument(
        "--rss-baseline",
        type=Path,
        help="--json of a smaller run (1M rows): check peak RSS growth against it",
    )
    base.add_argument(
        "--rss-baseline-rows",
        type=int,
        metavar="N",
        help="first run the bnorm commands on N rows (e.g. 1000000), the same way, and "
        "check peak RSS growth against that run",
    )
    a = p.parse_args(argv)
    if a.rss_baseline_rows is not None and a.rss_baseline_rows < 1:
        p.error("--rss-baseline-rows must be >= 1")
    if a.rows < 1 or a.cols < 1 or a.batch_size < 1 or a.repeat < 1 or a.retry_noisy < 0:
        p.error("--rows, --cols, --batch-size and --repeat must be >= 1, --retry-noisy >= 0")
    try:
        a.only = tuple(x for x in a.only.replace(" ", "").split(",") if x)
        wl.select(list(a.only), a.csv)
    except ValueError as e:
        p.error(str(e))
    a.writers = tuple(dict.fromkeys(x for x in a.writers.replace(" ", "").split(",") if x))
    if unknown := [w for w in a.writers if w not in make_data.WRITERS]:
        choices = ", ".join(make_data.WRITERS)
        p.error(f"unknown writer(s) {', '.join(unknown)}; choose from {choices}")
    if not a.writers:
        p.error("--writers needs at least one writer")
    return a


def _baselines(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per writer, the workloads of a (saved or fresh) baseline run."""
    if "files" in run:
        return {w: f["workloads"] for w, f in run["files"].items()}
    return {run.get("dataset", {}).get("writer", "bench"): run["workloads"]}


def check(run: dict[str, Any], baselines: dict[str, dict[str, Any]] | None) -> None:
    """Add ``checks`` to the run and to each of its files (RSS growth against the
    same writer's baseline, else the baseline's first file)."""
    fallback = next(iter(baselines.values())) if baselines else None
    for writer, f in run.get("files", {}).items():
        base = (baselines or {}).get(writer, fallback)
        f["checks"] = report.evaluate(f["workloads"], base)
    writer = run["dataset"].get("writer", "bench")
    run["checks"] = report.evaluate(run["workloads"], (baselines or {}).get(writer, fallback))


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    cfg = Config(
        rows=a.rows,
        cols=a.cols,
        batch_size=a.batch_size,
        repeat=a.repeat,
        csv=a.csv,
        only=a.only,
        workdir=a.workdir,
        seed=a.seed,
        retry_noisy=a.retry_noisy,
        writers=a.writers,
        anchor_compression=a.anchor_compression,
    )
    baselines = _baselines(json.loads(a.rss_baseline.read_text())) if a.rss_baseline else None
    small = None
    if a.rss_baseline_rows:
        bnorm = tuple(s.name for s in wl.select(list(cfg.only), cfg.csv) if s.kind == "bnorm")
        _say(f"RSS baseline: the bnorm commands on {a.rss_baseline_rows:,} rows")
        small = run_suite(replace(cfg, rows=a.rss_baseline_rows, only=bnorm))
        baselines = _baselines(small)
    run = run_suite(cfg)
    check(run, baselines)
    if small is not None:
        run["rss_baseline_run"] = small
    print(report.render(run))
    if a.json:
        a.json.write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
