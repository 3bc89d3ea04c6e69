"""The fold: a moments table, in batch order -> population and running statistics.

Pure functions over `MomentsTable` records, vectorized across columns (and,
for the population, across batches), so a 1,000-column file or a 32-row batch
size does not fold in a Python loop per column or per record:

* population: batches are combined in groups of ``GROUP_ROWS`` rows (a fixed
  function of the batch size, counted from the fold's first batch) by the exact
  two-level formula (each batch's mean taken relative to the group's first
  mean, summed exactly where it cancels), and groups are merged with the Chan
  update. The grouping depends only on batch indices, so every engine and every
  chunking of the table gives the same bits. A weighted table (field ``wsum``)
  folds the same way with weight sums in place of counts (the mean weighs each
  batch by its weight sum, the Chan update too); ``n`` is still summed as a count;
* running: PyTorch ``BatchNorm1d`` semantics, the recurrence
  ``r = (1 - f) * r + f * x`` batch by batch (start 0/1, ``f`` the momentum, or
  ``1/k`` for the cumulative average), vectorized across columns. A batch with
  fewer than two valid values has no unbiased variance and does not update
  (PyTorch raises instead). Weighted, each batch's weighted mean and unbiased
  weighted variance ``biased * W / (W - 1)`` (``W`` the batch's weight sum, as for
  frequency weights) feed the same recurrence; a batch with ``W <= 1`` does not
  update.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .moments import Moments, MomentsTable, _two_prod, record, two_prod, two_sum
from .sketch import Summary

#: ``None`` is PyTorch's ``momentum=None``: the cumulative (equal-weight) average.
Momentum = float | None

#: Rows per population group: batches are combined this many rows at a time.
GROUP_ROWS = 1 << 16
_CANCEL = 2.0**20


@dataclass(frozen=True)
class Population:
    """Population moments of every column: ``(columns,)`` arrays."""

    n: np.ndarray
    missing: np.ndarray
    mean_hi: np.ndarray
    mean_lo: np.ndarray
    var: np.ndarray
    min: np.ndarray
    max: np.ndarray
    #: weight sums (None: unweighted, where the counts ``n`` are the weights)
    wsum: np.ndarray | None = field(default=None, kw_only=True)

    @classmethod
    def empty(cls, width: int, weighted: bool = False) -> Population:
        zi, zf = np.zeros(width, np.int64), np.zeros(width)
        nan = np.full(width, math.nan)
        w = zf.copy() if weighted else None
        return cls(zi, zi.copy(), zf, zf.copy(), zf.copy(), nan, nan.copy(), wsum=w)

    @classmethod
    def of(cls, moments: Sequence[Moments]) -> Population:
        def arr(name: str, dtype: type) -> np.ndarray:
            return np.array([getattr(m, name) for m in moments], dtype)

        weighted = any(m.weight is not None for m in moments)
        return cls(
            arr("n", np.int64),
            arr("missing", np.int64),
            arr("mean_hi", np.float64),
            arr("mean_lo", np.float64),
            arr("biased_var", np.float64),
            arr("min", np.float64),
            arr("max", np.float64),
            wsum=np.array([m.weight or 0.0 for m in moments], np.float64) if weighted else None,
        )

    @property
    def weights(self) -> np.ndarray:
        """Each column's weight sum (unweighted: its count)."""
        return self.n.astype(np.float64) if self.wsum is None else self.wsum

    def at(self, j: int) -> Moments:
        w = None if self.wsum is None else self.wsum[j]
        return record(*(getattr(self, f)[j] for f in _POP_FIELDS), weight=w)

    def take(self, index: Sequence[int]) -> Population:
        idx = np.asarray(index, np.int64)
        w = None if self.wsum is None else self.wsum[idx]
        return Population(*(getattr(self, f)[idx] for f in _POP_FIELDS), wsum=w)


#: A count a statistics file does not know (`bnorm import` of statistics fitted
#: elsewhere): the population ``n`` or ``missing`` of such a column. Never folded
#: or merged (`model.merge` refuses imported statistics).
UNKNOWN = -1

_POP_FIELDS = ("n", "missing", "mean_hi", "mean_lo", "var", "min", "max")


@dataclass(frozen=True, slots=True)
class Running:
    """The running statistics of one column (a view of `RunningState`)."""

    mean: float = 0.0
    var: float = 1.0
    updates: int = 0
    #: The EMA's additive parts (design.md §5): ``var = var_from_zero + start_weight``,
    #: the variance's EMA started at 0 and the weight ``(1-m)^k`` left on the start 1.
    #: ``None``: not known (a statistics file written before they were recorded).
    var_from_zero: float | None = None
    start_weight: float | None = None


def _known(x: float) -> float | None:
    return None if math.isnan(x) else x


@dataclass(frozen=True)
class RunningState:
    """PyTorch running statistics of every column: ``(columns,)`` arrays.

    ``updates`` counts the batches that updated them (the ``k`` of the
    cumulative ``1/k``); it can be smaller than the number of batches.
    """

    mean: np.ndarray
    var: np.ndarray
    updates: np.ndarray
    #: ``var``'s additive parts (see `Running`), NaN where not known; None: all unknown.
    var0: np.ndarray | None = None
    weight: np.ndarray | None = None

    @classmethod
    def start(cls, width: int) -> RunningState:
        return cls(
            np.zeros(width),
            np.ones(width),
            np.zeros(width, np.int64),
            np.zeros(width),
            np.ones(width),
        )

    def parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(var0, weight), NaN where unknown."""
        nan = np.full(self.var.shape, np.nan)
        return (
            nan if self.var0 is None else self.var0,
            nan if self.weight is None else self.weight,
        )

    def at(self, j: int) -> Running:
        var0, weight = self.parts()
        return Running(
            float(self.mean[j]),
            float(self.var[j]),
            int(self.updates[j]),
            _known(float(var0[j])),
            _known(float(weight[j])),
        )

    @classmethod
    def of(cls, running: Sequence[Running]) -> RunningState:
        def known(x: float | None) -> float:
            return math.nan if x is None else x

        return cls(
            np.array([r.mean for r in running], np.float64),
            np.array([r.var for r in running], np.float64),
            np.array([r.updates for r in running], np.int64),
            np.array([known(r.var_from_zero) for r in running], np.float64),
            np.array([known(r.start_weight) for r in running], np.float64),
        )

    def take(self, index: Sequence[int]) -> RunningState:
        idx = np.asarray(index, np.int64)
        var0, weight = self.parts()
        return RunningState(
            self.mean[idx], self.var[idx], self.updates[idx], var0[idx], weight[idx]
        )


def group_population(t: MomentsTable) -> Population:
    """The population moments of all batches of ``t`` together (one group).

    Each batch weighs its count ``n`` or, in a weighted table, its weight sum
    (scaled by a power of two per column, so sums of huge weights do not overflow).
    """
    ml, mh = t["mean_lo"], t["mean_hi"]
    count = t["n"].sum(axis=0)
    weighted = t.weighted
    if weighted:
        raw = t["wsum"]
        wexp = np.frexp(raw.max(axis=0, initial=0.0))[1]
        n = np.ldexp(raw, -wexp)
        total = n.sum(axis=0)
    else:
        n = t["n"]
        total = count
    has = n > 0
    width = len(t.columns)
    cols = np.arange(width)
    ref = np.where(has.any(axis=0), mh[has.argmax(axis=0), cols], 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        d = np.where(has, (mh - ref) + ml, 0.0)
        # sum(n_i * d_i) in double-double: exact products, compensated pairwise sum
        p, e = two_prod(n.astype(np.float64), d)
        s_hi, s_lo = sum2(p, e)
        safe = np.where(total > 0, total, 1).astype(np.float64)
        q = s_hi / safe
        qp, qe = two_prod(q, safe)
        q_lo = ((s_hi - qp) - qe + s_lo) / safe
        dbar = q + q_lo
        hi, err = two_sum(ref, q)
        hi, lo = two_sum(hi, err + q_lo)
        # the terms n_i * mean_i cancel (their mean is far below their size): sum exactly
        cancel = (total > 0) & ((n * np.abs(mh)).sum(axis=0) > _CANCEL * np.abs(hi) * total)
        for j in np.flatnonzero(cancel):
            hi[j], lo[j] = _exact_mean(n[:, j], mh[:, j], ml[:, j])
            d[:, j] = np.where(has[:, j], (mh[:, j] - hi[j]) + (ml[:, j] - lo[j]), 0.0)
            dbar[j] = 0.0
        w = n / safe
        var = sum2(w * t["var"])[0] + sum2(w * np.square(d - dbar))[0]
    return Population(
        count,
        t["missing"].sum(axis=0),
        np.where(total > 0, hi, 0.0),
        np.where(total > 0, lo, 0.0),
        np.where(total > 0, var, 0.0),
        np.fmin.reduce(t["min"], axis=0) if len(t) else np.full(width, math.nan),
        np.fmax.reduce(t["max"], axis=0) if len(t) else np.full(width, math.nan),
        wsum=np.ldexp(sum2(n)[0], wexp) if weighted else None,
    )


def sum2(x: np.ndarray, lo: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sums over axis 0 as double-doubles ``hi + lo``: a pairwise tree of error-free
    additions (the rounding errors are summed too), so the result is as accurate
    as if summed in twice float64's precision. ``lo``: low parts to add in."""
    hi = x
    low = np.zeros_like(x) if lo is None else lo
    while hi.shape[0] > 1:
        if hi.shape[0] % 2:
            pad = np.zeros((1, *hi.shape[1:]))
            hi, low = np.concatenate([hi, pad]), np.concatenate([low, pad])
        s, e = two_sum(hi[0::2], hi[1::2])
        low = low[0::2] + low[1::2] + e
        hi = s
    if hi.shape[0] == 0:
        zero = np.zeros(x.shape[1:])
        return zero, zero.copy()
    s, e = two_sum(hi[0], low[0])
    plain = x.sum(axis=0)  # an infinite sum stays infinite (inf - inf is NaN in the error terms)
    finite = np.isfinite(plain)
    return np.where(finite, s, plain), np.where(finite, e, 0.0)


def _exact_mean(n: np.ndarray, hi: np.ndarray, lo: np.ndarray) -> tuple[float, float]:
    """sum(n * (hi + lo)) / sum(n) to double-double precision, with exact sums
    (``n``: counts, or weight sums)."""
    terms: list[float] = []
    for k, h, low in zip(n.tolist(), hi.tolist(), lo.tolist(), strict=True):
        if k:
            terms += [*_two_prod(float(k), h), *_two_prod(float(k), low)]
    count = float(n.sum()) if n.dtype.kind in "iu" else math.fsum(n.tolist())
    mean = math.fsum(terms) / count
    p, e = _two_prod(mean, count)
    return mean, math.fsum([*terms, -p, -e]) / count


def merge_population(a: Population, b: Population) -> Population:
    """The Chan update, vectorized: moments of two disjoint sets of rows (weighted:
    with weight sums in place of counts)."""
    weighted = a.wsum is not None or b.wsum is not None
    n = a.n + b.n
    ta, tb = (a.weights, b.weights) if weighted else (a.n, b.n)
    total = ta + tb
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        safe = np.where(total > 0, total, 1)
        wa, wb = ta / safe, tb / safe
        delta = (b.mean_hi - a.mean_hi) + (b.mean_lo - a.mean_lo)
        hi, err = two_sum(a.mean_hi, delta * wb)
        hi, lo = two_sum(hi, err + a.mean_lo)
        var = wa * a.var + wb * b.var + (delta * wa) * (delta * wb)
    only_a, only_b = tb == 0, ta == 0
    return Population(
        n,
        a.missing + b.missing,
        np.where(only_a, a.mean_hi, np.where(only_b, b.mean_hi, hi)),
        np.where(only_a, a.mean_lo, np.where(only_b, b.mean_lo, lo)),
        np.where(only_a, a.var, np.where(only_b, b.var, var)),
        np.fmin(a.min, b.min),
        np.fmax(a.max, b.max),
        wsum=total if weighted else None,
    )


def batch_stats(t: MomentsTable) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per batch and column: mean, unbiased variance (0 where n < 2), updates (n >= 2).

    Weighted: the unbiased variance of frequency weights, ``var * W / (W - 1)``
    with ``W`` the batch's weight sum; a batch updates where ``W > 1``.
    """
    if t.weighted:
        n = t["wsum"]
        upd = n > 1.0
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            unbiased = np.where(upd, t["var"] * (n / np.where(upd, n - 1.0, 1.0)), 0.0)
        mean = np.where(upd, t["mean_hi"] + t["mean_lo"], 0.0)
        return mean, unbiased, upd
    n = t["n"]
    upd = n >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        unbiased = np.where(upd, t["var"] * (n / np.maximum(n - 1, 1)), 0.0)
    mean = np.where(upd, t["mean_hi"] + t["mean_lo"], 0.0)
    return mean, unbiased, upd


def update_running(
    run: RunningState, t: MomentsTable, momentum: Momentum, trace: bool = False
) -> tuple[RunningState, np.ndarray | None, np.ndarray | None]:
    """``run`` updated by every batch of ``t`` in order (and, with ``trace``, the
    running mean and variance after each batch: ``(batches, columns)`` arrays)."""
    mean, unbiased, upd = batch_stats(t)
    width = len(t.columns)
    counts = run.updates + np.cumsum(upd, axis=0)  # updates after each batch
    if momentum is None:
        f = np.where(upd, 1.0 / np.maximum(counts, 1), 0.0)
    else:
        f = np.where(upd, momentum, 0.0)
    keep = np.where(upd, 1.0 - f, 1.0)
    # one recurrence over [mean | var | var0 | weight]: r = (1 - f) * r + f * x, as
    # PyTorch computes it; var0 is var's EMA from 0 and weight what is left on var's
    # start 1 (var = var0 + weight, kept apart so that merging never subtracts)
    x = np.concatenate([mean, unbiased, unbiased, np.zeros_like(mean)], axis=1)
    ff = np.concatenate([f, f, f, f], axis=1)
    kk = np.concatenate([keep, keep, keep, keep], axis=1)
    var0, weight = run.parts()
    r = np.concatenate([run.mean, run.var, var0, weight])
    history = np.empty((len(t), 2 * width)) if trace else None
    for j in range(len(t)):
        r = kk[j] * r + ff[j] * x[j]
        if history is not None:
            history[j] = r[: 2 * width]
    updates = counts[-1] if len(t) else run.updates
    out = RunningState(
        r[:width].copy(),
        r[width : 2 * width].copy(),
        updates.astype(np.int64),
        r[2 * width : 3 * width].copy(),
        r[3 * width :].copy(),
    )
    if history is None:
        return out, None, None
    return out, history[:, :width], history[:, width:]


class Fold:
    """Folds moments tables, in batch order, into population and running statistics.

    Tables may come in any sizes; the result depends only on the records (the
    population groups are cut at fixed batch indices counted from ``batches``).
    """

    def __init__(
        self,
        columns: Sequence[str],
        batch_size: int,
        momentum: Momentum,
        population: Population | None = None,
        running: RunningState | None = None,
        batches: int = 0,
        rows: int = 0,
        summary: Summary | None = None,
        sketch: bool = True,
        segments: Sequence[int] | None = None,
        weighted: bool = False,
    ) -> None:
        self.columns = list(columns)
        self.batch_size = batch_size
        self.momentum = momentum
        self.group = max(1, GROUP_ROWS // batch_size)
        self._carry = (
            population if population is not None else Population.empty(len(columns), weighted)
        )
        self.running = running if running is not None else RunningState.start(len(columns))
        self.batches = batches
        self.rows = rows
        #: Rows of each run of batches cut from its own first row (one run for a
        #: single fit; a merge or ``fit --update`` after a short batch adds one).
        self.segments = list(segments) if segments is not None else ([rows] if rows else [])
        self._pending: list[MomentsTable] = []
        self._pending_batches = 0
        self._cached: Population | None = None
        #: the distribution summary (None: not kept, or a file written without one)
        self.summary = (
            summary if summary is not None else Summary.empty(len(columns)) if sketch else None
        )

    def add(self, table: MomentsTable, trace: bool = False) -> tuple[np.ndarray, np.ndarray] | None:
        """Fold the next batches; with ``trace``, return the running (mean, var)
        after each of them."""
        if len(table) and int(table.batch[0]) != self.batches:
            raise ValueError(f"batch {int(table.batch[0])} folded after {self.batches} batches")
        self.running, means, variances = update_running(self.running, table, self.momentum, trace)
        self.batches += len(table)
        added = int(table.rows.sum())
        self.rows += added
        if added:
            if not self.segments or self.segments[-1] % self.batch_size:
                self.segments.append(0)  # after a short batch, batches start anew
            self.segments[-1] += added
        self._cached = None
        if self.summary is not None and len(table):
            if table.sketch is None:
                self.summary = None  # rows without a sketch: the summary would be wrong
            else:
                self.summary = self.summary.added(
                    table.sketch, table["nulls"].sum(axis=0), table["zeros"].sum(axis=0)
                )
        start = 0
        while start < len(table):
            take = min(self.group - self._pending_batches, len(table) - start)
            self._pending.append(table.take(start, start + take))
            self._pending_batches += take
            start += take
            if self._pending_batches == self.group:
                self._carry = merge_population(self._carry, self._group())
                self._pending, self._pending_batches = [], 0
        return (means, variances) if trace and means is not None and variances is not None else None

    def _group(self) -> Population:
        pending = (
            self._pending[0] if len(self._pending) == 1 else MomentsTable.concat(self._pending)
        )
        return group_population(pending)

    @property
    def population(self) -> Population:
        """The population statistics of every batch folded so far."""
        if self._cached is None:
            self._cached = (
                merge_population(self._carry, self._group()) if self._pending else self._carry
            )
        return self._cached

    def restricted(self, index: Sequence[int]) -> Fold:
        """The same fold over some of its columns (by position)."""
        fold = Fold(
            [self.columns[i] for i in index],
            self.batch_size,
            self.momentum,
            self.population.take(index),
            self.running.take(index),
            self.batches,
            self.rows,
            self.summary.take(index) if self.summary is not None else None,
            sketch=False,
            segments=self.segments,
        )
        return fold

    @property
    def weighted(self) -> bool:
        return self._carry.wsum is not None


def concat_columns(folds: Sequence[Fold]) -> Fold:
    """One fold over the columns of several folds of the same batches (column groups
    fitted in separate passes). Every statistic is per column, so the result has
    the bits a single fold over all the columns would have."""
    first = folds[0]
    if any((f.batches, f.rows) != (first.batches, first.rows) for f in folds):
        raise ValueError("column groups folded different batches")
    pops = [f.population for f in folds]
    runs = [f.running for f in folds]
    population = Population(
        *(np.concatenate([getattr(p, name) for p in pops]) for name in _POP_FIELDS),
        wsum=np.concatenate([p.weights for p in pops]) if pops[0].wsum is not None else None,
    )
    running = RunningState(
        np.concatenate([r.mean for r in runs]),
        np.concatenate([r.var for r in runs]),
        np.concatenate([r.updates for r in runs]),
        np.concatenate([r.parts()[0] for r in runs]),
        np.concatenate([r.parts()[1] for r in runs]),
    )
    columns = [c for f in folds for c in f.columns]
    sums = [f.summary for f in folds]
    summary = None
    if all(s is not None for s in sums):
        summary = Summary(
            [h for s in sums for h in s.hist],  # type: ignore[union-attr]
            np.concatenate([s.nulls for s in sums]),  # type: ignore[union-attr]
            np.concatenate([s.zeros for s in sums]),  # type: ignore[union-attr]
        )
    return Fold(
        columns,
        first.batch_size,
        first.momentum,
        population,
        running,
        first.batches,
        first.rows,
        summary,
        sketch=False,
    )


def merge_running(a: RunningState, b: RunningState, momentum: Momentum) -> RunningState:
    """The running statistics of A's batches followed by B's, from each alone.

    The EMA is affine in its start (design.md §5): ``r_AB = (1-m)^k_B * r_A +
    (r_B - (1-m)^k_B * start)``, start 0 for the mean and 1 for the variance,
    ``k_B`` B's updates; the cumulative average weighs each side by its updates.
    Equal to running the recurrence over both up to rounding (not bit for bit).

    With B's additive parts (``var0``, ``weight``: what `update_running` records)
    nothing is subtracted: ``var0_AB = w_B * var0_A + var0_B``, ``w_AB = w_A * w_B``,
    ``var_AB = var0_AB + w_AB`` (a var of 1e-10 after k_B = 3 keeps full precision).
    Where a part is unknown (an older statistics file) it is rebuilt by subtracting.
    """
    ka, kb = a.updates.astype(np.float64), b.updates.astype(np.float64)
    nan = np.full(a.var.shape, np.nan)
    if momentum is None:
        total = ka + kb
        safe = np.maximum(total, 1.0)
        mean = np.where(total > 0, (ka * a.mean + kb * b.mean) / safe, a.mean)
        var = np.where(total > 0, (ka * a.var + kb * b.var) / safe, a.var)
        mean = np.where(kb == 0, a.mean, np.where(ka == 0, b.mean, mean))
        var = np.where(kb == 0, a.var, np.where(ka == 0, b.var, var))
        return RunningState(mean, var, a.updates + b.updates, nan, nan)
    a0, aw = a.parts()
    b0, bw = b.parts()
    bw = np.where(np.isnan(bw), np.power(1.0 - momentum, kb), bw)
    aw = np.where(np.isnan(aw), np.power(1.0 - momentum, ka), aw)
    a0 = np.where(np.isnan(a0), a.var - aw, a0)
    b0 = np.where(np.isnan(b0), b.var - bw, b0)
    mean = bw * a.mean + b.mean  # the mean's start is 0
    var0 = bw * a0 + b0
    weight = aw * bw
    var = var0 + weight  # the variance's start is 1
    kept = kb == 0
    return RunningState(
        np.where(kept, a.mean, mean),
        np.where(kept, a.var, np.maximum(var, 0.0)),
        a.updates + b.updates,
        np.where(kept, a0, var0),
        np.where(kept, aw, weight),
    )


def merge_folds(a: Fold, b: Fold) -> Fold:
    """The fold of A's batches followed by B's (same columns, batch size, momentum).

    Population statistics by the Chan update, running statistics by
    `merge_running`, distribution summaries by adding their counts; B's batches
    start at B's first row, so when A ended on a short batch the result has one more
    segment.
    """
    if a.columns != b.columns or a.batch_size != b.batch_size or a.momentum != b.momentum:
        raise ValueError("folds of different columns, batch sizes or momenta do not merge")
    summary = None  # the distribution summaries merge exactly (counts), if both have one
    if a.summary is not None and b.summary is not None:
        summary = a.summary.added(b.summary.hist, b.summary.nulls, b.summary.zeros)
    segments = list(a.segments)
    for rows in b.segments:
        if segments and segments[-1] % a.batch_size == 0:
            segments[-1] += rows
        else:
            segments.append(rows)
    return Fold(
        a.columns,
        a.batch_size,
        a.momentum,
        merge_population(a.population, b.population),
        merge_running(a.running, b.running, a.momentum),
        a.batches + b.batches,
        a.rows + b.rows,
        summary,
        sketch=False,
        segments=segments,
    )
