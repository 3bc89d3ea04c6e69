"""How cost grows with rows, columns and batch size; tables plus docs/scaling.png.

    python benchmarks/scaling.py [--repeat 1] [--rows-list 1000000,5000000,20000000]
        [--cols-list 16,256,1000] [--cols-rows 100000] [--batch-list 32,256,4096,65536]
        [--base-rows 1000000] [--only ...] [--plot docs/scaling.png] [--json scaling.json]

Three sweeps, each varying one parameter from the defaults (16 float columns,
batch size 65536, ``--base-rows`` rows): rows, float columns (on ``--cols-rows``
rows, so 1,000 columns stay a modest file), batch size. The batch-size sweep runs
only the workloads that have a batch size (bnorm, scikit-learn, torch) and
reports each one's wall time relative to its time at batch size 65,536 (the
seam issue's targets: ``fit -b 256`` <= 1.5x, ``fit -b 32`` <= 3x). The
column sweep reports peak RSS beside the float64 size of one batch
(``min(batch, rows) x columns x 8`` bytes) and their ratio (the issue's
targets, checked where a batch is >= 256 MiB: fit/normalize <= 2x, transform
<= 1x). Each point is one run.py suite; the plot needs matplotlib (benchmark
extra) and is skipped without it.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import make_data
import report
import run
import workloads as wl

Point = dict[str, Any]  # {"x": value, "workloads": run.py results}
SWEEPS = ("rows", "cols", "batch_size")
AXIS_LABELS = {"rows": "rows", "cols": "float columns", "batch_size": "batch size"}
BATCHED = [s.name for s in wl.CATALOG if s.kind == "bnorm" or s.module in {"sklearn", "torch"}]
REFERENCE_BATCH = 65536  # batch-size ratios are relative to this batch size
#: (workload, batch size) -> limit of wall(batch size) / wall(REFERENCE_BATCH)
BATCH_TARGETS = {("fit", 256): 1.5, ("fit", 32): 3.0}
#: workload -> limit of peak RSS / one batch's float64 size (checked on big batches only)
BATCH_MEMORY_TARGETS = {
    "fit": 2.0,
    "csv-fit": 2.0,
    "normalize-batch": 2.0,
    "normalize-running": 2.0,
    "transform": 1.0,  # a constant map per column needs no whole batch in memory
    "csv-transform": 1.0,
}
BATCH_MEMORY_MIN_MIB = 256.0  # below this the start-up floor (~100-200 MiB) dominates


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x]


def _vary(cfg: run.Config, param: str, value: int) -> run.Config:
    if param == "rows":
        return replace(cfg, rows=value)
    if param == "cols":
        return replace(cfg, cols=value)
    return replace(cfg, batch_size=value)


def sweep(
    base: run.Config, param: str, values: list[int], cols_rows: int | None = None
) -> list[Point]:
    """One run.py suite per value; the cols sweep runs on ``cols_rows`` rows if given."""
    points: list[Point] = []
    only = base.only
    if param == "batch_size":
        only = tuple(s.name for s in wl.select(list(base.only), False) if s.name in BATCHED)
        if not only:
            return points
    if param == "cols" and cols_rows:
        base = replace(base, rows=cols_rows)
    for v in values:
        cfg = _vary(replace(base, only=only), param, v)
        run._say(f"== {param} = {v:,} ({cfg.rows:,} rows, {cfg.cols} float columns)")
        points.append(
            {
                "x": v,
                "rows": cfg.rows,
                "cols": cfg.cols,
                "batch_size": cfg.batch_size,
                "workloads": run.run_suite(cfg)["workloads"],
            }
        )
    return points


def batch_mib(point: Point) -> float:
    """Float64 size of one (the first) batch of a point: min(batch, rows) x cols x 8."""
    return min(point["batch_size"], point["rows"]) * point["cols"] * 8 / 2**20


def _bnorm(points: list[Point]) -> list[str]:
    return [n for n in _names(points) if wl.BY_NAME[n].kind == "bnorm"]


def batch_ratios(points: list[Point], key: str = "wall_median_s") -> str:
    """Wall (or, with ``key="cpu_median_s"``, CPU) time at each batch size / at
    REFERENCE_BATCH, per workload, with the targets (judged on wall time)."""
    ref = next((p for p in points if p["x"] == REFERENCE_BATCH), None)
    if ref is None:
        return ""
    names = _names(points)
    head = ["batch size", *names]
    what = "Wall time" if key == "wall_median_s" else "CPU time (steadier on a loaded host)"
    lines = [
        f"{what} relative to batch size {REFERENCE_BATCH:,}"
        + (" (target in brackets):" if key == "wall_median_s" else ":"),
        "",
        "| " + " | ".join(head) + " |",
        "|" + " ---: |" * len(head),
    ]
    for p in points:
        cells = [f"{p['x']:,}"]
        for n in names:
            a, b = p["workloads"].get(n), ref["workloads"].get(n)
            if not (a and b and a["status"] == "ok" and b["status"] == "ok"):
                cells.append("n/a")
                continue
            if not (a.get(key) and b.get(key)):
                cells.append("n/a")
                continue
            v = a[key] / b[key]
            cell = f"{v:.2f}x"
            limit = BATCH_TARGETS.get((n, p["x"]))
            if limit is not None and key == "wall_median_s":
                cell += f" (<= {limit:g}: {'PASS' if v <= limit else '**FAIL**'})"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    small = min(points, key=lambda p: p["x"])
    extra = -(-small["rows"] // small["x"]) - -(-ref["rows"] // ref["x"])  # more batches
    costs = []
    for n in names:
        a, b = small["workloads"].get(n), ref["workloads"].get(n)
        if extra > 0 and a and b and a.get(key) and b.get(key):
            costs.append(f"{n} {1000 * (a[key] - b[key]) / extra:.2f} ms")
    if costs:
        lines += [
            "",
            f"Cost per extra batch (batch size {small['x']:,} vs {REFERENCE_BATCH:,}, "
            f"{extra:,} more batches): " + ", ".join(costs),
        ]
    return "\n".join(lines)


def memory_per_batch(points: list[Point]) -> str:
    """Peak RSS of each bnorm command beside one batch's float64 size, and their ratio."""
    names = _bnorm(points)
    if not names:
        return ""
    head = ["float columns", "rows", "batch float64 (MiB)"]
    head += [f"{n}: peak RSS MiB (x batch)" for n in names]
    lines = [
        "Peak RSS beside one batch's float64 size (targets, checked where a batch is "
        f">= {BATCH_MEMORY_MIN_MIB:g} MiB: "
        + ", ".join(
            f"{n} <= {BATCH_MEMORY_TARGETS[n]:g}x" for n in names if n in BATCH_MEMORY_TARGETS
        )
        + "):",
        "",
        "| " + " | ".join(head) + " |",
        "|" + " ---: |" * len(head),
    ]
    for p in points:
        size = batch_mib(p)
        cells = [f"{p['cols']:,}", f"{p['rows']:,}", f"{size:.0f}"]
        for n in names:
            r = p["workloads"].get(n)
            if not (r and r["status"] == "ok"):
                cells.append("n/a")
                continue
            v = r["rss_max_mib"] / size
            cell = f"{r['rss_max_mib']:.0f} ({v:.2f}x)"
            limit = BATCH_MEMORY_TARGETS.get(n)
            if limit is not None and size >= BATCH_MEMORY_MIN_MIB:
                cell += " PASS" if v <= limit else " **FAIL**"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _names(points: list[Point]) -> list[str]:
    seen: dict[str, None] = {}
    for p in points:
        seen.update({n: None for n, r in p["workloads"].items() if r["status"] == "ok"})
    return list(seen)


def _cell(r: dict[str, Any] | None, key: str, spec: str) -> str:
    return format(r[key], spec) if r and r["status"] == "ok" else "n/a"


def table(param: str, points: list[Point], key: str, spec: str) -> str:
    names = _names(points)
    lines = ["| " + " | ".join([param, *names]) + " |", "|" + " ---: |" * (len(names) + 1)]
    for p in points:
        cells = [f"{p['x']:,}"] + [_cell(p["workloads"].get(n), key, spec) for n in names]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rss_growth(points: list[Point], small: int = 1_000_000, big: int = 5_000_000) -> str:
    """The issue's check: bnorm peak RSS at 5M rows at most 15% above 1M rows."""
    by_x = {p["x"]: p["workloads"] for p in points}
    if small not in by_x or big not in by_x:
        return ""
    checks = [c for c in report.evaluate(by_x[big], by_x[small]) if "baseline" in c["check"]]
    rows = [
        f"| {c['check'].replace('baseline run', f'{small:,} rows')} | {c['value']:.2f} | "
        f"{c['target']} | {'PASS' if c['pass'] else 'FAIL'} |"
        for c in checks
    ]
    if not rows:
        return ""
    head = f"Peak RSS growth, {big:,} vs {small:,} rows:\n\n| check | value | target | result |\n"
    return head + "| --- | ---: | --- | --- |\n" + "\n".join(rows)


def _short(v: int) -> str:
    for div, suffix in ((1_000_000, "M"), (1024, "k")):
        if v >= div and v % div == 0:
            return f"{v // div}{suffix}"
    return str(v)


def plot(sweeps: dict[str, list[Point]], path: Path) -> bool:
    """Wall time (top) and peak RSS (bottom) per sweep; False without matplotlib."""
    if importlib.util.find_spec("matplotlib") is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    cmap = plt.get_cmap("tab20")  # pairs of shades: each bnorm command next to its anchor
    color = {s.name: cmap(i % cmap.N) for i, s in enumerate(wl.CATALOG)}
    fig, axes = plt.subplots(2, len(sweeps), figsize=(5 * len(sweeps), 8), squeeze=False)
    for j, (param, points) in enumerate(sweeps.items()):
        for name in _names(points):
            pts = [
                (p["x"], p["workloads"][name])
                for p in points
                if p["workloads"].get(name, {}).get("status") == "ok"
            ]
            style = "-o" if wl.BY_NAME[name].kind == "bnorm" else "--s"
            for i, key in enumerate(("wall_median_s", "rss_median_mib")):
                axes[i][j].plot(
                    [x for x, _ in pts],
                    [r[key] for _, r in pts],
                    style,
                    color=color[name],
                    label=name,
                )
        xs = [p["x"] for p in points]
        for i, ylabel in enumerate(("wall time (s)", "peak RSS (MiB)")):
            ax = axes[i][j]
            ax.set_xscale("log")
            ax.set_xticks(xs, [_short(x) for x in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
            ax.set_xlabel(AXIS_LABELS[param])
            ax.set_ylabel(ylabel)
            if i == 0:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.yaxis.set_major_formatter(ScalarFormatter())
                ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(True, which="both", alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        handles.update(zip(*reversed(ax.get_legend_handles_labels()), strict=True))
    fig.legend(
        handles.values(),
        handles.keys(),
        loc="lower center",
        ncol=min(len(handles), 7),
        fontsize=8,
        frameon=False,
    )
    fig.suptitle("bnorm scaling (solid: bnorm commands, dashed: anchors)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--rows-list", type=_ints, default=[1_000_000, 5_000_000, 20_000_000])
    p.add_argument("--cols-list", type=_ints, default=[16, 256, 1000])
    p.add_argument(
        "--cols-rows",
        type=int,
        default=100_000,
        help="rows of the cols sweep (default 100,000: 1,000 columns make an 800 MB file "
        "and one 65,536-row batch is 500 MiB of float64)",
    )
    p.add_argument("--batch-list", type=_ints, default=[32, 256, 4096, 65536])
    p.add_argument("--base-rows", type=int, default=1_000_000, help="rows of the batch sweep")
    p.add_argument("--sweeps", default=",".join(SWEEPS), help="which sweeps (comma list)")
    p.add_argument("--only", default="", help="workloads or groups, as for run.py")
    p.add_argument("--workdir", type=Path, default=run.DEFAULT_WORKDIR)
    p.add_argument(
        "--writer",
        default="bench",
        choices=list(make_data.WRITERS),
        help="whose Parquet file every point runs on (as run.py --writers; default bench)",
    )
    p.add_argument("--retry-noisy", type=int, default=0, metavar="N", help="as for run.py")
    p.add_argument("--plot", type=Path, default=wl.REPO_ROOT / "docs" / "scaling.png")
    p.add_argument("--json", type=Path, help="also write the raw numbers here")
    a = p.parse_args(argv)
    only = tuple(x for x in a.only.split(",") if x)
    try:
        wl.select(list(only), False)
    except ValueError as e:
        p.error(str(e))
    base = run.Config(
        rows=a.base_rows,
        repeat=a.repeat,
        only=only,
        workdir=a.workdir,
        retry_noisy=a.retry_noisy,
        writers=(a.writer,),
    )
    values = {"rows": a.rows_list, "cols": a.cols_list, "batch_size": a.batch_list}
    chosen = [s for s in a.sweeps.split(",") if s]
    if unknown := set(chosen) - set(SWEEPS):
        p.error(f"unknown sweep(s) {sorted(unknown)}; choose from {', '.join(SWEEPS)}")
    sweeps = {s: sweep(base, s, values[s], a.cols_rows) for s in SWEEPS if s in chosen}

    out = [
        f"## bnorm scaling (medians of {a.repeat} run(s); 16 float columns, batch size "
        f"65,536 and {a.base_rows:,} rows unless varied; the cols sweep on "
        f"{a.cols_rows:,} rows; {a.writer} writer's file)"
    ]
    for param, points in sweeps.items():
        out += [
            f"\n### {param}: wall time (s)\n",
            table(param, points, "wall_median_s", ".2f"),
            f"\n### {param}: peak RSS (MiB)\n",
            table(param, points, "rss_median_mib", ".0f"),
        ]
        if param == "batch_size" and (text := batch_ratios(points)):
            out += ["", text]
            if cpu := batch_ratios(points, "cpu_median_s"):
                out += ["", cpu]
        if param == "cols" and (text := memory_per_batch(points)):
            out += ["", text]
    merged = {
        f"{param}={p['x']}/{name}": r
        for param, points in sweeps.items()
        for p in points
        for name, r in p["workloads"].items()
    }
    if warning := report.busy_warning(merged):
        out.append(warning)
    if "rows" in sweeps and (growth := rss_growth(sweeps["rows"])):
        out += ["", growth]
    if plot(sweeps, a.plot):
        out.append(f"\nPlot: {a.plot}")
    else:
        out.append("\n(No plot: matplotlib is not installed; see benchmarks/requirements.txt.)")
    print("\n".join(out))
    if a.json:
        a.json.write_text(
            json.dumps(
                {
                    "params": vars(a)
                    | {"plot": str(a.plot), "workdir": str(a.workdir), "json": str(a.json)},
                    "sweeps": sweeps,
                },
                indent=2,
                default=str,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
