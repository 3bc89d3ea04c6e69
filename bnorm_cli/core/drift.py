"""Has new data drifted from the fitted data? Effect sizes per column, no p-values.

Every metric compares the input with the fit's moments and distribution
summary (`sketch`), counted on the fit's own bucket grid, so the comparison is
exact for those buckets and reproducible bit for bit:

* ``smd``: standardized mean difference ``(mu_new - mu_fit) / sqrt((var_fit + var_new)/2)``
  (Cohen's d with the two variances pooled equally; exact from the moments);
* ``variance_ratio``: ``var_new / var_fit`` (exact from the moments);
* ``psi``: population stability index on the fit's deciles. A decile edge is the
  upper boundary of the sketch bucket where the fitted cumulative share reaches
  k/10, so the fitted counts per bin are exact; deciles that fall on the same
  edge (a discrete or constant column) are merged into one bin; a bin share of
  0 is floored at `PSI_FLOOR` (1e-4) before the logarithm.
  ``psi = sum((p_new - p_fit) * ln(p_new / p_fit))``;
* ``ks``: Kolmogorov-Smirnov distance between the two binned distributions
  (max CDF difference at the bucket boundaries: at most the exact KS, short of it
  by at most one bucket's mass);
* ``wasserstein``: Wasserstein-1 distance between the binned distributions, in
  units of the fitted standard deviation (within one bucket width of the exact);
* ``null_rate_change``: missing share (null or NaN) of the input minus the fit's;
* ``outside``: share of the input's values outside the fitted ``[min, max]``.

Verdict: by default ``psi`` (warn >= 0.1, drift >= 0.25: the usual credit-scoring
rule of thumb, Siddiqi 2006, *Credit Risk Scorecards*; Yurdakul 2018) and
``|smd|`` (warn >= 0.1, drift >= 0.25: a tenth and a quarter standard deviation,
below Cohen's "small" effect 0.2 for warn, the What Works Clearinghouse's 0.25
"substantively important" bound for drift). The other metrics are reported and
decide the verdict only when given a threshold (`Thresholds`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, fields, replace

import numpy as np
import polars as pl

from .errors import BnormError, DataError, UsageError, opt
from .fold import Population, group_population, merge_population
from .moments import Moments, MomentsTable, table_moments
from .sketch import NO_EXP, Histogram, Summary

#: An empty PSI bin counts as this share (the logarithm needs a positive share).
PSI_FLOOR = 1e-4
#: Bins of the PSI: the fit's deciles.
PSI_BINS = 10
#: Buckets the input's sketch may occupy on the fitted grid before it coarsens
#: (exactly, both sides then compared at the coarser width).
DRIFT_CAP = 1 << 16

METRICS = ("psi", "smd", "variance_ratio", "ks", "wasserstein", "null_rate_change", "outside")
#: The short names of ``--drift-threshold`` (and the metric each names).
ALIASES = {
    "psi": "psi",
    "smd": "smd",
    "vr": "variance_ratio",
    "variance_ratio": "variance_ratio",
    "ks": "ks",
    "w1": "wasserstein",
    "wasserstein": "wasserstein",
    "null": "null_rate_change",
    "null_rate_change": "null_rate_change",
    "outside": "outside",
}
LEVELS = ("ok", "warn", "drift")


class DriftFound(BnormError):
    """A column drifted and ``--fail-on-drift`` was given (exit 3)."""

    exit_code = 3

    def __init__(self, message: str, results: list[ColumnDrift]) -> None:
        super().__init__(message)
        self.results = results


class DriftWarned(DataError):
    """A column drifted, without the gate, when warnings are errors (exit 1)."""

    def __init__(self, message: str, results: list[ColumnDrift]) -> None:
        super().__init__(message)
        self.results = results


@dataclass(frozen=True)
class Thresholds:
    """Per metric ``(warn, drift)``; for ``variance_ratio`` ``(low, high)``: drift outside.

    A metric with ``None`` is reported but does not decide the verdict.
    """

    psi: tuple[float, float] | None = (0.1, 0.25)
    smd: tuple[float, float] | None = (0.1, 0.25)
    variance_ratio: tuple[float, float] | None = None
    ks: tuple[float, float] | None = None
    wasserstein: tuple[float, float] | None = None
    null_rate_change: tuple[float, float] | None = None
    outside: tuple[float, float] | None = None

    @classmethod
    def parse(cls, specs: Sequence[str] | None) -> Thresholds:
        """``--drift-threshold`` values: ``ks=0.1`` (drift at 0.1), ``psi=0.05,0.2``
        (warn, drift), ``vr=0.5,2`` (drift outside [0.5, 2]), ``smd=off``."""
        out = cls()
        for spec in specs or []:
            name, sep, value = spec.partition("=")
            metric = ALIASES.get(name.strip().lower())
            if not sep or metric is None:
                raise UsageError(
                    f"{opt('drift_threshold')} {spec!r}: expected NAME=VALUE with NAME one of"
                    " psi, smd, vr, ks, w1, null, outside"
                    " (e.g. ks=0.1, psi=0.1,0.25, vr=0.5,2, smd=off)"
                )
            if value.strip().lower() == "off":
                out = replace(out, **{metric: None})
                continue
            try:
                numbers = [float(v) for v in value.split(",")]
            except ValueError:
                raise UsageError(
                    f"{opt('drift_threshold')} {spec!r}: {value!r} is not a number"
                ) from None
            if len(numbers) not in (1, 2) or not all(math.isfinite(v) for v in numbers):
                raise UsageError(
                    f"{opt('drift_threshold')} {spec!r}: one number (drift) or two (warn,drift)"
                )
            if metric == "variance_ratio":
                if len(numbers) == 1:  # vr=2 means [1/2, 2]
                    numbers = [1.0 / abs(numbers[0]), abs(numbers[0])] if numbers[0] else [0, 0]
                low, high = sorted(numbers)
                if low <= 0:
                    raise UsageError(f"{opt('drift_threshold')} {spec!r}: variance ratios are > 0")
                out = replace(out, variance_ratio=(low, high))
                continue
            warn, drift = (numbers[0], numbers[0]) if len(numbers) == 1 else tuple(numbers)
            if not 0 <= warn <= drift:
                raise UsageError(f"{opt('drift_threshold')} {spec!r}: need 0 <= warn <= drift")
            out = replace(out, **{metric: (warn, drift)})
        return out

    def gating(self) -> dict[str, tuple[float, float]]:
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


@dataclass
class ColumnDrift:
    """One column's comparison (the drift report's JSON fields, in this order)."""

    column: str
    verdict: str  # "ok" | "warn" | "drift" | "n/a"
    reasons: list[str]
    psi: float | None
    smd: float | None
    variance_ratio: float | None
    ks: float | None
    wasserstein: float | None
    null_rate_change: float | None
    outside: float | None
    fit_count: int
    new_count: int
    fit_null_rate: float | None
    new_null_rate: float | None
    fit_mean: float | None
    new_mean: float | None
    fit_std: float | None
    new_std: float | None
    bin_width: float | None
    psi_edges: list[float] = field(default_factory=list)
    fit_shares: list[float] = field(default_factory=list)
    new_shares: list[float] = field(default_factory=list)
    severity: float = 0.0


# -- metrics on two sketches ------------------------------------------------------
def common_grid(a: Histogram, b: Histogram) -> tuple[Histogram, Histogram]:
    """Both sketches at the coarser of their widths (exact: buckets nest)."""
    exp = max(a.exp, b.exp)
    return a.coarsened(exp), b.coarsened(exp)


def decile_edges(fit: Histogram, bins: int = PSI_BINS) -> np.ndarray:
    """Bucket indices ``e_1 < ... < e_m`` (m <= bins - 1): bin k holds indices in
    ``[e_k, e_(k+1))``; each edge is the end of the bucket where the fitted
    cumulative share first reaches k/bins (tied deciles merged)."""
    cum = np.cumsum(fit.count)
    n = int(cum[-1])
    pos = np.searchsorted(cum * bins, np.arange(1, bins, dtype=np.int64) * n, side="left")
    return _distinct(fit.index[np.minimum(pos, fit.index.size - 1)] + 1)


def _distinct(ordered: np.ndarray) -> np.ndarray:
    """``np.unique`` of a sorted array (without the import of ``numpy.ma`` that
    ``np.unique`` makes, ~30 ms of a run)."""
    keep = np.ones(ordered.size, bool)
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def bin_counts(h: Histogram, edges: np.ndarray) -> np.ndarray:
    """Counts of ``h`` in the bins cut at ``edges`` (bucket indices)."""
    which = np.searchsorted(edges, h.index, side="right")
    return np.bincount(which, weights=h.count, minlength=edges.size + 1)


def psi(fit_counts: np.ndarray, new_counts: np.ndarray, floor: float = PSI_FLOOR) -> float:
    p = np.maximum(fit_counts / fit_counts.sum(), floor)
    q = np.maximum(new_counts / new_counts.sum(), floor)
    return float(np.sum((q - p) * np.log(q / p)))


def _cdfs(a: Histogram, b: Histogram) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of occupied buckets and both CDFs at each one's upper boundary."""
    union = _distinct(np.sort(np.concatenate([a.index, b.index])))
    ca = np.zeros(union.size)
    cb = np.zeros(union.size)
    ca[np.searchsorted(union, a.index)] = a.count
    cb[np.searchsorted(union, b.index)] = b.count
    return union, np.cumsum(ca) / a.total, np.cumsum(cb) / b.total


def ks_binned(a: Histogram, b: Histogram) -> float:
    _, fa, fb = _cdfs(a, b)
    return float(np.max(np.abs(fa - fb)))


def wasserstein_binned(a: Histogram, b: Histogram) -> float:
    """W1 of the two distributions with each value moved to its bucket's lower end."""
    union, fa, fb = _cdfs(a, b)
    gaps = np.diff(union).astype(np.float64)
    return float(np.sum(np.abs(fa - fb)[:-1] * gaps) * a.width)


def _ratio(num: float, den: float) -> float:
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def compare(
    column: str,
    fit: Moments,
    fit_rows: int,
    fit_hist: Histogram | None,
    new: Moments,
    new_rows: int,
    new_hist: Histogram,
    outside: int,
    thresholds: Thresholds,
) -> ColumnDrift:
    """Every metric of one column, and its verdict."""
    fit_null = fit.missing / fit_rows if fit_rows else None
    new_null = new.missing / new_rows if new_rows else None
    out = ColumnDrift(
        column=column,
        verdict="ok",
        reasons=[],
        psi=None,
        smd=None,
        variance_ratio=None,
        ks=None,
        wasserstein=None,
        null_rate_change=None if fit_null is None or new_null is None else new_null - fit_null,
        outside=None,
        fit_count=fit.n,
        new_count=new.n,
        fit_null_rate=fit_null,
        new_null_rate=new_null,
        fit_mean=fit.mean,
        new_mean=new.mean,
        fit_std=fit.std,
        new_std=new.std,
        bin_width=None,
    )
    if fit.n and new.n:
        vf, vn = fit.biased_var, new.biased_var
        diff = (new.mean_hi - fit.mean_hi) + (new.mean_lo - fit.mean_lo)
        out.smd = _ratio(diff, math.sqrt((vf + vn) / 2))
        out.variance_ratio = _ratio(vn, vf) if vf or vn else 1.0
        out.outside = outside / new.n
        if fit_hist is not None and fit_hist.total:
            a, b = common_grid(fit_hist, new_hist)
            edges = decile_edges(a)
            fc, nc = bin_counts(a, edges), bin_counts(b, edges)
            out.psi = psi(fc, nc)
            out.ks = ks_binned(a, b)
            w1 = wasserstein_binned(a, b)
            out.wasserstein = _ratio(w1, math.sqrt(vf))
            out.bin_width = a.width
            out.psi_edges = [float(np.ldexp(float(e), a.exp)) for e in edges]
            out.fit_shares = (fc / fc.sum()).tolist()
            out.new_shares = (nc / nc.sum()).tolist()
    _verdict(out, thresholds)
    return out


def _verdict(d: ColumnDrift, t: Thresholds) -> None:
    if not d.fit_count:
        d.verdict = "n/a" if not d.new_count else "warn"
        d.reasons = ["no values at fit: nothing to compare with"]
        return
    if not d.new_count:
        d.verdict, d.severity = "drift", math.inf
        d.reasons = ["no valid values in the input"]
        return
    level = 0
    severity = 0.0
    for metric, (warn, drift) in t.gating().items():
        value = getattr(d, metric)
        if value is None:
            continue
        if metric == "variance_ratio":
            low, high = warn, drift
            bad = not low <= value <= high
            score = max(low / value if value else math.inf, value / high)
            if bad:
                level = 2
                d.reasons.append(f"variance ratio {value:.3g} outside [{low:g}, {high:g}]")
            severity = max(severity, score)
            continue
        v = abs(value)
        severity = max(severity, v / drift if drift else (math.inf if v else 0.0))
        name = {"psi": "PSI", "smd": "|SMD|", "null_rate_change": "|null rate change|"}.get(
            metric, metric
        )
        if v >= drift and (drift or v):
            level = 2
            d.reasons.append(f"{name} {v:.3g} >= {drift:g}")
        elif v >= warn and (warn or v):
            level = max(level, 1)
            d.reasons.append(f"{name} {v:.3g} >= {warn:g} (warn)")
    d.verdict = LEVELS[level]
    d.severity = severity


def ordered(results: Sequence[ColumnDrift]) -> list[ColumnDrift]:
    """Columns by severity: drift first, then warn, then the rest; worst first."""
    rank = {"drift": 0, "warn": 1, "ok": 2, "n/a": 3}
    return sorted(results, key=lambda d: (rank[d.verdict], -d.severity, d.column))


# -- accumulating the input --------------------------------------------------------
class Watch:
    """The input's moments and sketch on the fitted grid, accumulated piece by piece.

    Pieces may be of any size and come in any order: the population is merged
    exactly (Chan), the sketch by integer counts.
    """

    def __init__(
        self,
        columns: Sequence[str],
        fit_population: Population,
        fit_summary: Summary | None,
        fit_rows: int,
    ) -> None:
        self.columns = list(columns)
        width = len(self.columns)
        self.fit_population = fit_population
        self.fit_summary = fit_summary
        self.fit_rows = fit_rows
        hist = fit_summary.hist if fit_summary is not None else [Histogram.empty()] * width
        self.grid = [h.exp if h.index.size else NO_EXP for h in hist]
        self.bounds = (fit_population.min, fit_population.max)
        self.population = Population.empty(width)
        empty = [
            Histogram(e, h.index[:0], h.count[:0]) for e, h in zip(self.grid, hist, strict=True)
        ]
        z = np.zeros(width, np.int64)
        self.summary = Summary(empty, z, z.copy())
        self.outside = z.copy()
        self.rows = 0

    def table(self, frame: pl.DataFrame, first_row: int, inf: str, rows: int) -> MomentsTable:
        """One piece's moments table, with its sketch on the fitted grid."""
        return table_moments(
            frame,
            self.columns,
            max(rows, 1),
            first_row=first_row,
            inf=inf,
            rows=rows,
            grid=self.grid,
            bounds=self.bounds,
            cap=DRIFT_CAP,
        )

    def add(self, table: MomentsTable) -> None:
        if not len(table):
            return
        assert table.sketch is not None
        self.population = merge_population(self.population, group_population(table))
        self.summary = self.summary.added(
            table.sketch, table["nulls"].sum(axis=0), table["zeros"].sum(axis=0), DRIFT_CAP
        )
        self.outside = self.outside + table["outside"].sum(axis=0)
        self.rows += int(table.rows.sum())

    def results(self, thresholds: Thresholds) -> list[ColumnDrift]:
        fit_hist = self.fit_summary.hist if self.fit_summary is not None else None
        return [
            compare(
                c,
                self.fit_population.at(j),
                self.fit_rows,
                fit_hist[j] if fit_hist is not None else None,
                self.population.at(j),
                self.rows,
                self.summary.hist[j],
                int(self.outside[j]),
                thresholds,
            )
            for j, c in enumerate(self.columns)
        ]

    def observed(self) -> dict[str, Moments]:
        return {c: self.population.at(j) for j, c in enumerate(self.columns)}


def drifted(results: Sequence[ColumnDrift]) -> list[ColumnDrift]:
    return [d for d in results if d.verdict == "drift"]


def warning_line(d: ColumnDrift) -> str:
    return f'column "{d.column}" drifted from the fit: {"; ".join(d.reasons)}'
