"""Per-batch moments of one column and their exact-as-possible merge.

This module is the single home of the numeric rules (design.md §2):

* A *valid* value is one that is neither null nor NaN. Nulls and NaN are left
  out of every statistic (and preserved in the output by the engine).
* All arithmetic is float64. The mean is kept as an unevaluated sum of two
  floats ``mean_hi + mean_lo`` so that merging many batches of a column such as
  ``1e9 + noise`` loses no digits; ``m2`` is the sum of squared deviations from
  the mean, computed with the corrected two-pass formula inside a batch and the
  Chan/Golub/LeVeque update across batches. ``E[x^2] - E[x]^2`` is never used.
* Very large or very small magnitudes are scaled by an exact power of two
  before summing, so ``sum(x)`` cannot overflow near 1e306 and squares cannot
  underflow near 1e-160. A variance that itself exceeds float64 comes out as
  ``inf`` and is reported by the caller; it is never silently written.
* A constant batch has ``m2 == 0`` and its mean is that constant exactly, so a
  constant column normalizes to ``beta`` exactly.
* Biased variance is ``m2 / n`` (n >= 1); the unbiased one is ``m2 / (n - 1)``
  and does not exist for n < 2 (``None``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

# Scale by a power of two only when squares or sums could leave float64's range.
_SCALE_ABOVE_EXP = 500
_SCALE_BELOW_EXP = -400


@dataclass(frozen=True, slots=True)
class Moments:
    """Moments of the valid values of one column over some rows."""

    n: int = 0
    missing: int = 0
    mean_hi: float = 0.0
    mean_lo: float = 0.0
    m2: float = 0.0
    min: float = math.nan
    max: float = math.nan

    @property
    def mean(self) -> float | None:
        return self.mean_hi + self.mean_lo if self.n else None

    @property
    def var(self) -> float | None:
        """Population (biased, ddof=0) variance."""
        return self.m2 / self.n if self.n else None

    @property
    def var_unbiased(self) -> float | None:
        """Unbiased (ddof=1) variance; ``None`` when fewer than two values."""
        return self.m2 / (self.n - 1) if self.n >= 2 else None

    @property
    def std(self) -> float | None:
        var = self.var
        return math.sqrt(var) if var is not None else None


def _two_sum(a: float, b: float) -> tuple[float, float]:
    """s + e == a + b exactly (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def from_values(values: np.ndarray, missing: int = 0) -> Moments:
    """Moments of a 1-D float64 array of valid (non-NaN) values.

    With an infinite value only n, min and max are meaningful (mean and m2 are
    NaN): whether inf is an error or a missing value is the caller's policy.
    """
    n = int(values.size)
    if n == 0:
        return Moments(missing=missing)
    lo = float(values.min())
    hi = float(values.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):  # +/-inf: the caller's policy decides
        return Moments(n, missing, math.nan, 0.0, math.nan, lo, hi)
    if lo == hi:
        return Moments(n, missing, lo, 0.0, 0.0, lo, hi)
    _, exp = math.frexp(max(-lo, hi))
    shift = -exp if (exp > _SCALE_ABOVE_EXP or exp < _SCALE_BELOW_EXP) else 0
    xs = np.ldexp(values, shift) if shift else values
    m0 = float(xs.mean())
    dev = xs - m0
    s1 = float(dev.sum())
    s2 = float((dev * dev).sum())  # not np.dot: dot is not bit-reproducible
    corr = s1 / n
    m2 = max(s2 - s1 * corr, 0.0)
    mean_hi, mean_lo = _two_sum(m0, corr)
    if shift:
        mean_hi = math.ldexp(mean_hi, -shift)
        mean_lo = math.ldexp(mean_lo, -shift)
        m2 = _ldexp_or_inf(m2, -2 * shift)
    return Moments(n, missing, mean_hi, mean_lo, m2, lo, hi)


def _ldexp_or_inf(x: float, exp: int) -> float:
    try:
        return math.ldexp(x, exp)
    except OverflowError:
        return math.inf


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint sets of rows (Chan et al. update)."""
    missing = a.missing + b.missing
    if b.n == 0:
        return Moments(a.n, missing, a.mean_hi, a.mean_lo, a.m2, a.min, a.max)
    if a.n == 0:
        return Moments(b.n, missing, b.mean_hi, b.mean_lo, b.m2, b.min, b.max)
    n = a.n + b.n
    delta = (b.mean_hi - a.mean_hi) + (b.mean_lo - a.mean_lo)
    w = b.n / n
    hi, err = _two_sum(a.mean_hi, delta * w)
    hi, lo = _two_sum(hi, err + a.mean_lo)
    m2 = a.m2 + b.m2 + delta * (delta * (a.n * w))
    return Moments(n, missing, hi, lo, m2, min(a.min, b.min), max(a.max, b.max))


#: The one-pass sums are trusted while sum((x-s)^2) <= this * m2: beyond it the
#: shift s was far from the mean (in standard deviations) and cancellation could
#: cost more than ~1e-13 of the variance, so the batch is redone in two passes.
_MAX_SHIFT_RATIO = 1e3


def frame_moments(
    frame: pl.DataFrame, columns: Sequence[str], shifts: Mapping[str, float]
) -> dict[str, Moments | None]:
    """Moments of several columns of one batch in one multi-threaded polars pass.

    Sums are taken around a per-column shift ``s`` (a recent mean): ``mean = s +
    S1/n`` and ``m2 = S2 - S1^2/n`` with ``S1 = sum(x-s)``, ``S2 = sum((x-s)^2)``.
    ``None`` marks a column this fast path cannot vouch for (shift too far from
    the mean, magnitudes needing scaling, +/-inf): the caller computes it with
    `from_values`, the exact two-pass path. Deterministic: ``frame`` is one chunk
    and an eager select over one chunk does not depend on the thread count.

    The first pass sums the values as they are: a NaN (or +/-inf) anywhere in a
    column makes its sum NaN (or infinite), and only such columns are summed
    again with NaN turned into nulls (turning them into nulls up front doubled
    the cost of every batch; counting NaN cost another 20%).
    """
    out = _sums(frame, columns, shifts, nan_as_null=False)
    redo = [c for c, sums in out.items() if not math.isfinite(sums[4])]
    out.update(_sums(frame, redo, shifts, nan_as_null=True))
    return {c: _from_sums(*sums, shifts.get(c, 0.0)) for c, sums in out.items()}


_Sums = tuple[int, int, float | None, float | None, float, float]


def _sums(
    frame: pl.DataFrame, columns: Sequence[str], shifts: Mapping[str, float], nan_as_null: bool
) -> dict[str, _Sums]:
    """Per column: valid count, null count, min, max, S1, S2."""
    if not columns:
        return {}
    key = tuple((c, shifts.get(c, 0.0)) for c in columns)
    row = frame.select(_sum_exprs(key, nan_as_null)).row(0)
    return {c: row[6 * i : 6 * i + 6] for i, c in enumerate(columns)}


@functools.lru_cache(maxsize=16)
def _sum_exprs(columns: tuple[tuple[str, float], ...], nan_as_null: bool) -> list[pl.Expr]:
    """The expressions of `_sums` (cached: shifts rarely change between batches)."""
    exprs = []
    for i, (c, shift) in enumerate(columns):
        x = pl.col(c).cast(pl.Float64)
        x = x.fill_nan(None) if nan_as_null else x
        d = x - shift
        exprs += [
            x.count().alias(f"n{i}"),
            x.null_count().alias(f"m{i}"),
            x.min().alias(f"lo{i}"),
            x.max().alias(f"hi{i}"),
            d.sum().alias(f"s{i}"),
            (d * d).sum().alias(f"q{i}"),
        ]
    return exprs


def recentre(shift: float | None, m: Moments) -> bool:
    """Whether the sums of later batches should be taken around ``m``'s mean
    rather than ``shift``: when there is no shift yet or the mean has moved more
    than one standard deviation from it (sums around a shift k deviations away
    are (1 + k^2) times larger than m2, costing that factor in rounding)."""
    if shift is None:
        return True
    gap = (m.mean_hi - shift) + m.mean_lo
    return m.n * gap * gap > m.m2


def _from_sums(
    n: int, missing: int, lo: float | None, hi: float | None, s1: float, s2: float, shift: float
) -> Moments | None:
    if n == 0 or lo is None or hi is None:
        return Moments(missing=missing)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return None
    if lo == hi:
        return Moments(n, missing, lo, 0.0, 0.0, lo, hi)
    _, exp = math.frexp(max(-lo, hi, abs(shift)))
    if exp > _SCALE_ABOVE_EXP or exp < _SCALE_BELOW_EXP or not math.isfinite(s2):
        return None
    corr = s1 / n
    m2 = s2 - s1 * corr
    if m2 <= 0.0 or s2 > _MAX_SHIFT_RATIO * m2:
        return None
    mean_hi, mean_lo = _two_sum(shift, corr)
    return Moments(n, missing, mean_hi, mean_lo, m2, lo, hi)
