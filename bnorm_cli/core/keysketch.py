"""Floats as ordered integers, and a bounded count of them: the first pass of exact quantiles.

`to_keys` maps each float64 (not NaN) to an int64 *key* with the same order:
the bits of a non-negative float, and for a negative one its bits with all but
the sign flipped. Every key between ``to_keys(-inf)`` and ``to_keys(inf)`` is a
float (``-0.0`` is read as ``0.0``), so a range of keys is a range of values
with exact float64 edges, and halving a range of keys always narrows the values
it holds: a column at ``1e9 +/- 1e-3`` spans some 2^14 keys, not one bucket.
Key space is roughly logarithmic in the value (exponent bits first), which
suits heavy tails.

`KeySketch` counts a column's keys in buckets ``[b << shift, (b + 1) << shift)``;
when more than ``cap`` buckets are occupied ``shift`` grows until they fit. The
counts are exact, so each bucket brackets its values with known ranks (and
its smallest and largest key are kept, so a bucket of one tied value is
resolved at once). The
result is canonical: ``shift`` is the smallest that fits every value seen, so it
does not depend on how the values were split into batches.
"""

from __future__ import annotations

import numpy as np

_LOW63 = np.int64(0x7FFFFFFFFFFFFFFF)


def to_keys(values: np.ndarray) -> np.ndarray:
    """Order-preserving int64 keys of float64 ``values`` (no NaN; ``-0.0`` as ``0.0``)."""
    bits = (np.asarray(values, np.float64) + 0.0).view(np.int64)  # + 0.0: -0.0 -> 0.0
    return bits ^ ((bits >> 63) & _LOW63)


def from_keys(keys: np.ndarray) -> np.ndarray:
    """The floats of ``keys`` (the inverse of `to_keys`)."""
    k = np.asarray(keys, np.int64)
    return (k ^ ((k >> 63) & _LOW63)).view(np.float64)


def key_of(value: float) -> int:
    return int(to_keys(np.array([value]))[0])


def value_of(key: int) -> float:
    return float(from_keys(np.array([key], np.int64))[0])


#: The smallest and largest keys: -inf and +inf.
KEY_MIN = key_of(-np.inf)
KEY_MAX = key_of(np.inf)


def _reduce(
    index: np.ndarray, count: np.ndarray, low: np.ndarray, high: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Merge equal entries of the sorted ``index``: add counts, keep extremes."""
    if index.size < 2:
        return index, count, low, high
    starts = np.flatnonzero(np.diff(index, prepend=index[0] - 1))
    if starts.size == index.size:
        return index, count, low, high
    return (
        index[starts],
        np.add.reduceat(count, starts),
        np.minimum.reduceat(low, starts),
        np.maximum.reduceat(high, starts),
    )


def _occupied(index: np.ndarray, extra: int) -> int:
    """Distinct entries of the sorted ``index`` after shifting right by ``extra``."""
    if index.size < 2:
        return int(index.size)
    return 1 + int(np.count_nonzero(np.diff(index >> extra)))


#: Buckets in a span counted with dense arrays rather than by sorting.
_DENSE_SPAN = 1 << 20


def _dense(
    index: np.ndarray, low: np.ndarray, high: np.ndarray, count: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """`_combine` with arrays as long as the span of ``index``, if that span is small."""
    first, last = int(index.min()), int(index.max())
    span = last - first + 1
    if span > min(_DENSE_SPAN, max(1 << 16, 4 * index.size)):
        return None
    off = index - first
    c = np.bincount(off, weights=count, minlength=span)  # float counts: exact below 2^53
    nz = np.flatnonzero(c)
    lo = np.full(span, np.iinfo(np.int64).max, np.int64)
    hi = np.full(span, np.iinfo(np.int64).min, np.int64)
    np.minimum.at(lo, off, low)
    np.maximum.at(hi, off, high)
    return nz + first, c[nz].astype(np.int64), lo[nz], hi[nz]


def _combine(
    index: np.ndarray, low: np.ndarray, high: np.ndarray, count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Entries gathered by ``index``: sorted unique index, summed ``count``, smallest
    ``low`` and largest ``high``."""
    dense = _dense(index, low, high, count)
    if dense is not None:
        return dense
    order = np.argsort(index, kind="stable")  # concatenated sorted runs: timsort merges them
    return _reduce(index[order], count[order], low[order], high[order])


def _counted(keys: np.ndarray, shift: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One batch's buckets at ``shift``: index, count, smallest and largest key."""
    dense = _dense(keys >> shift, keys, keys, None)
    if dense is not None:
        return dense
    k = np.sort(keys)
    b = k >> shift
    starts = np.flatnonzero(np.diff(b, prepend=b[0] - 1))
    ends = np.append(starts[1:], k.size)
    return b[starts], (ends - starts).astype(np.int64), k[starts], k[ends - 1]


class KeySketch:
    """Exact counts of keys in ``2^shift``-wide buckets, at most ``cap`` occupied.

    ``index`` (sorted, unique) and ``count`` are the occupied buckets, ``low`` and
    ``high`` the smallest and largest key each holds (so a bucket of one repeated
    value is known to be one key). Batches wait in up to ``cap`` pending buckets
    before they are merged (memory: at most ``2 * cap`` buckets).
    """

    def __init__(self, cap: int) -> None:
        if cap < 2:
            raise ValueError("a sketch needs at least 2 buckets")
        self.cap = cap
        self._shift = 0
        empty = np.zeros(0, np.int64)
        self._arrays = (empty, empty, empty, empty)
        self._pending: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self._waiting = 0

    def add(self, keys: np.ndarray) -> None:
        if not keys.size:
            return
        part = _counted(keys, self._shift)
        self._pending.append(part)
        self._waiting += part[0].size
        if self._waiting > self.cap:
            self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        parts = [self._arrays, *self._pending]
        self._pending, self._waiting = [], 0
        index, count, low, high = (np.concatenate([p[i] for p in parts]) for i in range(4))
        self._arrays = self._fitted(*_combine(index, low, high, count))

    def _fitted(
        self, index: np.ndarray, count: np.ndarray, low: np.ndarray, high: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Coarsened by the smallest extra shift that leaves at most ``cap`` buckets."""
        if index.size <= self.cap:
            return index, count, low, high
        lo, hi = 1, 63  # at shift 63 every key is bucket -1 or 0: at most 2 <= cap
        while lo < hi:
            mid = (lo + hi) // 2
            if _occupied(index, mid) <= self.cap:
                hi = mid
            else:
                lo = mid + 1
        self._shift += lo
        return _reduce(index >> lo, count, low, high)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``(index, count, low, high)`` of the occupied buckets (pending batches merged)."""
        self._merge()
        return self._arrays

    @property
    def shift(self) -> int:
        self._merge()
        return self._shift

    @property
    def index(self) -> np.ndarray:
        return self.arrays[0]

    @property
    def count(self) -> np.ndarray:
        return self.arrays[1]

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def bucket(self, i: int) -> tuple[int, int]:
        """The smallest and largest key bucket ``i`` holds."""
        _, _, low, high = self.arrays
        return int(low[i]), int(high[i])
