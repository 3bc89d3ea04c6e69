"""Benchmark bnorm against its anchors on a generated dataset.

    python benchmarks/run.py --rows 5000000 --repeat 3 [--cols 16] [--batch-size 65536]
        [--csv] [--only fit,transform] [--workdir DIR] [--json out.json]
        [--rss-baseline run-1m.json | --rss-baseline-rows 1000000]

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
    argv = wl.argv(s, paths, cfg.batch_size)
    sample = measure.run_process(argv, cwd=wl.REPO_ROOT, env=env, log=log)
    _remove(paths.output(s))
    os.sync()  # flush written data now, not during the next workload
    return sample


def run_suite(cfg: Config, say: Callable[[str], None] = _say) -> dict[str, Any]:
    """Generate (or reuse) the data, run the selected workloads, return the results."""
    specs = wl.select(list(cfg.only), cfg.csv)
    env_before = environment()
    say(f"dataset: {cfg.rows:,} rows x {cfg.cols} float columns (cached in {cfg.workdir})")
    parquet = make_data.ensure_parquet(cfg.workdir, cfg.rows, cfg.cols, cfg.seed)
    need_csv = any(s.fmt == "csv" for s in specs)
    csv = make_data.ensure_csv(cfg.workdir, cfg.rows, cfg.cols, cfg.seed) if need_csv else None
    paths = wl.Paths(parquet=parquet, csv=csv, outdir=cfg.workdir / "out")
    paths.outdir.mkdir(parents=True, exist_ok=True)
    logdir = cfg.workdir / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    env = wl.child_env()

    reasons = {m: wl.unavailable(m) for m in {s.module for s in specs}}
    runnable = [s for s in specs if reasons[s.module] is None]
    os.sync()  # write back freshly generated data now, not while timing
    for p in {paths.input(s) for s in runnable}:
        _warm(p)

    # A consumer whose producer is not selected gets the producer's artifact from one untimed run.
    names = {s.name for s in runnable}
    for s in runnable:
        if s.needs and s.needs not in names:
            producer = wl.BY_NAME[s.needs]
            say(f"setup: {producer.name} (untimed, for {s.name})")
            log = logdir / f"{producer.name}-setup.log"
            argv = wl.argv(producer, paths, cfg.batch_size)
            if not measure.run_process(argv, cwd=wl.REPO_ROOT, env=env, log=log).ok:
                say(f"setup: {producer.name} FAILED, see {log}")

    samples: dict[str, list[measure.Sample]] = {s.name: [] for s in runnable}
    for r in range(cfg.repeat):
        for s in runnable:
            log = logdir / f"{s.name}-{r + 1}.log"
            sample = _run_once(s, paths, cfg, env, log)
            for _ in range(cfg.retry_noisy):
                if not _noisy(sample):
                    break
                say(
                    f"[{r + 1}/{cfg.repeat}] {s.name:<22} other processes took "
                    f"{sample.other_cpu_s:.1f} CPU-s in the quietest run so far; re-running"
                )
                sample = min(sample, _run_once(s, paths, cfg, env, log), key=_noise)
            samples[s.name].append(sample)
            status = "" if sample.ok else f"  FAILED rc={sample.returncode}, see {log}"
            say(
                f"[{r + 1}/{cfg.repeat}] {s.name:<22} {sample.wall_s:7.2f} s "
                f"{sample.maxrss_mib:7.0f} MiB{status}"
            )

    results: dict[str, dict[str, Any]] = {}
    for s in specs:
        entry: dict[str, Any] = {
            "kind": s.kind,
            "fmt": s.fmt,
            "input_bytes": paths.input(s).stat().st_size,
        }
        reason = reasons[s.module]
        if reason is not None:
            entry |= {"status": "n/a", "reason": reason}
        else:
            failed = [x for x in samples[s.name] if not x.ok]
            entry |= _summarize(samples[s.name])
            entry |= (
                {"status": "failed", "reason": f"{len(failed)} run(s) failed, see {logdir}"}
                if failed
                else {"status": "ok", "reason": ""}
            )
        results[s.name] = entry
    return {
        "params": {**asdict(cfg), "workdir": str(cfg.workdir), "only": list(cfg.only)},
        "env": env_before,
        "dataset": {
            "parquet": str(parquet),
            "parquet_bytes": parquet.stat().st_size,
            "csv": str(csv) if csv else None,
            "csv_bytes": csv.stat().st_size if csv else None,
        },
        "workloads": results,
    }


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
    return a


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
    )
    baseline = json.loads(a.rss_baseline.read_text())["workloads"] if a.rss_baseline else None
    small = None
    if a.rss_baseline_rows:
        bnorm = tuple(s.name for s in wl.select(list(cfg.only), cfg.csv) if s.kind == "bnorm")
        _say(f"RSS baseline: the bnorm commands on {a.rss_baseline_rows:,} rows")
        small = run_suite(replace(cfg, rows=a.rss_baseline_rows, only=bnorm))
        baseline = small["workloads"]
    run = run_suite(cfg)
    run["checks"] = report.evaluate(run["workloads"], baseline)
    if small is not None:
        run["rss_baseline_run"] = small
    print(report.render(run))
    if a.json:
        a.json.write_text(json.dumps(run, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
