"""The self-contained HTML report: parameters, the per-column table, and charts.

For each normalized column: a histogram of a row sample before and after
normalization, and the batch statistics across the stream against the running
statistics and the population value -- the internal covariate shift that
Batch Normalization was invented for. Charts are inline SVG (`svg.py`), so the
file opens offline and costs next to nothing to draw.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..core.moments import Moments, from_values
from . import svg
from .profile import Profile, Trace
from .summary import HEADERS, Report, cells, fmt, summary

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem}
body{color:#222;max-width:75rem}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem} h3{font-size:1rem;margin-top:1.6rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums;margin:.5rem 0}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
.meta{color:#555} .warn{background:#fff6d6;padding:.4rem .7rem;border-left:4px solid #e0b000}
nav a{margin-right:.8rem} .charts svg{margin-right:.6rem;vertical-align:top}
"""


@dataclass(frozen=True)
class Run:
    """How the run was made: shown at the top of the report."""

    command: str
    parameters: Sequence[tuple[str, str]]
    passed_through: Sequence[tuple[str, str]] = ()  # (column, why it was not normalized)
    warnings: Sequence[str] = field(default_factory=list)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], ids: Sequence[str] = ()) -> str:
    esc = html.escape
    th = "".join(f"<th>{esc(h)}</th>" for h in head)
    body = []
    for i, row in enumerate(rows):
        first = esc(row[0])
        if i < len(ids):
            first = f'<a href="#{ids[i]}">{first}</a>'
        rest = "".join(f"<td>{esc(v)}</td>" for v in row[1:])
        body.append(f"<tr><td>{first}</td>{rest}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _single_batch(t: Trace, population: tuple[float | None, float | None]) -> str:
    """One batch: a line plot would be one point, so the numbers instead."""
    rows = [
        ["mean", fmt(t.batch_mean[0]), fmt(t.running_mean[0]), fmt(population[0])],
        ["variance", fmt(t.batch_var[0]), fmt(t.running_var[0]), fmt(population[1])],
    ]
    return (
        "<p class=meta>One batch: the running statistics moved once from their start"
        " (mean 0, variance 1) toward this batch's.</p>"
        + _table(["", "batch (unbiased var)", "running", "population"], rows)
    )


def column_section(
    name: str, anchor: str, profile: Profile, population: tuple[float | None, float | None]
) -> str:
    """A column's heading and charts."""
    t = profile.traces.get(name, Trace())
    charts = [
        svg.histogram(profile.before(name), "before", "#7f7f7f"),
        svg.histogram(profile.after(name), "after", "#2ca02c"),
    ]
    extra = ""
    if len(t.running_mean) > 1:
        charts.append(svg.trace(t.batch_mean, t.running_mean, population[0], "mean"))
        charts.append(svg.trace(t.batch_var, t.running_var, population[1], "variance"))
    elif t.running_mean:
        extra = _single_batch(t, population)
    if t.r:  # batch renormalization: the corrections between their limits
        charts.append(svg.clipped(t.r, [1.0 / m for m in t.rmax], t.rmax, "renorm r"))
        charts.append(svg.clipped(t.d, [-m for m in t.dmax], t.dmax, "renorm d"))
    return (
        f'<h3 id="{anchor}">{html.escape(name)}</h3>'
        f"<div class=charts>{''.join(charts)}</div>{extra}"
    )


def _output_rows(report: Report, profile: Profile) -> tuple[list[list[str]], str]:
    """The written columns' statistics (exact), or for fit those of the mapped sample."""
    rows, exact = [], bool(profile.output)
    for r in report.columns:
        m: Moments | None = profile.output.get(r.column)
        if m is None:
            after = profile.after(r.column)
            ok = np.isfinite(after)
            m = from_values(after[ok], int((~ok).sum()))
        rows.append(
            [
                r.column,
                fmt(m.n),
                fmt(m.mean, m.std),
                fmt(m.std),
                fmt(m.min if m.n else None),
                fmt(m.max if m.n else None),
            ]
        )
    note = (
        "every written value"
        if exact
        else "the row sample mapped with the fitted statistics (fit writes no data)"
    )
    return rows, note


def to_html(
    report: Report,
    profile: Profile,
    population: Mapping[str, tuple[float | None, float | None]],
    run: Run | None = None,
) -> str:
    """The whole report as one HTML document."""
    esc = html.escape
    run = run or Run(f"bnorm {report.command}", [])
    anchors = [f"col-{i}" for i in range(len(report.columns))]
    title = f"bnorm {report.command}: {report.source}"
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1><p class=meta>{esc(summary(report))}</p>",
        f"<p><code>{esc(run.command)}</code></p>",
    ]
    if run.parameters:
        parts.append(_table(["parameter", "value"], [list(p) for p in run.parameters]))
    for w in run.warnings:
        parts.append(f"<p class=warn>warning: {esc(w)}</p>")
    if len(report.columns) > 1:
        links = "".join(
            f'<a href="#{a}">{esc(r.column)}</a>'
            for a, r in zip(anchors, report.columns, strict=True)
        )
        parts.append(f"<nav><strong>columns:</strong> {links}</nav>")
    parts.append("<h2>Input statistics</h2>")
    parts.append(_table(HEADERS, [cells(r) for r in report.columns], anchors))
    out_rows, note = _output_rows(report, profile)
    parts.append(f"<h2>Output statistics</h2><p class=meta>Of {esc(note)}.</p>")
    parts.append(_table(["column", "count", "mean", "std", "min", "max"], out_rows, anchors))
    if run.passed_through:
        parts.append("<h2>Passed through unchanged</h2>")
        parts.append(_table(["column", "why"], [list(p) for p in run.passed_through]))
    parts.append(
        "<h2>Columns</h2><p class=meta>Histograms from a uniform row sample; the traces show"
        " each batch's mean and unbiased variance (dots), the running statistics after the"
        " batch (line) and the population value (dashed); with --mode renorm, each batch's"
        " corrections r and d (dots) between their clipping limits (dashed).</p>"
    )
    for a, r in zip(anchors, report.columns, strict=True):
        parts.append(column_section(r.column, a, profile, population.get(r.column, (None, None))))
    parts.append("</body></html>\n")
    return "".join(parts)
