"""The per-column distribution summary: integer counts on a power-of-two grid.

A column's values are counted in buckets ``[i * 2^e, (i + 1) * 2^e)``, keyed by
the integer ``i = floor(x / 2^e)``. Dividing by a power of two only changes a
float's exponent, so ``i`` is exact and the same bits on every machine (no
``log``); the grid does not depend on where the values lie, so a column at
``1e9 +/- 1e-3`` gets buckets of ``2^-15`` just as one at ``0 +/- 1e-3`` does,
and a column that jumps from 0 to 1e9 keeps its resolution at both places.

The width follows the data: each batch proposes ``e`` with
``2^e <= std_B / 2^WIDTH_BITS`` (std_B its population standard deviation; for a
batch without spread, the ulp of its largest magnitude), and a sketch uses the
largest proposal of the batches it holds. Buckets nest (``i >> k`` is the
bucket at width ``2^(e+k)``), so a sketch is coarsened exactly, and two
sketches merge by coarsening both to the larger width and adding counts. When
more than `MAX_BUCKETS` buckets are occupied the width doubles until they fit
(bounded memory; heavy tails). The result is the canonical sketch of the rows:
the smallest width that is at least every batch's proposal and fits, whatever
the order or grouping of the merges, bit for bit.

Stated resolution: a bucket is at most 1/32 of the largest batch standard
deviation wide (at least 1/64 of it), unless `MAX_BUCKETS` forced it wider
(the width is stored, so every report knows it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .scratch import scratch

#: Bucket width <= batch std / 2^WIDTH_BITS.
WIDTH_BITS = 5
#: At most this many occupied buckets per column (the width doubles beyond).
MAX_BUCKETS = 2048
#: The exponent of a sketch that holds no value.
NO_EXP = -(1 << 20)
#: Bucket counts from a dense bincount when the chunk spans fewer buckets than this.
_DENSE_SPAN = 1 << 20


@dataclass(frozen=True)
class Histogram:
    """Counts of one column's values in buckets ``[i * 2^exp, (i + 1) * 2^exp)``.

    ``index`` is sorted and unique (int64), ``count`` the positive counts.
    """

    exp: int
    index: np.ndarray
    count: np.ndarray

    @classmethod
    def empty(cls) -> Histogram:
        return cls(NO_EXP, np.zeros(0, np.int64), np.zeros(0, np.int64))

    @property
    def total(self) -> int:
        return int(self.count.sum())

    @property
    def width(self) -> float:
        return float(np.ldexp(1.0, self.exp)) if self.exp != NO_EXP else 0.0

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Histogram)
            and self.exp == other.exp
            and np.array_equal(self.index, other.index)
            and np.array_equal(self.count, other.count)
        )

    __hash__ = None  # type: ignore[assignment]

    def coarsened(self, exp: int) -> Histogram:
        """The same values counted at width ``2^exp`` (``exp >= self.exp``): exact."""
        if exp == self.exp or not self.index.size:
            return Histogram(exp, self.index, self.count)
        if exp < self.exp:
            raise ValueError("a sketch cannot be refined")
        shifted = self.index >> min(exp - self.exp, 63)  # arithmetic shift: floor division
        keep = np.flatnonzero(np.diff(shifted, prepend=shifted[0] - 1))
        return Histogram(exp, shifted[keep], np.add.reduceat(self.count, keep))

    def fitted(self, cap: int = MAX_BUCKETS) -> Histogram:
        """Coarsened until at most ``cap`` buckets are occupied."""
        h = self
        while h.index.size > cap:  # one step at a time: the smallest width that fits
            h = h.coarsened(h.exp + 1)
        return h

    def quantile(self, q: float) -> float:
        """The midpoint of the bucket holding the ``q``-quantile (rank ceil(q*n))."""
        n = self.total
        if not n:
            return float("nan")
        rank = max(1, int(np.ceil(q * n)))
        i = int(np.searchsorted(np.cumsum(self.count), rank))
        return float(np.ldexp(float(self.index[i]) + 0.5, self.exp))


def merge(a: Histogram, b: Histogram, cap: int = MAX_BUCKETS) -> Histogram:
    """The sketch of the union of two disjoint sets of values (commutative, associative)."""
    if not b.index.size and b.exp <= a.exp:
        return a if a.index.size <= cap else a.fitted(cap)
    if not a.index.size and a.exp <= b.exp:
        return b if b.index.size <= cap else b.fitted(cap)
    exp = max(a.exp, b.exp)
    ca, cb = a.coarsened(exp), b.coarsened(exp)
    if ca.index.size and cb.index.size:
        first = min(int(ca.index[0]), int(cb.index[0]))
        span = max(int(ca.index[-1]), int(cb.index[-1])) - first + 1
        if span <= 4 * (ca.index.size + cb.index.size) + 64:
            # neighbouring buckets (the usual case): added in a dense array, no sort
            total = np.zeros(span, np.int64)
            total[ca.index - first] = ca.count
            total[cb.index - first] += cb.count
            nz = np.flatnonzero(total)
            return Histogram(exp, nz + first, total[nz]).fitted(cap)
    index = np.concatenate([ca.index, cb.index])
    count = np.concatenate([ca.count, cb.count])
    keys, inverse = np.unique(index, return_inverse=True)
    total = np.bincount(inverse, weights=count, minlength=keys.size).astype(np.int64)
    return Histogram(exp, keys, total).fitted(cap)


def merge_all(hists: Sequence[Histogram], cap: int = MAX_BUCKETS) -> Histogram:
    out = Histogram.empty()
    for h in hists:
        out = merge(out, h, cap)
    return out


def batch_exponents(
    n: np.ndarray, var: np.ndarray, low: np.ndarray, high: np.ndarray
) -> np.ndarray:
    """Each batch's proposed bucket exponent, from its moments (``NO_EXP`` if empty)."""
    with np.errstate(invalid="ignore"):
        top = np.where(n > 0, np.fmax(np.abs(low), np.abs(high)), 0.0)
        e_top = np.frexp(top)[1].astype(np.int64) - 53  # the ulp of the largest magnitude
        e_std = np.frexp(np.sqrt(np.where(n > 1, var, 0.0)))[1].astype(np.int64) - 1 - WIDTH_BITS
    spread = (n > 1) & (var > 0)
    e = np.where(spread, np.maximum(e_std, e_top), e_top)
    return np.where(n > 0, e, NO_EXP)


def batch_exponent(n: int, var: float, low: float, high: float) -> int:
    """`batch_exponents` of one batch (plain floats: no array overhead per column)."""
    if n <= 0:
        return NO_EXP
    e_top = math.frexp(max(abs(low), abs(high)))[1] - 53
    if n > 1 and var > 0:
        return max(math.frexp(math.sqrt(var))[1] - 1 - WIDTH_BITS, e_top)
    return e_top


def exp_for_range(low: float, high: float) -> int:
    """The smallest exponent at which every value in [low, high] has an index below 2^53."""
    top = max(abs(low), abs(high))
    return math.frexp(top)[1] - 53 if top > 0 else NO_EXP


def count_values(
    values: np.ndarray,
    exp: int,
    cap: int = MAX_BUCKETS,
    low: float | None = None,
    high: float | None = None,
) -> Histogram:
    """The sketch of finite ``values`` at width ``2^exp`` (coarser if more than ``cap``).

    ``low``/``high``: the values' min and max when known (from the moments).
    """
    if not values.size:
        return Histogram(exp, np.zeros(0, np.int64), np.zeros(0, np.int64))
    scale = 2.0**-exp if -1000 < exp < 1000 else None
    if low is None or high is None:
        low, high = float(values.min()), float(values.max())
    first = math.floor(low * scale if scale is not None else math.ldexp(low, -exp))
    last = math.floor(high * scale if scale is not None else math.ldexp(high, -exp))
    # a reused work array (`scratch`): fresh ones cost more in page faults than the counting
    buf = scratch("sketch.scaled", values.size)
    # exact: scaling by a power of two (ldexp where 2^-exp is not a normal float)
    if scale is not None:
        np.multiply(values, scale, out=buf)
    else:
        np.ldexp(values, -exp, out=buf)
    np.floor(buf, out=buf)
    if last - first < _DENSE_SPAN:
        dense = np.bincount(_offsets(buf, first), minlength=last - first + 1)
        nz = np.flatnonzero(dense)
        h = Histogram(exp, nz + first, dense[nz])
    else:
        keys, counts = np.unique(buf.astype(np.int64), return_counts=True)
        h = Histogram(exp, keys, counts.astype(np.int64))
    return h if h.index.size <= cap else h.fitted(cap)


#: ``2^52 + k`` (an integer ``0 <= k < 2^52``) as a float: its bits are these plus ``k``.
_TWO52_BITS = 0x4330000000000000


def _offsets(floors: np.ndarray, first: int) -> np.ndarray:
    """``floors - first`` as int64, overwriting ``floors`` (integer-valued floats,
    ``0 <= floors - first < 2^52``).

    ``floors + (2^52 - first)`` is the integer ``2^52 + k``: exact (every integer in
    [2^52, 2^53) is a float), and its bits are ``_TWO52_BITS + k``, so one float
    addition and one integer subtraction replace a float-to-integer conversion
    (2x slower), and the counts need no further cast (`np.bincount` takes int64).
    """
    shift = (1 << 52) - first
    if float(shift) != shift:  # not a float (first below -2^52, odd): the plain way
        return np.subtract(floors, float(first)).astype(np.int64)
    np.add(floors, float(shift), out=floors)
    bits = floors.view(np.int64)
    return np.subtract(bits, _TWO52_BITS, out=bits)


# -- serialized form -------------------------------------------------------------
def to_runs(h: Histogram, gap: int = 8) -> list[list[object]]:
    """``[[first_index, [counts...]], ...]``: runs of buckets, gaps of < ``gap`` as zeros."""
    if not h.index.size:
        return []
    idx, cnt = h.index, h.count
    breaks = np.flatnonzero(np.diff(idx) > gap) + 1
    runs: list[list[object]] = []
    for start, stop in zip(
        np.concatenate([[0], breaks]), np.concatenate([breaks, [idx.size]]), strict=True
    ):
        first = int(idx[start])
        dense = np.zeros(int(idx[stop - 1]) - first + 1, np.int64)
        dense[idx[start:stop] - first] = cnt[start:stop]
        runs.append([first, dense.tolist()])
    return runs


def from_runs(exp: int, runs: Sequence[Sequence[object]]) -> Histogram:
    index: list[np.ndarray] = []
    count: list[np.ndarray] = []
    for first, counts in runs:
        c = np.asarray(counts, np.int64)
        nz = np.flatnonzero(c)
        index.append(nz.astype(np.int64) + int(first))  # type: ignore[call-overload]
        count.append(c[nz])
    if not index:
        return Histogram(exp, np.zeros(0, np.int64), np.zeros(0, np.int64))
    i, c = np.concatenate(index), np.concatenate(count)
    order = np.argsort(i, kind="stable")
    return Histogram(exp, i[order], c[order])


@dataclass(frozen=True)
class Summary:
    """The distribution summary of every column: a sketch and exact counts.

    ``nulls`` counts nulls (the rest of a column's missing values are NaN, and
    +/-inf under ``--inf missing``), ``zeros`` the values equal to 0.
    """

    hist: list[Histogram]
    nulls: np.ndarray
    zeros: np.ndarray

    @classmethod
    def empty(cls, width: int) -> Summary:
        z = np.zeros(width, np.int64)
        return cls([Histogram.empty() for _ in range(width)], z, z.copy())

    def take(self, index: Sequence[int]) -> Summary:
        idx = np.asarray(index, np.int64)
        return Summary([self.hist[i] for i in idx.tolist()], self.nulls[idx], self.zeros[idx])

    def added(
        self,
        hist: Sequence[Histogram],
        nulls: np.ndarray,
        zeros: np.ndarray,
        cap: int = MAX_BUCKETS,
    ) -> Summary:
        """This summary with more rows' (``nulls``/``zeros``: per-column totals)."""
        return Summary(
            [merge(a, b, cap) for a, b in zip(self.hist, hist, strict=True)],
            self.nulls + nulls,
            self.zeros + zeros,
        )
