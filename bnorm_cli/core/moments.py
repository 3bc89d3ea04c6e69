"""Per-batch moments: the moments table, and the numeric rules every engine shares.

This module is the single home of the numeric rules (design.md §2):

* A *valid* value is one that is neither null nor NaN. Nulls and NaN are left
  out of every statistic (and preserved in the output by the maps).
* All arithmetic is float64. The mean is kept as an unevaluated sum of two
  floats ``mean_hi + mean_lo`` so that merging many batches of a column such as
  ``1e9 + noise`` loses no digits. The spread is kept as the *biased variance*
  ``var = M2 / n`` rather than ``M2`` itself: ``M2`` of a column at ±1e153
  (variance 1e306, which fits float64) would overflow, the variance does not.
  ``E[x^2] - E[x]^2`` is never used: a batch is summed in two passes (the
  corrected two-pass formula), batches are merged with the Chan update.
* Very large or very small magnitudes are scaled by an exact power of two
  before summing, so sums cannot overflow near 1e306 and squares cannot
  underflow near 1e-160. A variance that itself exceeds float64 comes out as
  ``inf`` and is refused by the caller; it is never silently used.
* Where a batch's values cancel (its mean far below its magnitudes, e.g.
  ``[1e16, 1, -1e16, 3]``), the sum is taken exactly (`math.fsum`), so the mean
  is the correctly rounded mean of the values.
* A constant batch has ``var == 0`` and its mean is that constant exactly, so a
  constant column normalizes to ``beta`` exactly.
* The unbiased variance ``var * n / (n - 1)`` does not exist for n < 2 (``None``).
* Weights (``weights=``, frequency weights as scikit-learn's ``sample_weight``):
  the same rules with each value counted ``w`` times. The mean is
  ``sum(w*x)/sum(w)``, the variance the biased ``sum(w*(x-mean)^2)/sum(w)`` (what
  StandardScaler's ``var_`` is), the unbiased one ``.../(sum(w) - 1)`` (none for
  ``sum(w) <= 1``). Weights are scaled by a power of two per batch (huge and tiny
  weights neither overflow nor underflow); a zero weight, or a missing value,
  counts for nothing. The record's ``n`` stays the count of valid values, its
  ``wsum`` is their weight sum, ``min``/``max`` are those of the valid values.
  A weight that is null, NaN, infinite or negative is an error (`check_weights`).

A batch's record is a pure function of that batch's rows: it depends on no
earlier batch and on no chunking, so any engine, in any process, computes the
same bits (tests/test_moments.py checks batches computed alone, out of order and
in other processes).
"""

from __future__ import annotations

import concurrent.futures
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from . import sketch as sk
from .errors import DataError, opt
from .scratch import scratch

# Scale by a power of two only when squares or sums could leave float64's range.
_SCALE_ABOVE_EXP = 500
_SCALE_BELOW_EXP = -400
#: A batch whose mean is 2^20 times smaller than its largest magnitude lost that
#: many bits to cancellation in a float sum: it is summed exactly instead.
_CANCEL_BITS = 20

#: The fields of a moments record, in table order (beyond batch and rows).
FIELDS = ("n", "missing", "mean_hi", "mean_lo", "var", "min", "max")
#: The weighted table's extra field: each batch's weight sum of the valid values.
WEIGHT_FIELD = "wsum"
#: Counts beside the record (integers, summed by the fold): nulls (of ``missing``,
#: the rest is NaN, and +/-inf under ``--inf missing``) and exact zeros.
COUNT_FIELDS = ("nulls", "zeros")


@dataclass(frozen=True, slots=True)
class Moments:
    """Moments of the valid values of one column over some rows."""

    n: int = 0
    missing: int = 0
    mean_hi: float = 0.0
    mean_lo: float = 0.0
    biased_var: float = 0.0
    min: float = math.nan
    max: float = math.nan
    #: weight sum of the valid values (``None``: unweighted, every value weighs 1)
    weight: float | None = None

    @property
    def weighs(self) -> bool:
        """Whether the values carry any weight (unweighted: any value at all)."""
        return bool(self.n) if self.weight is None else self.weight > 0

    @property
    def mean(self) -> float | None:
        return self.mean_hi + self.mean_lo if self.weighs else None

    @property
    def var(self) -> float | None:
        """Population (biased, ddof=0) variance."""
        return self.biased_var if self.weighs else None

    @property
    def var_unbiased(self) -> float | None:
        """Unbiased variance: ``n - 1`` (or, weighted, ``sum(w) - 1``) in the
        denominator; ``None`` when that is not positive."""
        total = float(self.n) if self.weight is None else self.weight
        return self.biased_var * (total / (total - 1)) if total > 1 else None

    @property
    def std(self) -> float | None:
        var = self.var
        return math.sqrt(var) if var is not None else None


def two_sum(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """s + e == a + b exactly, elementwise (Knuth)."""
    s = a + b
    bb = s - a
    e = (a - (s - bb)) + (b - bb)
    return s, e


def two_prod(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """p + e == a * b exactly, elementwise (Dekker, Veltkamp splitting; no overflow)."""
    p = a * b
    t = _SPLIT * a
    ah = t - (t - a)
    al = a - ah
    t = _SPLIT * b
    bh = t - (t - b)
    bl = b - bh
    e = ((ah * bh - p) + ah * bl + al * bh) + al * bl
    return p, e


_SPLIT = 134217729.0  # 2^27 + 1


def merge(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint sets of rows (Chan et al. update)."""
    missing = a.missing + b.missing
    n = a.n + b.n
    low, high = float(np.fmin(a.min, b.min)), float(np.fmax(a.max, b.max))
    weighted = a.weight is not None or b.weight is not None
    ta = float(a.n) if a.weight is None else a.weight
    tb = float(b.n) if b.weight is None else b.weight
    weight = ta + tb if weighted else None
    if tb == 0:
        return Moments(n, missing, a.mean_hi, a.mean_lo, a.biased_var, low, high, weight)
    if ta == 0:
        return Moments(n, missing, b.mean_hi, b.mean_lo, b.biased_var, low, high, weight)
    delta = (b.mean_hi - a.mean_hi) + (b.mean_lo - a.mean_lo)
    wa, wb = ta / (ta + tb), tb / (ta + tb)
    hi, err = _two_sum1(a.mean_hi, delta * wb)
    hi, lo = _two_sum1(hi, err + a.mean_lo)
    var = wa * a.biased_var + wb * b.biased_var + (delta * wa) * (delta * wb)
    return Moments(n, missing, hi, lo, var, low, high, weight)


def _two_sum1(a: float, b: float) -> tuple[float, float]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# -- the moments table ----------------------------------------------------------
@dataclass
class MomentsTable:
    """One record per (batch, column): the seam between engines and the fold.

    ``batch``, ``first_row`` and ``rows`` have one entry per batch (global batch
    index, global index of its first row, its row count); every field of `FIELDS`
    is a ``(batches, columns)`` array. New kinds of record (histogram counts,
    per-key rows) are new fields; consumers read the fields they know.

    ``sketch`` is the distribution summary of the table's rows, one
    `sketch.Histogram` per column: it belongs to the table (one task's rows),
    not to each batch, and merges exactly with other tables' (`sketch.merge`).
    `take` leaves it out.
    """

    columns: list[str]
    batch: np.ndarray
    first_row: np.ndarray
    rows: np.ndarray
    fields: dict[str, np.ndarray] = field(default_factory=dict)
    sketch: list[sk.Histogram] | None = None

    def __len__(self) -> int:
        return int(self.batch.size)

    def __getitem__(self, name: str) -> np.ndarray:
        return self.fields[name]

    def take(self, start: int, stop: int) -> MomentsTable:
        """Batches ``start:stop`` of this table (positions, not batch indices)."""
        return MomentsTable(
            self.columns,
            self.batch[start:stop],
            self.first_row[start:stop],
            self.rows[start:stop],
            {k: v[start:stop] for k, v in self.fields.items()},
        )

    @property
    def weighted(self) -> bool:
        return WEIGHT_FIELD in self.fields

    def moments(self, i: int) -> dict[str, Moments]:
        """The records of the ``i``-th batch of the table, by column."""
        f = self.fields
        w = f.get(WEIGHT_FIELD)
        return {
            c: record(*(f[name][i, j] for name in FIELDS), weight=None if w is None else w[i, j])
            for j, c in enumerate(self.columns)
        }

    @classmethod
    def concat(cls, tables: Sequence[MomentsTable]) -> MomentsTable:
        first = tables[0]
        return cls(
            first.columns,
            np.concatenate([t.batch for t in tables]),
            np.concatenate([t.first_row for t in tables]),
            np.concatenate([t.rows for t in tables]),
            {k: np.concatenate([t.fields[k] for t in tables]) for k in first.fields},
            [sk.merge_all(h) for h in zip(*(t.sketch for t in tables), strict=True)]  # type: ignore[misc]
            if all(t.sketch is not None for t in tables)
            else None,
        )

    def to_arrow(self) -> pa.Table:
        """Long form, one row per (batch, column): what crosses a process boundary."""
        k, c = len(self), len(self.columns)
        data: dict[str, object] = {
            "batch": np.repeat(self.batch, c),
            "first_row": np.repeat(self.first_row, c),
            "rows": np.repeat(self.rows, c),
            "column": pa.array(np.tile(np.arange(c), k)).dictionary_encode()
            if c
            else pa.array([], pa.int64()),
        }
        data.update({name: arr.reshape(-1) for name, arr in self.fields.items()})
        table = pa.table(data)
        meta = {"columns": "\x1f".join(self.columns)}
        if self.sketch is not None:
            meta["sketch"] = json.dumps([[h.exp, sk.to_runs(h)] for h in self.sketch])
        return table.replace_schema_metadata(meta)

    @classmethod
    def from_arrow(cls, table: pa.Table) -> MomentsTable:
        metadata = table.schema.metadata or {}
        meta = metadata.get(b"columns", b"").decode()
        columns = meta.split("\x1f") if meta else []
        sketch = None
        if b"sketch" in metadata:
            sketch = [sk.from_runs(e, runs) for e, runs in json.loads(metadata[b"sketch"])]
        c = max(len(columns), 1)
        first = slice(None, None, c)
        fields = {
            name: table.column(name).to_numpy().reshape(-1, len(columns))
            for name in table.column_names
            if name not in ("batch", "first_row", "rows", "column")
        }
        return cls(
            columns,
            table.column("batch").to_numpy()[first],
            table.column("first_row").to_numpy()[first],
            table.column("rows").to_numpy()[first],
            fields,
            sketch,
        )


def record(
    n: object,
    missing: object,
    hi: object,
    lo: object,
    var: object,
    low: object,
    high: object,
    *,
    weight: object = None,
) -> Moments:
    """A `Moments` from array scalars (NaN as `math.nan`, so equal records compare equal)."""

    def f(x: object) -> float:
        v = float(x)  # type: ignore[arg-type]
        return math.nan if v != v else v

    w = None if weight is None else f(weight)
    return Moments(int(n), int(missing), f(hi), f(lo), f(var), f(low), f(high), w)  # type: ignore[call-overload]


def empty_table(columns: Sequence[str], weighted: bool = False) -> MomentsTable:
    z = np.zeros(0, np.int64)
    names = (*FIELDS, *COUNT_FIELDS, *((WEIGHT_FIELD,) if weighted else ()))
    fields: dict[str, np.ndarray] = {f: np.zeros((0, len(columns)), _dtype(f)) for f in names}
    return MomentsTable(list(columns), z, z.copy(), z.copy(), fields)


def _dtype(name: str) -> type:
    floats = ("mean_hi", "mean_lo", "var", "min", "max", WEIGHT_FIELD)
    return np.float64 if name in floats else np.int64


def check_weights(series: pl.Series, first_row: int = 0) -> np.ndarray:
    """A weight column as float64, refused (`DataError` naming the column and row)
    if a weight is null, NaN, infinite or negative: a row weighs ``w >= 0`` times."""
    name = series.name
    text = series.dtype == pl.String  # a CSV column passed through as text
    if not (series.dtype.is_numeric() or text or series.dtype == pl.Null):
        raise DataError(
            f'weight column "{name}" is {series.dtype}, not numeric; give the column of'
            f" weights with {opt('weight')}",
            column=name,
        )
    numbers = series.str.strip_chars().cast(pl.Float64, strict=False) if text else series
    w = _float_values(numbers)
    bad = ~(w >= 0.0) | (w == math.inf)  # NaN/null compare False
    if bad.any():
        at = int(np.argmax(bad))
        value = series[at]
        what = (
            "is missing"
            if value is None
            else f"{value!r} is not a number"
            if text and numbers[at] is None
            else "is NaN"
            if w[at] != w[at]
            else f"{value} is infinite"
            if math.isinf(w[at])
            else f"{value} is negative"
        )
        row = first_row + at + 1
        raise DataError(
            f'weight column "{name}", row {row}: the weight {what}; weights must be finite'
            " numbers >= 0 (fix the row, or give it weight 0 to leave it out)",
            column=name,
            row=row,
        )
    return w


def table_moments(
    frame: pl.DataFrame,
    columns: Sequence[str],
    batch_size: int,
    first_batch: int = 0,
    first_row: int = 0,
    inf: str = "error",
    rows: int | None = None,
    sketch: bool = True,
    grid: Sequence[int] | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
    cap: int = sk.MAX_BUCKETS,
    weights: np.ndarray | None = None,
) -> MomentsTable:
    """The moments of every batch of ``frame`` (consecutive ``batch_size``-row
    batches; the last may be shorter), for each of ``columns``, vectorized.

    ``inf``: "error" raises `DataError` naming the column and row of a +/-inf;
    "missing" leaves it out like NaN. ``rows``: the row count, when ``frame``
    holds only the columns to normalize (possibly none).

    ``sketch``: also count the rows' values (`sketch`), at the width the batches
    propose, or with ``grid`` (one exponent per column: a fitted sketch's) at
    that width, so that they compare bucket for bucket with it. ``bounds``
    (``(min, max)`` arrays): also count, per batch, the values outside them
    (field ``outside``). ``weights``: each row's weight (`check_weights`), for
    weighted moments and the field ``wsum``.
    """
    rows = frame.height if rows is None else rows
    k = -(-rows // batch_size) if rows else 0
    starts = np.arange(k, dtype=np.int64) * batch_size
    counts = np.minimum(batch_size, rows - starts)
    names = (
        *FIELDS,
        *COUNT_FIELDS,
        *(("outside",) if bounds is not None else ()),
        *((WEIGHT_FIELD,) if weights is not None else ()),
    )
    fields: dict[str, np.ndarray] = {f: np.empty((k, len(columns)), _dtype(f)) for f in names}
    #: integer columns: whether each batch is strictly increasing (a row id?)
    fields["increasing"] = np.zeros((k, len(columns)), bool)
    counted = sketch or bounds is not None
    hists: list[sk.Histogram] = [sk.Histogram.empty()] * len(columns)
    full = rows // batch_size

    def column(j: int) -> None:
        name = columns[j]
        series = frame.get_column(name)
        values = _float_values(series)
        parts = [(0, values[: full * batch_size].reshape(full, batch_size))] if full else []
        if full < k:
            parts.append((full, values[full * batch_size :].reshape(1, -1)))
        for at, block in parts:
            start = at * batch_size
            w = None
            if weights is not None:
                w = weights[start : start + block.size].reshape(block.shape)
            out = _block_moments(block, name, first_row + start, batch_size, inf, w)
            for f in out:
                fields[f][at : at + block.shape[0], j] = out[f]
        if series.dtype.is_integer() and not series.null_count() and k:
            # a strictly increasing batch starts at its min and ends at its max: a
            # column whose batches do not (most) needs no pass to know they are not
            ends = np.minimum(starts + batch_size, values.size) - 1
            ends_ok = (values[starts] == fields["min"][:, j]) & (
                values[ends] == fields["max"][:, j]
            )
            if ends_ok.any():
                fields["increasing"][:, j] = _increasing(values, batch_size, k)
        fields["nulls"][:, j] = (
            _per_batch(series.is_null().to_numpy(), k, batch_size) if series.null_count() else 0
        )
        if not counted:
            fields["zeros"][:, j] = 0  # counted with the sketch only (nothing reads it here)
            return
        hists[j] = _column_sketch(values, fields, j, k, rows, batch_size, grid, bounds, cap)

    # columns are independent (each writes its own column of the fields and its own
    # sketch), so they run on a few threads: numpy releases the GIL inside its loops
    if THREADS > 1 and len(columns) > 1 and rows * len(columns) >= _PARALLEL_VALUES:
        for _ in _pool().map(column, range(len(columns))):
            pass
    else:
        for j in range(len(columns)):
            column(j)
    return MomentsTable(
        list(columns),
        np.arange(first_batch, first_batch + k, dtype=np.int64),
        first_row + starts,
        counts.astype(np.int64),
        fields,
        hists if counted else None,
    )


def _column_sketch(
    values: np.ndarray,
    fields: dict[str, np.ndarray],
    j: int,
    k: int,
    rows: int,
    batch_size: int,
    grid: Sequence[int] | None,
    bounds: tuple[np.ndarray, np.ndarray] | None,
    cap: int,
) -> sk.Histogram:
    """Column ``j``'s sketch of these rows, its zero counts and (``bounds``) the
    counts outside them, from its values and its batches' moments."""
    n = fields["n"][:, j]
    count = int(n.sum())
    clean = count == rows
    valid = values
    if not clean:  # the finite values (n counts them), into a reused array (`scratch`)
        valid = np.compress(np.isfinite(values), values, out=scratch("moments.valid", count))
    low = float(np.fmin.reduce(fields["min"][:, j])) if k else math.nan
    high = float(np.fmax.reduce(fields["max"][:, j])) if k else math.nan
    if grid is None and k == 1:
        exp = sk.batch_exponent(int(n[0]), float(fields["var"][0, j]), low, high)
    elif grid is None:
        exps = sk.batch_exponents(n, fields["var"][:, j], fields["min"][:, j], fields["max"][:, j])
        exp = int(exps.max()) if k else sk.NO_EXP
    else:
        exp = max(int(grid[j]), sk.exp_for_range(low, high)) if valid.size else int(grid[j])
    hist = sk.count_values(valid, exp, cap, low, high)
    # zeros fall in bucket 0 (so does -0.0): count them only when it can be occupied
    # and 0 is within the values' range
    has_zero = hist.index.size and hist.index[0] <= 0 <= hist.index[-1] and low <= 0.0 <= high
    fields["zeros"][:, j] = _per_batch(values == 0.0, k, batch_size) if has_zero else 0
    if bounds is not None:
        lo_b, hi_b = float(bounds[0][j]), float(bounds[1][j])
        if not valid.size or (low >= lo_b and high <= hi_b):
            fields["outside"][:, j] = 0
        else:
            far = (values < lo_b) | (values > hi_b)
            if not clean:
                far &= np.isfinite(values)
            fields["outside"][:, j] = _per_batch(far, k, batch_size)
    return hist


#: Values in a chunk above which its columns are computed on several threads.
_PARALLEL_VALUES = 1 << 18
#: Threads for a chunk's columns (an engine sets it from the CPUs it may use).
THREADS = 2
_POOL: list[concurrent.futures.ThreadPoolExecutor] = []


def _pool() -> concurrent.futures.ThreadPoolExecutor:
    if not _POOL:
        _POOL.append(
            concurrent.futures.ThreadPoolExecutor(
                max(1, THREADS), thread_name_prefix="bnorm-moments"
            )
        )
    return _POOL[0]


def _increasing(values: np.ndarray, batch_size: int, k: int) -> np.ndarray:
    """Per batch: every value larger than the one before it."""
    step = np.ones(k * batch_size, bool)  # step[p]: value p+1 > value p, within a batch
    step[: values.size - 1] = np.diff(values) > 0
    step[batch_size - 1 :: batch_size] = True  # the step into the next batch is not its own
    return np.asarray(step.reshape(k, batch_size).all(axis=1))


def _per_batch(mask: np.ndarray, k: int, batch_size: int) -> np.ndarray:
    """How many of each batch's rows ``mask`` marks."""
    if k == 1:
        return np.array([np.count_nonzero(mask)], np.int64)
    padded = np.zeros(k * batch_size, bool)
    padded[: mask.size] = mask
    return padded.reshape(k, batch_size).sum(axis=1)


def _float_values(series: pl.Series) -> np.ndarray:
    """The column as float64 with NaN for null (nulls and NaN are both missing)."""
    if series.dtype != pl.Float64:
        series = series.cast(pl.Float64)
    if series.null_count():
        series = series.fill_null(math.nan)
    return series.to_numpy()


def from_values(values: np.ndarray, missing: int = 0) -> Moments:
    """Moments of a 1-D float64 array of valid values (the same rules as the table)."""
    if values.size == 0:
        return Moments(missing=missing)
    out = _block_moments(np.ascontiguousarray(values, np.float64).reshape(1, -1), "", 0, 1, "error")
    m = record(*(out[name][0] for name in FIELDS))
    return Moments(m.n, m.missing + missing, m.mean_hi, m.mean_lo, m.biased_var, m.min, m.max)


def _block_moments(
    x: np.ndarray, name: str, first_row: int, stride: int, inf: str, w: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Moments of each row of ``x`` (one batch per row), weighted by ``w`` if given."""
    if w is not None:
        return _weighted_block(x, w, name, first_row, stride, inf)
    m, width = x.shape
    with np.errstate(invalid="ignore", over="ignore"):  # what isfinite looks for
        s = x.sum(axis=1)
    clean = np.isfinite(s)  # no NaN, no inf, no overflow: the common case
    if clean.all():
        valid = None
        n = np.full(m, width, np.int64)
    else:
        valid, n = _valid(x, name, first_row, stride, inf)
    # temporaries in reused arrays (`scratch`): fresh ones cost more in page faults
    # than the passes themselves; each holds what np.where(...) would
    invalid = None if valid is None else ~valid
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        if invalid is None:
            lo, hi = x.min(axis=1), x.max(axis=1)
        else:
            masked = scratch("moments.xs", x.size).reshape(x.shape)
            np.copyto(masked, x)
            np.copyto(masked, np.inf, where=invalid)
            lo = masked.min(axis=1)
            np.copyto(masked, -np.inf, where=invalid)
            hi = masked.max(axis=1)
        top = np.maximum(np.abs(lo), np.abs(hi))
        scale = _scales(top, n == 0)
        if invalid is None and not scale.any():
            xs, total = x, s
        else:
            xs = scratch("moments.xs", x.size).reshape(x.shape)
            if scale.any():
                np.ldexp(x, scale[:, None], out=xs)
            else:
                np.copyto(xs, x)
            if invalid is not None:
                np.copyto(xs, 0.0, where=invalid)
            total = xs.sum(axis=1)
        m0 = total / np.maximum(n, 1)
        dev = scratch("moments.dev", x.size).reshape(x.shape)
        np.subtract(xs, m0[:, None], out=dev)
        if invalid is not None:
            np.copyto(dev, 0.0, where=invalid)
        s1 = dev.sum(axis=1)
        np.multiply(dev, dev, out=dev)
        s2 = dev.sum(axis=1)  # not np.dot: dot is not bit-reproducible
        corr = s1 / np.maximum(n, 1)
        var = np.maximum(s2 - s1 * corr, 0.0) / np.maximum(n, 1)
        mean_hi, mean_lo = two_sum(m0, corr)
        cancel = (n > 1) & (np.abs(mean_hi) * 2.0**_CANCEL_BITS < np.ldexp(top, scale))
    for i in np.flatnonzero(cancel):
        row = xs[i] if valid is None else xs[i][valid[i]]
        mean_hi[i], mean_lo[i], var[i] = _exact_row(row)
    return _record_fields(n, width - n, lo, hi, mean_hi, mean_lo, var, scale)


def _record_fields(
    n: np.ndarray,
    missing: np.ndarray | int,
    lo: np.ndarray,
    hi: np.ndarray,
    mean_hi: np.ndarray,
    mean_lo: np.ndarray,
    var: np.ndarray,
    scale: np.ndarray,
) -> dict[str, np.ndarray]:
    """The record's fields from scaled sums: scaled back, constant batches exact (their
    mean is the constant, their variance 0), empty batches with no statistic."""
    if scale.any():
        with np.errstate(over="ignore"):
            mean_hi = np.ldexp(mean_hi, -scale)
            mean_lo = np.ldexp(mean_lo, -scale)
            var = np.ldexp(var, -2 * scale)
    const = lo == hi
    mean_hi = np.where(const, lo, mean_hi)
    mean_lo = np.where(const, 0.0, mean_lo)
    var = np.where(const, 0.0, var)
    empty = n == 0
    return {
        "n": n,
        "missing": np.asarray(missing),
        "mean_hi": np.where(empty, 0.0, mean_hi),
        "mean_lo": np.where(empty, 0.0, mean_lo),
        "var": np.where(empty, 0.0, var),
        "min": np.where(empty, math.nan, lo),
        "max": np.where(empty, math.nan, hi),
    }


def _valid(
    x: np.ndarray, name: str, first_row: int, stride: int, inf: str
) -> tuple[np.ndarray, np.ndarray]:
    """Which values are valid (not NaN; +/-inf refused, or missing with ``inf``
    "missing"), and how many per batch."""
    valid = ~np.isnan(x)
    infinite = np.isinf(x)
    if infinite.any():
        if inf == "error":
            _refuse_inf(x, infinite, name, first_row, stride)
        valid &= ~infinite
    return valid, valid.sum(axis=1)


def _refuse_inf(
    x: np.ndarray, infinite: np.ndarray, name: str, first_row: int, stride: int
) -> None:
    i, at = np.argwhere(infinite)[0]
    row = first_row + int(i) * stride + int(at) + 1
    raise DataError(
        f'column "{name}", row {row}: value {x[i, at]}; infinite values have no'
        f" mean or variance (use {opt('inf', 'missing')} to treat them like NaN)",
        column=name,
        row=row,
    )


def _scales(top: np.ndarray, empty: np.ndarray) -> np.ndarray:
    """Per batch, the power of two that brings magnitudes up to ``top`` near 1, where
    sums or squares could leave float64's range (else 0)."""
    exp = np.frexp(top)[1]
    scale = np.where((exp > _SCALE_ABOVE_EXP) | (exp < _SCALE_BELOW_EXP), -exp, 0)
    scale[empty | (top == 0)] = 0
    return scale


def _weighted_block(
    x: np.ndarray, w: np.ndarray, name: str, first_row: int, stride: int, inf: str
) -> dict[str, np.ndarray]:
    """`_block_moments` with weights (checked: finite, >= 0), by the same rules.

    Only values with a positive weight enter the mean and variance (and the
    magnitude that decides the scaling, cancellation and constancy); ``n``,
    ``min`` and ``max`` are those of every valid value.
    """
    valid, n = _valid(x, name, first_row, stride, inf)
    wv = np.where(valid, w, 0.0)
    pos = wv > 0.0
    npos = pos.sum(axis=1)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lo = np.where(valid, x, np.inf).min(axis=1)
        hi = np.where(valid, x, -np.inf).max(axis=1)
        plo = np.where(pos, x, np.inf).min(axis=1)
        phi = np.where(pos, x, -np.inf).max(axis=1)
        top = np.maximum(np.abs(plo), np.abs(phi))
        scale = _scales(top, npos == 0)
        xs = np.where(pos, np.ldexp(x, scale[:, None]) if scale.any() else x, 0.0)
        # weights scaled so the largest is in [0.5, 1): the weighted sums cannot
        # overflow, tiny weights do not underflow, and the ratios are unchanged
        wtop = wv.max(axis=1)
        wexp = np.where(wtop > 0.0, np.frexp(wtop)[1], 0)
        ws = np.ldexp(wv, -wexp[:, None])
        total = ws.sum(axis=1)
        safe = np.where(total > 0.0, total, 1.0)
        m0 = (ws * xs).sum(axis=1) / safe
        dev = np.where(pos, xs - m0[:, None], 0.0)
        wdev = ws * dev
        s1 = wdev.sum(axis=1)
        s2 = (wdev * dev).sum(axis=1)
        corr = s1 / safe
        var = np.maximum(s2 - s1 * corr, 0.0) / safe
        mean_hi, mean_lo = two_sum(m0, corr)
        cancel = (npos > 1) & (np.abs(mean_hi) * 2.0**_CANCEL_BITS < np.ldexp(top, scale))
        wsum = np.ldexp(total, wexp)
    for i in np.flatnonzero(cancel):
        keep = pos[i]
        mean_hi[i], mean_lo[i], var[i] = _exact_row(xs[i][keep], ws[i][keep])
    if scale.any():
        with np.errstate(over="ignore"):
            mean_hi = np.ldexp(mean_hi, -scale)
            mean_lo = np.ldexp(mean_lo, -scale)
            var = np.ldexp(var, -2 * scale)
    const = plo == phi
    weightless = npos == 0
    return {
        "n": n,
        "missing": x.shape[1] - n,
        "mean_hi": np.where(weightless, 0.0, np.where(const, plo, mean_hi)),
        "mean_lo": np.where(weightless | const, 0.0, mean_lo),
        "var": np.where(weightless | const, 0.0, var),
        "min": np.where(n == 0, math.nan, lo),
        "max": np.where(n == 0, math.nan, hi),
        WEIGHT_FIELD: np.where(weightless, 0.0, wsum),
    }


def _exact_row(values: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float, float]:
    """Mean (two floats) and biased variance of values whose float sum cancels.

    The sum is exact (`math.fsum`, correctly rounded), and so is the residual of
    the mean, so the mean is the exact mean to double-double precision. With
    ``weights`` (positive), the sums are of the exact products ``w*x``.
    """
    if weights is not None:
        prods, errs = two_prod(weights, values)
        parts: list[float] = [*prods.tolist(), *errs.tolist()]
        total_w = math.fsum(weights.tolist())
        mean = math.fsum(parts) / total_w
        p1, e1 = _two_prod(mean, total_w)
        resid = math.fsum([*parts, -p1, -e1]) / total_w
        dev = (values - mean) - resid
        wdev = weights * dev
        sum1 = float(wdev.sum())
        sum2 = float((wdev * dev).sum())
        return mean, resid, max(sum2 - sum1 * (sum1 / total_w), 0.0) / total_w
    n = values.size
    if np.array_equal(values, np.rint(values)) and float(np.abs(values).max()) * n < 2.0**53:
        total = float(values.sum())  # integers this small sum exactly in float64
        terms: list[float] = [total]
    else:
        terms = values.tolist()
        total = math.fsum(terms)
    hi = total / n
    p, e = _two_prod(hi, float(n))
    lo = math.fsum([*terms, -p, -e]) / n
    dev = (values - hi) - lo
    s1 = float(dev.sum())
    s2 = float((dev * dev).sum())
    var = max(s2 - s1 * (s1 / n), 0.0) / n
    return hi, lo, var


def _two_prod(a: float, b: float) -> tuple[float, float]:
    """`two_prod` on two floats (the same operations)."""
    p, e = two_prod(a, b)  # type: ignore[arg-type]
    return float(p), float(e)


# -- segments: the same rules over runs of rows of varying length ------------------
def segment_moments(
    x: np.ndarray,
    starts: np.ndarray,
    name: str = "",
    inf: str = "error",
    rows: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """`_block_moments` for consecutive runs of ``x`` (float64, NaN for missing) that
    start at ``starts`` (increasing, each run non-empty): the moments of each run,
    by the same rules (power-of-two scaling, the corrected two-pass sum, exact sums
    where the mean cancels, constant runs exact). Per-key statistics use it: a run
    is one group's rows in one batch. ``rows``: each value's row number (1-based),
    for the error naming a +/-inf."""
    size = x.size
    width = np.diff(np.append(starts, size))
    seg = np.repeat(np.arange(starts.size), width)
    valid = ~np.isnan(x)
    infinite = np.isinf(x)
    if infinite.any():
        if inf == "error":
            at = int(np.flatnonzero(infinite)[0])
            row = int(rows[at]) if rows is not None else at + 1
            raise DataError(
                f'column "{name}", row {row}: value {x[at]}; infinite values have no'
                f" mean or variance (use {opt('inf', 'missing')} to treat them like NaN)",
                column=name,
                row=row,
            )
        valid &= ~infinite
    n = np.add.reduceat(valid, starts).astype(np.int64) if size else np.zeros(0, np.int64)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        lo = np.minimum.reduceat(np.where(valid, x, np.inf), starts) if size else np.zeros(0)
        hi = np.maximum.reduceat(np.where(valid, x, -np.inf), starts) if size else np.zeros(0)
        top = np.maximum(np.abs(lo), np.abs(hi))
        scale = _scales(top, n == 0)
        xs = np.ldexp(x, scale[seg]) if scale.any() else x
        xs = np.where(valid, xs, 0.0)
        safe = np.maximum(n, 1)
        m0 = (np.add.reduceat(xs, starts) if size else np.zeros(0)) / safe
        dev = np.where(valid, xs - m0[seg], 0.0)
        s1 = np.add.reduceat(dev, starts) if size else np.zeros(0)
        s2 = np.add.reduceat(dev * dev, starts) if size else np.zeros(0)
        corr = s1 / safe
        var = np.maximum(s2 - s1 * corr, 0.0) / safe
        mean_hi, mean_lo = two_sum(m0, corr)
        cancel = (n > 1) & (np.abs(mean_hi) * 2.0**_CANCEL_BITS < np.ldexp(top, scale))
    for i in np.flatnonzero(cancel):
        a, b = int(starts[i]), int(starts[i]) + int(width[i])
        mean_hi[i], mean_lo[i], var[i] = _exact_row(xs[a:b][valid[a:b]])
    return _record_fields(n, width - n, lo, hi, mean_hi, mean_lo, var, scale)
