"""Exact quantiles out of core vs numpy.quantile in memory, on the benchmark Parquet file.

Each side runs as its own process (measure.py: wall time and the kernel's peak
RSS): ``bnorm`` reads the file in record batches once per pass
(`bnorm_cli.engines.quantiles.column_quantiles`), ``numpy`` reads the float
columns whole and calls ``numpy.quantile`` on each column's non-null, non-NaN
values; ``read`` only reads the file once in the same batches (the floor of
bnorm's time per pass and of its memory). The report gives each, the passes and
the budget, and checks the values are equal (bit for bit).

    python benchmarks/quantiles.py --rows 5000000 [--cols 16] [--budget-mib 64] [--repeat 3]
    python benchmarks/quantiles.py --rows 200000 --repeat 1          # smoke test

Every column of the dataset (make_data.py) is used, including ``count`` (int64
as float) and the 1%-null ``f02``; probabilities 0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

PROBS = [0.0, 0.01, 0.25, 0.5, 0.75, 0.99, 1.0]
BATCH_ROWS = 65536


def _child(side: str, path: Path, out: Path, budget: int) -> None:
    """One side of the comparison: its quantiles (and passes) as JSON in ``out``."""
    import numpy as np
    import polars as pl
    import pyarrow.parquet as pq
    from make_data import numeric_column_names

    cols = [c for c in numeric_column_names(_cols(path)) if c in pq.read_schema(path).names]

    def passes_() -> object:
        f = pq.ParquetFile(path)
        for batch in f.iter_batches(batch_size=BATCH_ROWS, columns=cols):
            yield pl.from_arrow(batch).select(pl.col(cols).cast(pl.Float64))

    if side == "read":  # one pass that only reads: the floor of bnorm's time and memory
        result, passes = np.zeros((len(PROBS), len(cols))), 1
        for frame in passes_():  # type: ignore[attr-defined]
            del frame
    elif side == "numpy":
        table = pq.read_table(path, columns=cols)
        values, passes = [], 1
        for c in cols:
            a = table.column(c).to_numpy().astype(np.float64)  # nulls: NaN
            values.append(np.quantile(a[~np.isnan(a)], PROBS).tolist())
            del a
        result = np.array(values).T
    else:
        from bnorm_cli.engines.quantiles import column_quantiles

        r = column_quantiles(passes_, cols, PROBS, budget_bytes=budget)  # type: ignore[arg-type]
        result, passes = r.values, r.passes
        assert r.peak_kept_bytes <= budget
    out.write_text(json.dumps({"values": result.tolist(), "passes": passes, "columns": cols}))


def _cols(path: Path) -> int:
    return int(path.name.split("-c")[1].split("-")[0])


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=5_000_000)
    p.add_argument("--cols", type=int, default=16)
    p.add_argument("--budget-mib", type=float, default=64.0, help="budget_bytes, in MiB")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--workdir", type=Path, default=BENCH_DIR / ".work")
    p.add_argument("--child", nargs=3, metavar=("SIDE", "FILE", "OUT"), help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    budget = int(a.budget_mib * (1 << 20))
    if a.child:
        _child(a.child[0], Path(a.child[1]), Path(a.child[2]), budget)
        return

    import numpy as np
    from make_data import ensure_parquet
    from measure import median, run_process
    from workloads import child_env

    path = ensure_parquet(a.workdir, a.rows, a.cols)
    size = path.stat().st_size / 1e6
    print(f"{path.name}: {a.rows:,} rows, {size:.0f} MB; budget {a.budget_mib:g} MiB")
    runs: dict[str, list[tuple[float, float]]] = {"bnorm": [], "numpy": [], "read": []}
    found: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(a.repeat):
            for side in runs:  # alternating
                out = Path(tmp) / f"{side}.json"
                argv_ = [sys.executable, __file__, "--budget-mib", str(a.budget_mib)]
                s = run_process([*argv_, "--child", side, str(path), str(out)], env=child_env())
                if not s.ok:
                    raise SystemExit(f"{side} failed (exit {s.returncode})")
                runs[side].append((s.wall_s, s.maxrss_mib))
                found[side] = json.loads(out.read_text())
    equal = np.array_equal(
        np.array(found["bnorm"]["values"]), np.array(found["numpy"]["values"]), equal_nan=True
    )
    print(f"| side | passes | wall s (median of {a.repeat}) | peak RSS MiB |")
    print("|---|---:|---:|---:|")
    for side, rs in runs.items():
        wall, rss = median([r[0] for r in rs]), median([r[1] for r in rs])
        print(f"| {side} | {found[side]['passes']} | {wall:.2f} | {rss:.0f} |")
    print(f"values equal bit for bit: {equal}")
    if not equal:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
