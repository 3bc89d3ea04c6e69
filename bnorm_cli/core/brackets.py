"""Order statistics found by narrowing brackets of keys, and numpy's linear quantile rule.

A `Bracket` is a range of keys (`keysketch`: floats as ordered integers) with
the exact number of a column's values below it and inside it, and the ranks
(0-based order statistics) it is known to hold. Each pass over the input either
keeps a bracket's values (when they fit the budget; the rank is then read off
the sorted values) or counts them in up to ``2^k`` buckets of equal key width
(the bucket holding each rank, cut to the smallest and largest key it holds, becomes its
next, narrower bracket). A bracket of one key is resolved by its counts alone,
so ties never need keeping. A counting
pass narrows a bracket's key span by at least ``2^(k-1)``; key spans are below
2^64, so any rank is found within ``1 + ceil(64 / (k - 1))`` such passes whatever
the distribution.

`linear_rule` and `lerp` are numpy's ``method="linear"`` (Hyndman & Fan 7)
exactly as ``numpy.quantile`` computes them (``numpy/lib/_function_base_impl.py``:
``_get_indexes``, ``_get_gamma``, ``_lerp``), so the same two order statistics
give the same float64, including numpy's NaN where an order statistic is infinite.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from bnorm_cli.core.keysketch import KeySketch

#: Counters per bracket in a counting pass: at least, at most.
MIN_BUCKETS = 16
MAX_BUCKETS = 1 << 16


def linear_rule(n: int, probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """numpy's linear quantile of ``n`` sorted values: the ranks ``(previous, next)``
    to interpolate between and the weight ``gamma`` of ``next``."""
    virtual = (n - 1) * np.asarray(probs, np.float64)
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = -1
    following[above] = -1
    previous[virtual < 0] = 0
    following[virtual < 0] = 0
    previous_i, following_i = previous.astype(np.int64), following.astype(np.int64)
    gamma = np.asarray(virtual - previous_i, np.float64)  # numpy: -1 (the last) counts here
    previous_i[previous_i < 0] += n
    following_i[following_i < 0] += n
    return previous_i, following_i, gamma


def lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's ``_lerp``: ``a + (b - a) t``, from ``b`` where ``t >= 0.5``."""
    with np.errstate(invalid="ignore", over="ignore"):
        diff = b - a
        out = np.add(a, diff * t)
        np.subtract(b, diff * (1 - t), out=out, where=t >= 0.5)
    return out


def needed_ranks(n: int, probs: np.ndarray) -> list[int]:
    """The order statistics numpy's rule reads for ``probs`` (none if ``n == 0``)."""
    if n == 0:
        return []
    previous, following, _ = linear_rule(n, probs)
    return sorted(set(previous.tolist()) | set(following.tolist()))


@dataclass(frozen=True)
class Bracket:
    """Keys ``[lo, hi]`` hold ``count`` values, ``below`` values are smaller, and the
    order statistics ``ranks`` (``below <= r < below + count``) lie inside."""

    lo: int
    hi: int
    below: int
    count: int
    ranks: tuple[int, ...]


def descend(
    los: Sequence[int] | np.ndarray,
    his: Sequence[int] | np.ndarray,
    counts: Sequence[int] | np.ndarray,
    below: int,
    ranks: Sequence[int],
) -> tuple[dict[int, int], list[Bracket]]:
    """Buckets ``[los[i], his[i]]`` (ordered, disjoint) holding ``counts[i]`` values, above
    ``below`` smaller ones: each rank's key if its bucket is one key, else its bracket."""
    found: dict[int, int] = {}
    out: list[Bracket] = []
    cum = np.cumsum(np.asarray(counts, np.int64)) + below
    where = np.searchsorted(cum, np.asarray(ranks, np.int64), side="right")
    for i in sorted(set(where.tolist())):
        inside = tuple(r for r, w in zip(ranks, where.tolist(), strict=True) if w == i)
        start = int(cum[i - 1]) if i else below
        if los[i] == his[i]:
            found.update(dict.fromkeys(inside, int(los[i])))
        else:
            out.append(Bracket(int(los[i]), int(his[i]), start, int(counts[i]), inside))
    return found, out


def sketch_brackets(
    sketch: KeySketch, ranks: Sequence[int]
) -> tuple[dict[int, int], list[Bracket]]:
    """The first brackets of ``ranks``: the sketch buckets holding them."""
    _, count, low, high = sketch.arrays
    return descend(low, high, count, 0, ranks)


def estimate(sketch: KeySketch, ranks: Sequence[int]) -> tuple[dict[int, int], int]:
    """One-pass keys of ``ranks`` and their rank error (in values, 0 if all exact).

    Rank ``r`` in a bucket of keys ``[lo, hi]`` holding ranks ``[B, B + c)`` gets a
    key inside the bucket (placed by its rank); every value below ``lo`` ranks below
    ``B`` and every value above ``hi`` at ``B + c`` or later, so the estimate lies
    between the order statistics ``r - c`` and ``r + c``. Interpolating two such
    estimates (numpy's rule) adds at most 1: the error returned is ``max(c) + 1``.
    """
    found, brackets = sketch_brackets(sketch, ranks)
    worst = 0
    for b in brackets:
        for r in b.ranks:
            found[r] = b.lo + (b.hi - b.lo) * (2 * (r - b.below) + 1) // (2 * b.count)
        worst = max(worst, b.count + 1)
    return found, worst


@dataclass(frozen=True)
class Step:
    """What one pass does with a bracket: keep its values (``shift is None``) or count
    them in buckets of ``2^shift`` keys (each with its count, smallest and largest key)."""

    bracket: Bracket
    shift: int | None

    @property
    def buckets(self) -> int:
        b = self.bracket
        return 0 if self.shift is None else ((b.hi - b.lo) >> self.shift) + 1


def plan(brackets: Sequence[Bracket], value_budget: int, counter_budget: int) -> list[Step]:
    """This pass's step for each bracket: keep the smallest brackets while their values
    fit ``value_budget`` (in values), count the rest with ``counter_budget`` counters
    shared between them (between `MIN_BUCKETS` and `MAX_BUCKETS` each)."""
    keep = [False] * len(brackets)
    used = 0
    for i in sorted(range(len(brackets)), key=lambda i: brackets[i].count):
        if used + brackets[i].count > value_budget:
            break
        keep[i] = True
        used += brackets[i].count
    counted = len(brackets) - sum(keep)
    each = min(MAX_BUCKETS, max(MIN_BUCKETS, counter_budget // max(counted, 1)))
    bits = each.bit_length() - 1  # 2^bits <= each
    steps = []
    for b, k in zip(brackets, keep, strict=True):
        shift = max(0, (b.hi - b.lo).bit_length() - bits)
        steps.append(Step(b, None if k else shift))
    return steps


class PassCounter:
    """One column's steps over one pass: `add` each batch's keys, then `finish`."""

    def __init__(self, steps: Sequence[Step]) -> None:
        self.steps = sorted(steps, key=lambda s: s.bracket.lo)
        b = [s.bracket for s in self.steps]
        self.edges = np.array([e for x in b for e in (x.lo, x.hi + 1)], np.int64)
        self.keep = np.array([s.shift is None for s in self.steps], bool)
        sizes = np.array([s.buckets for s in self.steps], np.int64)
        self.offset = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        self.base = np.array([x.lo for x in b], np.int64).view(np.uint64)
        self.shift = np.array([s.shift or 0 for s in self.steps], np.uint64)
        self.counters = np.zeros(int(sizes.sum()), np.int64)
        self.low = np.full(self.counters.size, np.iinfo(np.int64).max, np.int64)
        self.high = np.full(self.counters.size, np.iinfo(np.int64).min, np.int64)
        self.seen = np.zeros(len(b), np.int64)
        self.kept: list[np.ndarray] = []
        self.kept_values = 0
        self.any_keep, self.any_count = bool(self.keep.any()), bool((~self.keep).any())

    def add(self, keys: np.ndarray) -> None:
        if not self.steps or not keys.size:
            return
        pos = np.searchsorted(self.edges, keys, side="right")
        inside = (pos & 1).astype(bool)
        which, k = pos[inside] >> 1, keys[inside]
        if not which.size:
            return
        self.seen += np.bincount(which, minlength=self.seen.size)
        keep = self.keep[which] if self.any_keep else np.zeros(which.size, bool)
        if self.any_keep:
            self.kept.append(k[keep])
            self.kept_values += int(self.kept[-1].size)
        if self.any_count:
            w, kk = which[~keep], k[~keep]
            slot = self.offset[w] + ((kk.view(np.uint64) - self.base[w]) >> self.shift[w]).astype(
                np.int64
            )
            self.counters += np.bincount(slot, minlength=self.counters.size)
            np.minimum.at(self.low, slot, kk)
            np.maximum.at(self.high, slot, kk)

    def finish(self) -> tuple[dict[int, int], list[Bracket]]:
        """Keys of the ranks found and the narrower brackets of the rest.

        ValueError if a bracket's count differs from the last pass's (the input changed).
        """
        for s, seen in zip(self.steps, self.seen.tolist(), strict=True):
            if seen != s.bracket.count:
                raise ValueError(f"{s.bracket.count} values in a range, now {seen}")
        kept = np.sort(np.concatenate(self.kept)) if self.kept else np.zeros(0, np.int64)
        found: dict[int, int] = {}
        out: list[Bracket] = []
        start = 0
        for s, off in zip(self.steps, self.offset.tolist(), strict=True):
            b = s.bracket
            if s.shift is None:
                for r in b.ranks:
                    found[r] = int(kept[start + r - b.below])
                start += b.count
                continue
            counts = self.counters[off : off + s.buckets]
            nz = np.flatnonzero(counts) + off
            los, his = self.low[nz].tolist(), self.high[nz].tolist()
            f, o = descend(los, his, self.counters[nz].tolist(), b.below, b.ranks)
            found.update(f)
            out.extend(o)
        return found, out
