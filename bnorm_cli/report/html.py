"""The self-contained HTML report: the per-column table and its plots.

For each normalized column: a histogram of a row sample before and after
normalization, and the batch statistics across the stream against the running
statistics and the population value -- the internal covariate shift that
Batch Normalization was invented for. Plots are drawn with matplotlib (the
``html`` extra) and embedded as PNG data URIs, so the file opens offline.
"""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

import numpy as np

from ..core.errors import UsageError
from .profile import Profile
from .summary import HEADERS, Report, cells, summary

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2rem;color:#222}
h1{font-size:1.4rem} h2{font-size:1.1rem;margin-top:2rem}
table{border-collapse:collapse;font-variant-numeric:tabular-nums}
th,td{padding:.25rem .6rem;border-bottom:1px solid #ddd;text-align:right}
th:first-child,td:first-child{text-align:left}
.meta{color:#555} img{max-width:100%;height:auto}
"""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise UsageError(
            "--report *.html needs matplotlib: pip install 'bnorm[html]' (or use .md/.json)"
        ) from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight", metadata={"Software": None})
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _histogram(ax: Any, values: np.ndarray, title: str, color: str) -> None:
    finite = values[np.isfinite(values)]
    if finite.size:
        ax.hist(finite, bins=50, color=color, alpha=0.85)
    ax.set_title(f"{title} (sample of {finite.size:,})", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.locator_params(axis="x", nbins=5)


def _trace(
    ax: Any, batch: list[float | None], running: list[float], population: float | None, what: str
) -> None:
    xs = np.arange(1, len(running) + 1)
    ys = np.array([math.nan if v is None else v for v in batch], dtype=float)
    ax.plot(xs, ys, ".", ms=3, color="#999", label=f"batch {what}")
    ax.plot(xs, running, "-", color="#1f77b4", label=f"running {what}")
    if population is not None:
        ax.axhline(population, color="#d62728", ls="--", lw=1, label=f"population {what}")
    ax.set_xlabel("batch", fontsize=8)
    ax.set_title(f"{what} across batches", fontsize=9)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=7, loc="best")


def column_figure(
    report_row: Any, profile: Profile, population: tuple[float | None, float | None]
) -> str:
    """One PNG (as a data URI) with the four panels of a column."""
    plt = _pyplot()
    c = report_row.column
    trace = profile.traces[c]
    has_trace = bool(trace.running_mean)
    fig, axes = plt.subplots(1, 4 if has_trace else 2, figsize=(14 if has_trace else 7, 2.6))
    _histogram(axes[0], profile.before(c), "before", "#7f7f7f")
    _histogram(axes[1], profile.after(c), "after", "#2ca02c")
    if has_trace:
        _trace(axes[2], trace.batch_mean, trace.running_mean, population[0], "mean")
        _trace(axes[3], trace.batch_var, trace.running_var, population[1], "var")
    uri = _png(fig)
    plt.close(fig)
    return uri


def to_html(
    report: Report, profile: Profile, population: dict[str, tuple[float | None, float | None]]
) -> str:
    """The whole report as one HTML document."""
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in HEADERS)
    rows = []
    for r in report.columns:
        rows.append("<tr>" + "".join(f"<td>{esc(v)}</td>" for v in cells(r)) + "</tr>")
    figures = [
        f'<h2>{esc(r.column)}</h2><img alt="{esc(r.column)}: histograms and running statistics" '
        f'src="{column_figure(r, profile, population.get(r.column, (None, None)))}">'
        for r in report.columns
    ]
    title = f"bnorm {report.command}: {report.source}"
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<h1>{esc(title)}</h1><p class=meta>{esc(summary(report))}"
        " &middot; histograms from a uniform row sample; the trace shows each batch's mean and"
        " unbiased variance, the running statistics after the batch, and the population value."
        f"</p><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        f"{''.join(figures)}</body></html>\n"
    )
