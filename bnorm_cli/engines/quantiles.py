"""Quantiles of columns, for the robust centre and scale choices (median, IQR).

`column_quantiles` is given a way to read the input again from the start
(``passes``) and returns numpy's default (``method="linear"``) quantiles of
each column's valid values (null and NaN are left out, as everywhere in bnorm;
+/-inf are values), bit for bit what ``numpy.quantile`` returns on them.

How (docs/quantiles.md has the detail; the arithmetic is in `core.keysketch`
and `core.brackets`, this module only reads):

1. The first pass counts each column's values in a `KeySketch` (floats as
   ordered integer keys, at most ``cap`` occupied buckets) and keeps the values
   themselves while all columns' fit the budget. A column whose values all fit
   is answered from them: one pass.
2. Each needed order statistic (numpy's rule reads two per probability) lies in
   one sketch bucket, with the exact count of values below it. Each later pass
   keeps the values of the smallest brackets that fit the budget (the rank is
   then read off them) and counts the others in a finer histogram, whose bucket
   holding the rank is the next bracket. A bracket of a single key (a tie) is
   resolved by counts. Brackets narrow by a factor >= 2^(k-1) per counting pass
   (``2^k`` counters each, k >= 4) on 64-bit keys, so the passes are bounded
   for any distribution; typically two passes suffice.
3. On a pipe (``one_pass``) only the first pass exists: a column that fitted is
   exact, the others are estimated from their sketch bucket, with ``rank_error``
   an upper bound (see `core.brackets.estimate`).

Memory: the values kept never exceed ``budget_bytes`` (8 bytes a value, all
columns together; ``peak_kept_bytes`` reports the most held); the counters
(sketch and histograms) stay within ``budget_bytes`` as well, except for the
floors of `MIN_SKETCH` buckets per column and `core.brackets.MIN_BUCKETS` per
bracket.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ..core.brackets import (
    Bracket,
    PassCounter,
    estimate,
    lerp,
    linear_rule,
    needed_ranks,
    plan,
    sketch_brackets,
)
from ..core.errors import DataError
from ..core.keysketch import KeySketch, from_keys, to_keys

#: Memory the values kept between passes may use, by default.
BUDGET_BYTES = 256 << 20
#: Sketch buckets per column: at least, at most (the budget decides between).
MIN_SKETCH = 64
MAX_SKETCH = 1 << 14
#: Bytes a kept value or a counter takes.
_VALUE = 8
_SKETCH_BUCKET = 64  # index, count, smallest and largest key; merged and pending
_COUNTER = 24  # count, smallest and largest key


@dataclass(frozen=True)
class QuantileResult:
    """``values[i, j]`` is quantile ``probs[i]`` of column ``columns[j]`` (NaN
    where a column has no valid value). ``exact`` is False for a one-pass
    (pipe) estimate, then ``rank_error`` bounds the error of each quantile's
    rank as a fraction of the column's valid count; ``passes`` counts reads.
    ``peak_kept_bytes``: the most memory kept values took at once."""

    probs: tuple[float, ...]
    columns: tuple[str, ...]
    values: np.ndarray
    exact: bool
    rank_error: float
    passes: int
    peak_kept_bytes: int = 0


def _keys(frame: pl.DataFrame, column: str) -> np.ndarray:
    a = frame.get_column(column).cast(pl.Float64).to_numpy(allow_copy=True)
    return to_keys(a[~np.isnan(a)])


def _sketch_cap(budget_bytes: int, columns: int) -> int:
    return min(MAX_SKETCH, max(MIN_SKETCH, budget_bytes // (_SKETCH_BUCKET * max(columns, 1))))


def column_quantiles(
    passes: Callable[[], Iterator[pl.DataFrame]],
    columns: Sequence[str],
    probs: Sequence[float],
    budget_bytes: int = BUDGET_BYTES,
    one_pass: bool = False,
) -> QuantileResult:
    """Quantiles ``probs`` (each in [0, 1]) of ``columns``.

    ``passes()`` starts a new read of the whole input and yields frames holding
    (at least) ``columns`` as Float64. ``one_pass`` says the input cannot be
    read twice (a pipe): the result is then approximate (``exact=False``)
    unless every column's values fitted ``budget_bytes``.
    """
    p = np.asarray(probs, np.float64).reshape(-1)
    if p.size and not (np.all(p >= 0) and np.all(p <= 1)):
        raise ValueError("quantile probabilities must be in [0, 1]")
    columns = list(columns)
    budget = max(0, budget_bytes) // _VALUE  # values
    cap = _sketch_cap(budget_bytes, len(columns))

    # pass 1: sketch every column, keep values while they all fit
    sketches = [KeySketch(cap) for _ in columns]
    kept: list[list[np.ndarray] | None] = [[] for _ in columns]
    sizes = [0] * len(columns)
    held = peak = 0
    for frame in passes():
        for j, c in enumerate(columns):
            keys = _keys(frame, c)
            sketches[j].add(keys)
            if kept[j] is None:
                continue
            while held + keys.size > budget:  # drop the largest, counting these keys
                alive = [i for i, k in enumerate(kept) if k is not None]
                big = max(alive, key=lambda i: sizes[i] + (keys.size if i == j else 0))
                kept[big], held, sizes[big] = None, held - sizes[big], 0
                if big == j:
                    break
            bucket = kept[j]
            if bucket is not None:
                bucket.append(keys)
                sizes[j] += keys.size
                held += keys.size
                peak = max(peak, held)
    count = 1

    found: list[dict[int, int]] = [{} for _ in columns]
    open_: list[list[Bracket]] = [[] for _ in columns]
    worst = 0.0
    totals = [s.total for s in sketches]
    for j, bucket in enumerate(kept):
        n, ranks = totals[j], needed_ranks(totals[j], p)
        if bucket is not None:
            s = np.sort(np.concatenate(bucket)) if bucket else np.zeros(0, np.int64)
            found[j] = {r: int(s[r]) for r in ranks}
        elif one_pass:
            found[j], err = estimate(sketches[j], ranks)
            worst = max(worst, err / n if n else 0.0)
        else:
            found[j], open_[j] = sketch_brackets(sketches[j], ranks)
    kept = [None] * len(columns)
    del sketches

    # later passes: keep or count inside the brackets until every rank is found
    while any(open_):
        flat = [b for bs in open_ for b in bs]
        steps = iter(plan(flat, budget, budget_bytes // _COUNTER))
        counters = {j: PassCounter([next(steps) for _ in bs]) for j, bs in enumerate(open_) if bs}
        count += 1
        for frame in passes():
            for j, pc in counters.items():
                pc.add(_keys(frame, columns[j]))
            peak = max(peak, sum(pc.kept_values for pc in counters.values()))
        for j, pc in counters.items():
            try:
                f, open_[j] = pc.finish()
            except ValueError as e:
                raise DataError(
                    f"column {columns[j]!r} changed between reads of the input ({e}); exact"
                    " quantiles read it several times, so it must not change meanwhile",
                    column=columns[j],
                ) from None
            found[j].update(f)
        del counters

    values = np.full((p.size, len(columns)), np.nan)
    for j, n in enumerate(totals):
        if not n:
            continue
        previous, following, gamma = linear_rule(n, p)
        a = from_keys(np.array([found[j][r] for r in previous.tolist()], np.int64))
        b = from_keys(np.array([found[j][r] for r in following.tolist()], np.int64))
        values[:, j] = lerp(a, b, gamma)
    exact = worst == 0.0
    return QuantileResult(
        tuple(float(x) for x in p),
        tuple(columns),
        values,
        exact,
        worst,
        count,
        peak * _VALUE,
    )
