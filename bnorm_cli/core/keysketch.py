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


class KeySketch:
    """Exact counts of keys in ``2^shift``-wide buckets, at most ``cap`` occupied.

    ``index`` (sorted, unique) and ``count`` are the occupied buckets, ``low`` and
    ``high`` the smallest and largest key each holds (so a bucket of one repeated
    value is known to be one key).
    """

    def __init__(self, cap: int) -> None:
        if cap < 2:
            raise ValueError("a sketch needs at least 2 buckets")
        self.cap = cap
        self.shift = 0
        self.index = np.zeros(0, np.int64)
        self.count = np.zeros(0, np.int64)
        self.low = np.zeros(0, np.int64)
        self.high = np.zeros(0, np.int64)

    @property
    def total(self) -> int:
        return int(self.count.sum())

    def add(self, keys: np.ndarray) -> None:
        if not keys.size:
            return
        s = np.sort(keys)
        b = s >> self.shift
        starts = np.flatnonzero(np.diff(b, prepend=b[0] - 1))
        ends = np.append(starts[1:], s.size)
        parts = (b[starts], (ends - starts).astype(np.int64), s[starts], s[ends - 1])
        if self.index.size:
            both = [np.concatenate([a, p]) for a, p in zip(self.arrays, parts, strict=True)]
            order = np.argsort(both[0], kind="stable")
            parts = _reduce(*(a[order] for a in both))
        self.index, self.count, self.low, self.high = self._fitted(*parts)

    @property
    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        return self.index, self.count, self.low, self.high

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
        self.shift += lo
        return _reduce(index >> lo, count, low, high)

    def bucket(self, i: int) -> tuple[int, int]:
        """The smallest and largest key bucket ``i`` holds."""
        return int(self.low[i]), int(self.high[i])
