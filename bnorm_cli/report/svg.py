"""Small inline SVG charts for the HTML report: a histogram and a trace.

Hand-written SVG rather than matplotlib: a figure costs microseconds instead of
about a second, and the page stays one self-contained file with no dependency.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np

W, H, PAD = 320, 170, 34  # width, height, left/bottom margin for the axis labels
MAX_POINTS = 800  # a trace longer than this is drawn from every k-th batch


def _num(v: float) -> str:
    return f"{v:.4g}"


def _frame(title: str, body: str, xlabels: tuple[str, str], ylabels: tuple[str, str]) -> str:
    x0, y0, x1, y1 = PAD, 18, W - 6, H - 20
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}"'
        f' height="{H}" role="img" aria-label="{html.escape(title)}">'
        f'<text x="{W / 2}" y="12" text-anchor="middle" font-size="11">{html.escape(title)}</text>'
        f'<rect x="{x0}" y="{y0}" width="{x1 - x0}" height="{y1 - y0}" fill="none"'
        ' stroke="#ccc"/>'
        f"{body}"
        f'<text x="{x0}" y="{H - 6}" font-size="9">{xlabels[0]}</text>'
        f'<text x="{x1}" y="{H - 6}" font-size="9" text-anchor="end">{xlabels[1]}</text>'
        f'<text x="{x0 - 3}" y="{y1}" font-size="9" text-anchor="end">{ylabels[0]}</text>'
        f'<text x="{x0 - 3}" y="{y0 + 8}" font-size="9" text-anchor="end">{ylabels[1]}</text>'
        "</svg>"
    )


def _scale(lo: float, hi: float, a: float, b: float) -> tuple[float, float]:
    """Map [lo, hi] onto [a, b] (a degenerate range onto its middle)."""
    if not hi > lo:
        return 0.0, (a + b) / 2
    k = (b - a) / (hi - lo)
    return k, a - lo * k


def histogram(values: np.ndarray, title: str, color: str, bins: int = 40) -> str:
    """Bars of a histogram of the finite values."""
    finite = values[np.isfinite(values)]
    title = f"{title} (sample of {finite.size:,})"
    if not finite.size:
        return _frame(title, "", ("", ""), ("", ""))
    lo, hi = float(finite.min()), float(finite.max())
    # halved, the range of any two floats is finite (+/-1e308 would overflow np.histogram)
    counts, halves = np.histogram(finite / 2, bins=bins if hi > lo else 1)
    edges = [float(e) for e in halves]
    kx, cx = _scale(edges[0], edges[-1], PAD, W - 6)
    ky, cy = _scale(0.0, float(counts.max()), H - 20, 18)
    bars = []
    for n, a, b in zip(counts.tolist(), edges[:-1], edges[1:], strict=True):
        xa, xb = (a * kx + cx, b * kx + cx) if kx else (PAD + 4, W - 10)
        top = n * ky + cy
        bars.append(
            f'<rect x="{xa:.1f}" y="{top:.1f}" width="{max(xb - xa - 0.5, 0.5):.1f}"'
            f' height="{H - 20 - top:.1f}" fill="{color}"/>'
        )
    return _frame(title, "".join(bars), (_num(lo), _num(hi)), ("0", f"{int(counts.max()):,}"))


def trace(
    batch: Sequence[float | None], running: Sequence[float], population: float | None, what: str
) -> str:
    """Batch values (dots), running value (line) and population value (dashed)."""
    n = len(running)
    step = max(1, math.ceil(n / MAX_POINTS))
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    ys = [v for v in (*(batch[i] for i in idx), *(running[i] for i in idx)) if v is not None]
    if population is not None:
        ys.append(population)
    ys = [v for v in ys if math.isfinite(v)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    kx, cx = _scale(1, n, PAD + 2, W - 8)
    ky, cy = _scale(lo, hi, H - 22, 20)

    def pt(i: int, v: float) -> str:
        return f"{(i + 1) * kx + cx:.1f},{v * ky + cy:.1f}"

    dots = "".join(
        f'<circle cx="{pt(i, v).split(",")[0]}" cy="{pt(i, v).split(",")[1]}" r="1.5" fill="#999"/>'
        for i in idx
        if (v := batch[i]) is not None and math.isfinite(v)
    )
    line = " ".join(pt(i, running[i]) for i in idx if math.isfinite(running[i]))
    body = dots + f'<polyline points="{line}" fill="none" stroke="#1f77b4" stroke-width="1.5"/>'
    if population is not None and math.isfinite(population):
        y = population * ky + cy
        body += (
            f'<line x1="{PAD}" x2="{W - 6}" y1="{y:.1f}" y2="{y:.1f}" stroke="#d62728"'
            ' stroke-dasharray="4 3"/>'
        )
    note = f" (every {step}th batch)" if step > 1 else ""
    return _frame(f"{what} across {n:,} batches{note}", body, ("1", f"{n:,}"), (_num(lo), _num(hi)))


def clipped(values: Sequence[float], low: Sequence[float], high: Sequence[float], what: str) -> str:
    """Per-batch values (dots) between their clipping limits (lines): batch
    renormalization's r and d. Non-finite values and limits are left out."""
    n = len(values)
    step = max(1, math.ceil(n / MAX_POINTS))
    idx = list(range(0, n, step))
    if idx[-1] != n - 1:
        idx.append(n - 1)
    ys = [v for i in idx for v in (values[i], low[i], high[i]) if math.isfinite(v)]
    lo, hi = (min(ys), max(ys)) if ys else (0.0, 1.0)
    kx, cx = _scale(1, n, PAD + 2, W - 8)
    ky, cy = _scale(lo, hi, H - 22, 20)

    def pt(i: int, v: float) -> tuple[float, float]:
        return (i + 1) * kx + cx, v * ky + cy

    dots = "".join(
        '<circle cx="{:.1f}" cy="{:.1f}" r="1.5" fill="#1f77b4"/>'.format(*pt(i, values[i]))
        for i in idx
        if math.isfinite(values[i])
    )
    lines = ""
    for limit in (low, high):
        points = " ".join(
            "{:.1f},{:.1f}".format(*pt(i, limit[i])) for i in idx if math.isfinite(limit[i])
        )
        if points:
            lines += (
                f'<polyline points="{points}" fill="none" stroke="#d62728" stroke-dasharray="4 3"/>'
            )
    note = f" (every {step}th batch)" if step > 1 else ""
    return _frame(
        f"{what} across {n:,} batches{note}", lines + dots, ("1", f"{n:,}"), (_num(lo), _num(hi))
    )
