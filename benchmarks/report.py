"""Targets from the benchmark issue, and the Markdown report of one run.

A run's results are plain JSON-able dicts (see run.py); everything here reads
them, so a saved ``--json`` file can be re-reported or compared later.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

Result = dict[str, Any]  # one workload's entry in results["workloads"]

RSS_LIMIT_MIB = 400.0  # every bnorm command
RSS_GROWTH_LIMIT = 1.15  # peak RSS at 5M rows / at 1M rows
TARGET_ROWS = 5_000_000  # the targets are defined at this size
BUSY_SHARE = 0.05  # other processes' CPU / timed wall time that gets a warning


@dataclass(frozen=True)
class Target:
    """``num / den`` of median wall times, required ``op`` ``limit``."""

    num: str
    den: str
    op: str  # "<=" or ">="
    limit: float

    @property
    def label(self) -> str:
        return f"{self.num} / {self.den}"

    def passes(self, ratio: float) -> bool:
        return ratio <= self.limit if self.op == "<=" else ratio >= self.limit


TARGETS: list[Target] = [
    Target("fit", "polars_agg", "<=", 1.5),
    Target("sklearn_fit", "fit", ">=", 5.0),
    Target("transform", "polars_copy", "<=", 1.2),
    Target("transform-drift", "transform", "<=", 1.25),  # the drift gate's cost (issue 12)
    Target("sklearn_transform", "transform", ">=", 2.5),
    Target("normalize-batch", "polars_copy", "<=", 1.5),
    Target("normalize-running", "polars_copy", "<=", 1.5),
    Target("csv-fit", "polars_csv_agg", "<=", 1.3),
    Target("csv-transform", "polars_csv_to_parquet", "<=", 1.3),
]
INFO_RATIOS: list[tuple[str, str]] = [("torch_bn", "fit")]


def wall(results: dict[str, Result], name: str) -> float | None:
    r = results.get(name)
    return r["wall_median_s"] if r and r["status"] == "ok" else None


def ratio(results: dict[str, Result], num: str, den: str) -> float | None:
    a, b = wall(results, num), wall(results, den)
    return a / b if a is not None and b is not None and b > 0 else None


def cpu_ratio(results: dict[str, Result], num: str, den: str) -> float | None:
    """Ratio of median CPU times (user + system of the workload's process)."""
    a, b = results.get(num), results.get(den)
    if not (a and b and a["status"] == "ok" and b["status"] == "ok"):
        return None
    x, y = a.get("cpu_median_s"), b.get("cpu_median_s")
    return x / y if x is not None and y else None


def evaluate(results: dict[str, Result], baseline: dict[str, Result] | None = None) -> list[Result]:
    """Every target as ``{check, value, target, pass}``; ``pass`` is None when
    a workload it needs did not run."""
    checks: list[Result] = []
    for t in TARGETS:
        if t.num not in results or t.den not in results:
            continue  # not selected in this run
        v = ratio(results, t.num, t.den)
        checks.append(
            {
                "check": t.label,
                "value": v,
                "target": f"{t.op} {t.limit:g}",
                "pass": None if v is None else t.passes(v),
            }
        )
    for name, r in results.items():
        if r["kind"] != "bnorm" or r["status"] != "ok":
            continue
        checks.append(
            {
                "check": f"{name} peak RSS (MiB, max of runs)",
                "value": r["rss_max_mib"],
                "target": f"<= {RSS_LIMIT_MIB:g}",
                "pass": r["rss_max_mib"] <= RSS_LIMIT_MIB,
            }
        )
        base = (baseline or {}).get(name)
        if base and base["status"] == "ok":
            growth = r["rss_max_mib"] / base["rss_max_mib"]
            checks.append(
                {
                    "check": f"{name} peak RSS / baseline run",
                    "value": growth,
                    "target": f"<= {RSS_GROWTH_LIMIT:g}",
                    "pass": growth <= RSS_GROWTH_LIMIT,
                }
            )
    return checks


def _fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def table(results: dict[str, Result], rows: int) -> str:
    """workload | wall median | rows/s | MB/s | peak RSS median | wall min-max, one line each."""
    head = [
        "workload",
        "wall median (s)",
        "rows/s",
        "MB/s",
        "peak RSS median (MiB)",
        "wall min-max (s)",
        "CPU median (s)",
    ]
    lines = [_row(head), _row(["---"] + ["---:"] * 6)]
    notes: list[str] = []
    for name, r in results.items():
        if r["status"] != "ok":
            lines.append(_row([name] + ["n/a"] * 6))
            notes.append(f"- {name}: {r['status']}: {r['reason']}")
            continue
        t = r["wall_median_s"]
        walls = [x["wall_s"] for x in r["runs"] if x["returncode"] == 0]
        cells = [
            name,
            f"{t:.2f}",
            f"{rows / t / 1e6:.2f} M",
            f"{r['input_bytes'] / t / 1e6:.0f}",
            f"{r['rss_median_mib']:.0f}",
            f"{min(walls):.2f}-{max(walls):.2f}",
            _fmt(r.get("cpu_median_s"), ".2f"),
        ]
        lines.append(_row(cells))
    return "\n".join(lines + (["", *notes] if notes else []))


def checks_table(checks: list[Result], info: dict[str, Result]) -> str:
    lines = [_row(["check", "value", "target", "result"]), _row(["---", "---:", "---", "---"])]
    for c in checks:
        verdict = "n/a" if c["pass"] is None else ("PASS" if c["pass"] else "FAIL")
        lines.append(_row([c["check"], _fmt(c["value"], ".2f"), c["target"], verdict]))
    for num, den in INFO_RATIOS:
        v = ratio(info, num, den)
        if v is not None:
            lines.append(_row([f"{num} / {den}", f"{v:.2f}", "(information only)", ""]))
    for t in TARGETS:  # CPU time resists a loaded host better than wall time
        if (v := cpu_ratio(info, t.num, t.den)) is not None:
            lines.append(_row([f"CPU time {t.label}", f"{v:.2f}", "(information only)", ""]))
    return "\n".join(lines)


def busy_warning(results: dict[str, Result]) -> str:
    runs = [x for r in results.values() for x in r.get("runs", [])]
    wall = sum(x["wall_s"] for x in runs)
    other = sum(x.get("other_cpu_s", 0.0) for x in runs)
    if wall <= 0 or other / wall <= BUSY_SHARE:
        return ""
    return (
        f"\n**Warning: other processes used {other:.0f} CPU-seconds during the "
        f"{wall:.0f} s of timed runs ({100 * other / wall:.0f}% of one core): "
        "these numbers are noisy.**\n"
    )


def _layout(d: Result) -> str:
    """The input file's codec and row groups, when the run recorded them."""
    lay = d.get("parquet_layout")
    if not lay:
        return ""
    lo, hi, mid = lay["row_group_rows_min"], lay["row_group_rows_max"], lay["row_group_rows_median"]
    sizes = f"{hi:,}" if lo == hi else f"{lo:,}-{hi:,} (median {mid:,})"
    codecs = "/".join(lay["codecs"]).lower()
    return f"{codecs}, {lay['row_groups']} row group(s) of {sizes} rows"


def _head(p: Result, d: Result, env: Result) -> str:
    layout = _layout(d)
    return (
        f"## bnorm benchmark: {p['rows']:,} rows x {p['cols']} float columns, "
        f"batch size {p['batch_size']:,}, medians of {p['repeat']} alternating run(s)\n\n"
        f"Parquet input: {d['parquet_bytes'] / 1e6:.0f} MB"
        + (f" ({layout}; {d.get('writer', 'bench')} writer)" if layout else "")
        + (f"; CSV input: {d['csv_bytes'] / 1e6:.0f} MB" if d.get("csv_bytes") else "")
        + f". Anchors write {p.get('anchor_compression', 'snappy')} Parquet, as bnorm does. "
        + f"{env['summary']}\n"
    )


def _checks_part(p: Result, checks: list[Result], results: dict[str, Result]) -> list[str]:
    parts = ["", "### Ratios and targets", ""]
    if p["rows"] != TARGET_ROWS:
        parts += [f"(Targets are set for {TARGET_ROWS:,} rows; this run has {p['rows']:,}.)", ""]
    has_checks = checks or any(ratio(results, a, b) for a, b in INFO_RATIOS)
    parts.append(checks_table(checks, results) if has_checks else "(none: no target applies)")
    return parts


def files_summary(files: dict[str, Result]) -> str:
    """One line per check, one column per input file: value and verdict."""
    writers = list(files)
    order: dict[str, str] = {}
    for f in files.values():
        for c in f.get("checks", []):
            order.setdefault(c["check"], c["target"])
    head = _row(["check", *writers, "target"])
    lines = [head, _row(["---"] + ["---:"] * len(writers) + ["---"])]
    for name, target in order.items():
        cells = [name]
        for w in writers:
            c = next((x for x in files[w].get("checks", []) if x["check"] == name), None)
            if c is None or c["value"] is None:
                cells.append("n/a")
            else:
                mark = "" if c["pass"] is None else (" PASS" if c["pass"] else " **FAIL**")
                cells.append(f"{c['value']:.2f}{mark}")
        lines.append(_row([*cells, target]))
    for t in TARGETS:  # CPU time resists a loaded host better than wall time
        vals = [cpu_ratio(files[w]["workloads"], t.num, t.den) for w in writers]
        if any(v is not None for v in vals):
            cells = [_fmt(v, ".2f") for v in vals]
            lines.append(_row([f"CPU time {t.label}", *cells, "(information)"]))
    lines.append("")
    for w in writers:
        ds = files[w]["dataset"]
        lines.append(f"- `{w}`: {ds.get('writer_settings', '')}; here {_layout(ds)}")
    return "\n".join(lines)


def render(run: Result) -> str:
    """The whole Markdown report of one run of run.py."""
    p, d, results = run["params"], run["dataset"], run["workloads"]
    files = run.get("files")
    if not files:
        parts = [_head(p, d, run["env"]) + busy_warning(results), table(results, p["rows"])]
        parts += _checks_part(p, run["checks"], results)
        return "\n".join(parts) + "\n"
    every = {f"{w}/{n}": r for w, f in files.items() for n, r in f["workloads"].items()}
    parts = [
        f"## bnorm benchmark on {len(files)} files of the same data: {p['rows']:,} rows x "
        f"{p['cols']} float columns, batch size {p['batch_size']:,}, medians of "
        f"{p['repeat']} alternating run(s) (for each repeat: each file: each workload)\n\n"
        f"Anchors write {p.get('anchor_compression', 'snappy')} Parquet, as bnorm does. "
        f"{run['env']['summary']}\n" + busy_warning(every),
        "### Every file: ratios and targets",
        "",
    ]
    if p["rows"] != TARGET_ROWS:
        parts += [f"(Targets are set for {TARGET_ROWS:,} rows; this run has {p['rows']:,}.)", ""]
    parts.append(files_summary(files))
    for w, f in files.items():
        ds = f["dataset"]
        parts += [
            "",
            f"### File `{w}`: {ds['parquet_bytes'] / 1e6:.0f} MB, {_layout(ds)}",
            "",
            table(f["workloads"], p["rows"]),
        ]
    return "\n".join(parts) + "\n"
