"""The drift report: the per-column comparison as a table, JSON, Markdown or HTML.

JSON (``--drift-report drift.json``), stable for scripts::

    {"format": "bnorm-drift", "version": 1, "command": "drift", "stats": PATH,
     "source": NAME, "fit_rows": N, "rows": N, "drifted": [COLUMN...],
     "thresholds": {METRIC: [WARN, DRIFT]...},   # vr: [LOW, HIGH], drift outside
     "columns": [                                # by severity, worst first
       {"column", "verdict" ("ok"|"warn"|"drift"|"n/a"), "reasons": [TEXT],
        "psi", "smd", "variance_ratio", "ks", "wasserstein" (W1 / fitted std),
        "null_rate_change", "outside" (share outside the fitted [min, max]),
        "fit_count", "new_count", "fit_null_rate", "new_null_rate",
        "fit_mean", "new_mean", "fit_std", "new_std",
        "bin_width" (the sketch bucket the comparison used),
        "psi_edges" (decile edges), "fit_shares", "new_shares" (per PSI bin),
        "severity" (largest metric / its drift threshold)}]}

A metric that does not exist (no values on one side) is ``null``; an infinite
one (a constant fitted column that changed) is the string ``"inf"``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.drift import ColumnDrift, Thresholds, Watch, common_grid, ordered
from ..core.errors import UsageError
from ..io.atomic import write_text
from .summary import markdown_table

HEADERS = ("column", "verdict", "PSI", "SMD", "var ratio", "KS", "W1/std", "null +/-", "outside")
SUFFIXES = (".json", ".md", ".markdown", ".html", ".htm")


@dataclass(frozen=True)
class DriftReport:
    command: str
    stats: str
    source: str
    fit_rows: int
    rows: int
    thresholds: Thresholds
    columns: list[ColumnDrift]

    @property
    def drifted(self) -> list[str]:
        return [d.column for d in self.columns if d.verdict == "drift"]


def build(
    command: str, stats: str, source: str, watch: Watch, thresholds: Thresholds
) -> DriftReport:
    return DriftReport(
        command,
        stats,
        source,
        watch.fit_rows,
        watch.rows,
        thresholds,
        ordered(watch.results(thresholds)),
    )


def _num(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.{digits}g}"


def cells(d: ColumnDrift) -> list[str]:
    share = lambda v: "-" if v is None else f"{100 * v:.2g}%"  # noqa: E731
    return [
        d.column,
        d.verdict,
        _num(d.psi),
        _num(d.smd),
        _num(d.variance_ratio),
        _num(d.ks),
        _num(d.wasserstein),
        share(d.null_rate_change),
        share(d.outside),
    ]


def caption(r: DriftReport) -> str:
    bad = r.drifted
    gates = ", ".join(
        f"{k} {'outside ' if k == 'variance_ratio' else '>= '}{v[0]:g}/{v[1]:g}"
        for k, v in r.thresholds.gating().items()
    )
    head = f"{r.rows:,} rows compared with {r.fit_rows:,} fitted rows"
    verdict = f"{len(bad)} of {len(r.columns)} columns drifted" if bad else "no column drifted"
    return f"{head}; {verdict} (warn/drift: {gates})"


def _jsonable(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if isinstance(v, dict):
        return {k: _jsonable(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def to_json(r: DriftReport) -> str:
    doc = {
        "format": "bnorm-drift",
        "version": 1,
        "command": r.command,
        "stats": r.stats,
        "source": r.source,
        "fit_rows": r.fit_rows,
        "rows": r.rows,
        "drifted": r.drifted,
        "thresholds": {k: list(v) for k, v in r.thresholds.gating().items()},
        "columns": [asdict(d) for d in r.columns],
    }
    return json.dumps(_jsonable(doc), indent=2, allow_nan=False) + "\n"


def to_markdown(r: DriftReport) -> str:
    lines = [
        f"# bnorm {r.command}: {r.source} against {r.stats}",
        "",
        caption(r) + ".",
        "",
        *markdown_table(
            [*HEADERS, "why"],
            ["---", "---"] + ["---:"] * (len(HEADERS) - 2) + ["---"],
            ([*cells(d), "; ".join(d.reasons)] for d in r.columns),
        ),
    ]
    return "\n".join(lines) + "\n"


def check_path(path: str) -> None:
    if Path(path).suffix.lower() not in SUFFIXES:
        raise UsageError(f"--drift-report {path}: use a .json, .md or .html file name")


def write(r: DriftReport, path: str, watch: Watch | None = None) -> None:
    suffix = Path(path).suffix.lower()
    if suffix in (".html", ".htm"):
        assert watch is not None
        text = to_html(r, watch)
    elif suffix == ".json":
        text = to_json(r)
    else:
        text = to_markdown(r)
    write_text(path, text)


# -- HTML --------------------------------------------------------------------------
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
.drift{color:#b00020;font-weight:600} .warn{color:#a15c00} .meta{color:#555}
img{max-width:100%;height:auto}
"""


def _overlay(watch: Watch, j: int, title: str) -> str:
    """Inline SVG: the fitted and the input's shares per bucket, overlaid."""
    from . import svg

    assert watch.fit_summary is not None
    a, b = common_grid(watch.fit_summary.hist[j], watch.summary.hist[j])
    if not (a.total and b.total):
        return svg._frame(title, "", ("", ""), ("", ""))
    # the central 99% of both, in at most ~64 bars: both coarsened (exactly) alike
    lo = min(a.quantile(0.005), b.quantile(0.005))
    hi = max(a.quantile(0.995), b.quantile(0.995))
    step = max(0, max(int((hi - lo) / a.width), 1).bit_length() - 6)
    a2, b2 = a.coarsened(a.exp + step), b.coarsened(b.exp + step)
    series = []
    for h in (a2, b2):
        x = np.ldexp(h.index.astype(np.float64), h.exp)
        keep = (x + h.width >= lo) & (x <= hi)
        series.append((x[keep], h.count[keep] / h.total))
    left = min(float(x[0]) for x, _ in series if x.size)
    right = max(float(x[-1]) for x, _ in series if x.size) + a2.width
    top = max(float(p.max()) for _, p in series if p.size)
    kx, cx = svg._scale(left, right, svg.PAD, svg.W - 6)
    ky, cy = svg._scale(0.0, top, svg.H - 20, 18)
    bars = []
    for (x, p), color in zip(series, ("#4c72b0", "#dd8452"), strict=True):
        for xi, pi in zip(x.tolist(), p.tolist(), strict=True):
            xa = xi * kx + cx if kx else svg.PAD + 4
            xb = (xi + a2.width) * kx + cx if kx else svg.W - 10
            y = pi * ky + cy
            bars.append(
                f'<rect x="{xa:.1f}" y="{y:.1f}" width="{max(xb - xa - 0.3, 0.5):.1f}"'
                f' height="{svg.H - 20 - y:.1f}" fill="{color}" fill-opacity="0.55"/>'
            )
    legend = (
        f'<text x="{svg.W - 10}" y="30" font-size="9" text-anchor="end" fill="#4c72b0">fit</text>'
        f'<text x="{svg.W - 10}" y="41" font-size="9" text-anchor="end" fill="#dd8452">'
        "input</text>"
    )
    return svg._frame(
        f"{title} (central 99%)",
        "".join(bars) + legend,
        (svg._num(left), svg._num(right)),
        ("0", f"{top:.2g}"),
    )


def to_html(r: DriftReport, watch: Watch) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in (*HEADERS, "why"))
    rows = []
    for d in r.columns:
        cls = f' class="{d.verdict}"' if d.verdict in ("drift", "warn") else ""
        tds = "".join(f"<td{cls if i == 1 else ''}>{esc(c)}</td>" for i, c in enumerate(cells(d)))
        rows.append(f"<tr>{tds}<td>{esc('; '.join(d.reasons))}</td></tr>")
    index = {c: j for j, c in enumerate(watch.columns)}
    plots = []
    for d in r.columns:
        if not (d.fit_count and d.new_count) or watch.fit_summary is None:
            continue
        title = f"{d.column}: fitted vs input, shares per bucket"
        plots.append(
            f'<h2 id="{esc(d.column)}">{esc(d.column)} <span class="{d.verdict}">'
            f"{esc(d.verdict)}</span></h2>{_overlay(watch, index[d.column], title)}"
        )
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        f"<title>bnorm {esc(r.command)}: {esc(r.source)}</title><style>{_CSS}</style></head><body>"
        f"<h1>bnorm {esc(r.command)}: {esc(r.source)} against {esc(r.stats)}</h1>"
        f"<p class='meta'>{esc(caption(r))}. Columns by severity.</p>"
        f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{''.join(plots)}</body></html>\n"
    )


def warnings(r: DriftReport) -> Sequence[str]:
    from ..core.drift import warning_line

    return [warning_line(d) for d in r.columns if d.verdict == "drift"]
