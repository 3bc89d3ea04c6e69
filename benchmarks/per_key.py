"""Per-key normalization at scale: `bnorm fit --by` and `transform` on many groups.

Generates (once, cached in the work directory) ROWS rows with an int64 key of
KEYS uniformly drawn groups and COLS float64 value columns (group g's values
are normal around 10*g), written 1,048,576 rows per row group so the data is
never in memory at once; then runs, each as its own process, with wall time
and peak RSS measured by `measure.run_process`:

* ``fit data.parquet -s stats.json --by key``
* ``transform data.parquet -s stats.json -o out.parquet``
* ``fit data.parquet -s plain.json`` (the same pass without --by, for scale)

and checks a sample of groups in the statistics against polars' group_by on
the same rows (read one column at a time).

    python benchmarks/per_key.py --rows 20000000 --keys 100000
    python benchmarks/per_key.py --rows 2000000 --keys 100000   # reduced scale
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import run_process  # noqa: E402

ROW_GROUP = 1 << 20
ROOT = Path(__file__).resolve().parents[1]


def make_data(path: Path, rows: int, keys: int, cols: int, seed: int = 0) -> None:
    if path.exists():
        return
    rng = np.random.default_rng(seed)
    tmp = path.with_suffix(".tmp")
    writer = None
    for start in range(0, rows, ROW_GROUP):
        n = min(ROW_GROUP, rows - start)
        key = rng.integers(0, keys, n)
        data = {"key": pa.array(key)}
        for j in range(cols):
            data[f"v{j}"] = pa.array(rng.normal(0, 1 + j, n) + 10.0 * key)
        table = pa.table(data)
        if writer is None:
            writer = pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table)
    assert writer is not None
    writer.close()
    os.replace(tmp, path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=20_000_000)
    ap.add_argument("--keys", type=int, default=100_000)
    ap.add_argument("--cols", type=int, default=2)
    ap.add_argument("--workdir", type=Path, default=ROOT / "benchmarks" / ".work")
    ap.add_argument("--keep", action="store_true", help="keep the transform output")
    args = ap.parse_args()
    work: Path = args.workdir
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"per_key-{args.rows}-{args.keys}-{args.cols}.parquet"
    make_data(data, args.rows, args.keys, args.cols)
    stats, plain, out = work / "per_key.json", work / "per_key_plain.json", work / "per_key.out.parquet"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    bnorm = [sys.executable, "-m", "bnorm_cli"]
    runs = {
        "fit --by key": [*bnorm, "fit", str(data), "-s", str(stats), "--by", "key", "-q"],
        "transform (per key)": [*bnorm, "transform", str(data), "-s", str(stats), "-o", str(out), "-q"],
        "fit (no --by)": [*bnorm, "fit", str(data), "-s", str(plain), "-q"],
    }  # fmt: skip
    results = {}
    for name, argv in runs.items():
        s = run_process(argv, log=work / "per_key.log", env=env)
        if not s.ok:
            raise SystemExit(f"{name} failed (exit {s.returncode}); see {work / 'per_key.log'}")
        results[name] = {"wall_s": round(s.wall_s, 2), "peak_rss_mib": round(s.maxrss_mib, 1)}
    groups = json.loads(stats.read_text())["by"]["groups"]
    check = _check(data, stats)
    if not args.keep:
        out.unlink(missing_ok=True)
    print(f"rows {args.rows:,}, keys {args.keys:,} ({groups:,} groups seen), {args.cols} columns")
    print(f"{'command':<22}{'wall s':>10}{'peak RSS MiB':>15}{'Mrows/s':>10}")
    for name, r in results.items():
        rate = args.rows / r["wall_s"] / 1e6
        print(f"{name:<22}{r['wall_s']:>10}{r['peak_rss_mib']:>15}{rate:>10.2f}")
    print(f"checked {check} groups against polars group_by: max relative error of the mean")


def _check(data: Path, stats: Path, sample: int = 200) -> str:
    """A sample of groups' mean and variance against polars' group_by."""
    import polars as pl

    side = pl.read_parquet(stats.with_name(stats.name + ".groups.parquet"))
    picked = side.sample(min(sample, side.height), seed=1)
    lf = pl.scan_parquet(data).filter(pl.col("key").is_in(picked["key"].implode()))
    # two-pass variance (polars' own var() is a one-pass formula, 1e-11 off at mean 1e6)
    dev = (pl.col("v0") - pl.col("v0").mean()) ** 2
    ref = lf.group_by("key").agg(pl.col("v0").mean().alias("m"), dev.mean().alias("v"))
    got = picked.select("key", pl.col("v0").struct.unnest()).join(ref.collect(), on="key")
    rel_m = ((got["mean"] - got["m"]).abs() / got["m"].abs()).max()
    rel_v = ((got["var"] - got["v"]).abs() / got["v"]).max()
    return f"{got.height} (mean {rel_m:.2e}, var {rel_v:.2e})"


if __name__ == "__main__":
    main()
