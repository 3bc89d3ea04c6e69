"""Per-key statistics (``--by KEY[,KEY...]``): one set of statistics per group.

A *group* is one combination of key values; a null key value is a value of its
own (rows whose key is null form their own group). Key columns are never
normalized. Every statistic is the one the global fit computes, per group, by
the same rules and the same code:

* a chunk's rows are cut into *segments*: the rows of one group inside one
  global batch (batch ``i`` = global rows ``[i*N, (i+1)*N)``); each segment's
  moments come from `moments.segment_moments` (the rules of `moments`);
* population: the segments of a group are merged in batch order by the Chan
  update (`fold.merge_population`), so the result does not depend on chunking;
* running (PyTorch ``BatchNorm1d``): group ``g``'s k-th update is its segment in
  the k-th global batch where it appears (`fold.update_running`, the same
  recurrence; a segment with fewer than two valid values does not update, as for
  a global batch). This is what a BatchNorm user expects of a conditional
  (per-key) batch norm trained on the same mini-batches: each training step
  sees the rows of the current batch, and a group absent from a batch is not
  touched by it (its statistics do not decay);
* batch mode: each segment's own mean and biased variance.

Groups with fewer than ``min_count`` valid values in a column, and groups not
seen at fit, use the global statistics for that column (population: the
whole fit's; batch mode: the whole batch's; running: the global running
statistics after the batch). Memory is O(groups): a dictionary of key values and
a few arrays of shape ``(groups, columns)``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from . import maps as mp
from .errors import DataError, UsageError, opt
from .fold import Momentum, Population, RunningState, merge_population, update_running
from .moments import MomentsTable, segment_moments

#: The group id column of the key dictionary (never an input column's name).
GROUP_ID = "__bnorm_group__"


def check_by(keys: Sequence[str] | None, min_count: int) -> tuple[list[str], int]:
    """Validate ``by`` (key column names) and ``min_count`` (an integer >= 1)."""
    names = [keys] if isinstance(keys, str) else list(keys or [])
    if not names or any(not isinstance(k, str) or not k for k in names):
        raise UsageError(f"{opt('by')}: give one or more key column names")
    if len(set(names)) != len(names):
        raise UsageError(f"{opt('by')}: a key column is named twice")
    if isinstance(min_count, bool) or not isinstance(min_count, int | np.integer) or min_count < 1:
        raise UsageError(f"{opt('min_count')} must be an integer >= 1, got {min_count!r}")
    return names, int(min_count)


def check_keys(keys: Sequence[str], schema: pl.Schema, columns: Sequence[str] | None) -> None:
    """The keys must be input columns and must not be normalized."""
    from .errors import did_you_mean

    for k in keys:
        if k not in schema:
            raise UsageError(
                f'{opt("by")}: no column "{k}" in the input{did_you_mean(k, schema.names())}'
            )
        if columns is not None and k in columns:
            raise UsageError(
                f'{opt("by")}: key column "{k}" is also named by {opt("columns")}; key'
                " columns are never normalized: leave it out of the columns"
            )


def _key_dtype(dtype: pl.DataType) -> pl.DataType:
    """Keys are matched by value: categorical and enum keys as their strings."""
    return pl.String() if isinstance(dtype, pl.Categorical | pl.Enum) else dtype


class GroupIndex:
    """The dictionary of key values seen so far -> group id (0, 1, ... in order of
    first appearance)."""

    def __init__(self, keys: Sequence[str], known: pl.DataFrame | None = None) -> None:
        self.keys = list(keys)
        self.known = known  # key columns + GROUP_ID, one row per group

    def __len__(self) -> int:
        return 0 if self.known is None else self.known.height

    def keys_of(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The key columns of ``frame`` as the dictionary holds them."""
        out = frame.select(self.keys)
        if self.known is None:
            casts = {k: _key_dtype(out.schema[k]) for k in self.keys}
            return out.with_columns(pl.col(k).cast(d) for k, d in casts.items())
        schema = self.known.schema
        exprs = []
        for k in self.keys:
            target = schema[k]
            if _key_dtype(out.schema[k]) != target:
                try:
                    out.select(pl.col(k).cast(target, strict=True))
                except pl.exceptions.PolarsError:
                    raise DataError(
                        f'key column "{k}" was fitted as {target} but is now {out.schema[k]},'
                        " and its values do not convert; check the input or refit",
                        column=k,
                    ) from None
            exprs.append(pl.col(k).cast(target))
        return out.with_columns(exprs)

    def ids(self, frame: pl.DataFrame, add: bool) -> np.ndarray:
        """Each row's group id; with ``add``, unseen keys become new groups, without it
        their id is -1."""
        keys = self.keys_of(frame)
        if self.known is None:
            if not add:
                return np.full(frame.height, -1, np.int64)
            self.known = keys.head(0).with_columns(pl.lit(0, pl.Int64).alias(GROUP_ID))
        gid = self._lookup(keys)
        if add and (gid < 0).any():
            fresh = keys.filter(pl.Series(gid < 0)).unique(maintain_order=True)
            fresh = fresh.with_columns(
                pl.int_range(len(self), len(self) + fresh.height, dtype=pl.Int64).alias(GROUP_ID)
            )
            self.known = pl.concat([self.known, fresh])
            gid = self._lookup(keys)
        return gid

    def _lookup(self, keys: pl.DataFrame) -> np.ndarray:
        assert self.known is not None
        # an unordered join and a scatter back by row: polars' maintain_order costs 7x
        row = "__bnorm_row__"
        joined = keys.with_row_index(row).join(self.known, on=self.keys, nulls_equal=True)
        out = np.full(keys.height, -1, np.int64)
        out[joined.get_column(row).to_numpy()] = joined.get_column(GROUP_ID).to_numpy()
        return out


@dataclass
class GroupStats:
    """Population and running statistics of every group: ``(groups, columns)`` arrays."""

    columns: list[str]
    population: Population
    running: RunningState

    @classmethod
    def empty(cls, columns: Sequence[str], groups: int = 0) -> GroupStats:
        c = len(columns)
        zi, zf = np.zeros((groups, c), np.int64), np.zeros((groups, c))
        nan = np.full((groups, c), np.nan)
        pop = Population(zi, zi.copy(), zf, zf.copy(), zf.copy(), nan, nan.copy())
        run = RunningState(zf.copy(), np.ones((groups, c)), zi.copy())
        return cls(list(columns), pop, run)

    @property
    def groups(self) -> int:
        return int(self.population.n.shape[0])

    def grow(self, groups: int) -> None:
        """Room for at least ``groups`` groups (new groups start empty, running at
        0/1); the room doubles, so adding groups chunk by chunk copies O(groups)."""
        if groups <= self.groups:
            return
        groups = max(groups, 2 * self.groups, 1024)
        more = GroupStats.empty(self.columns, groups - self.groups)
        p, q = self.population, more.population
        self.population = Population(
            *(np.concatenate([getattr(p, f), getattr(q, f)]) for f in _POP)
        )
        r, s = self.running, more.running
        self.running = RunningState(
            np.concatenate([r.mean, s.mean]),
            np.concatenate([r.var, s.var]),
            np.concatenate([r.updates, s.updates]),
        )

    def head(self, groups: int) -> GroupStats:
        """The first ``groups`` groups (views)."""
        p, r = self.population, self.running
        return GroupStats(
            self.columns,
            Population(*(getattr(p, f)[:groups] for f in _POP)),
            RunningState(r.mean[:groups], r.var[:groups], r.updates[:groups]),
        )

    def take_columns(self, index: Sequence[int]) -> GroupStats:
        idx = np.asarray(index, np.int64)
        p, r = self.population, self.running
        return GroupStats(
            [self.columns[i] for i in idx],
            Population(*(getattr(p, f)[:, idx] for f in _POP)),
            RunningState(r.mean[:, idx], r.var[:, idx], r.updates[:, idx]),
        )


_POP = ("n", "missing", "mean_hi", "mean_lo", "var", "min", "max")


@dataclass
class Segments:
    """A chunk's rows cut into (batch, group) runs, in batch then group order."""

    order: np.ndarray  # rows in segment order (a stable sort)
    starts: np.ndarray  # each segment's first position in ``order``
    batch: np.ndarray  # each segment's batch (position in the chunk)
    gid: np.ndarray  # each segment's group
    of_row: np.ndarray  # each row's segment

    @classmethod
    def cut(cls, gid: np.ndarray, batch_size: int) -> Segments:
        rows = gid.size
        batch = np.arange(rows, dtype=np.int64) // batch_size
        width = int(gid.max()) + 2 if rows else 1
        code = batch * width + (gid + 1)
        order = np.argsort(code, kind="stable")
        ordered = code[order]
        first = np.ones(rows, bool)
        first[1:] = ordered[1:] != ordered[:-1]
        starts = np.flatnonzero(first)
        of_row = np.empty(rows, np.int64)
        of_row[order] = np.cumsum(first) - 1
        heads = ordered[starts]
        return cls(order, starts, heads // width, heads % width - 1, of_row)

    def __len__(self) -> int:
        return int(self.starts.size)


def segment_table(
    frame: pl.DataFrame, columns: Sequence[str], segs: Segments, first_row: int, inf: str
) -> dict[str, np.ndarray]:
    """The moments of every segment, per column: ``(segments, columns)`` arrays."""
    from .moments import FIELDS, _float_values

    out: dict[str, np.ndarray] = {f: np.empty((len(segs), len(columns)), _dtype(f)) for f in FIELDS}
    rows = segs.order + first_row + 1
    for j, c in enumerate(columns):
        values = _float_values(frame.get_column(c))[segs.order]
        rec = segment_moments(values, segs.starts, c, inf, rows)
        for f in FIELDS:
            out[f][:, j] = rec[f]
    return out


def _dtype(name: str) -> type:
    return np.int64 if name in ("n", "missing") else np.float64


def _pop(fields: dict[str, np.ndarray], sel: slice | np.ndarray) -> Population:
    return Population(*(fields[f][sel] for f in _POP))


@dataclass
class GroupFold:
    """Folds chunks of (key, value) rows, in batch order, into `GroupStats`."""

    keys: list[str]
    columns: list[str]
    batch_size: int
    momentum: Momentum
    min_count: int = 1
    index: GroupIndex = field(init=False)
    _store: GroupStats = field(init=False, repr=False)  # with room for more groups

    def __post_init__(self) -> None:
        self.index = GroupIndex(self.keys)
        self._store = GroupStats.empty(self.columns)

    @property
    def stats(self) -> GroupStats:
        """The statistics of the groups seen so far, in group order."""
        return self._store.head(len(self.index))

    @stats.setter
    def stats(self, value: GroupStats) -> None:
        self._store = value

    def add(
        self, keys: pl.DataFrame, frame: pl.DataFrame, first_row: int, inf: str, trace: bool = False
    ) -> Folded:
        """Fold the next rows (whole batches, the chunk starting at global row
        ``first_row``): their segments, the segments' moments, each segment's group
        count right after its batch and, with ``trace``, its group running (mean,
        var) right after its batch."""
        gid = self.index.ids(keys, add=True)
        self._store.grow(len(self.index))
        segs = Segments.cut(gid, self.batch_size)
        fields = segment_table(frame, self.columns, segs, first_row, inf)
        c = len(self.columns)
        means = np.empty((len(segs), c)) if trace else None
        variances = np.empty((len(segs), c)) if trace else None
        counts = np.empty((len(segs), c), np.int64)
        pop, run = self._store.population, self._store.running
        bounds = [0, *(np.flatnonzero(np.diff(segs.batch)) + 1).tolist(), len(segs)]
        for a, b in itertools.pairwise(bounds):
            if a == b:
                continue
            sel = slice(a, b)  # one batch's segments (each group at most once)
            g = segs.gid[sel]
            merged = merge_population(_pop(vars(pop), g), _pop(fields, sel))
            for f in _POP:
                getattr(pop, f)[g] = getattr(merged, f)
            counts[sel] = merged.n
            # the group running statistics: the global recurrence, one "column" per
            # (group, column) of this batch
            width = g.size * c
            table = MomentsTable(
                [""] * width,
                np.zeros(1, np.int64),
                np.zeros(1, np.int64),
                np.zeros(1, np.int64),
                {f: fields[f][sel].reshape(1, width) for f in ("n", "mean_hi", "mean_lo", "var")},
            )
            start = RunningState(
                run.mean[g].reshape(width), run.var[g].reshape(width), run.updates[g].reshape(width)
            )
            after, hm, hv = update_running(start, table, self.momentum, trace)
            run.mean[g] = after.mean.reshape(g.size, c)
            run.var[g] = after.var.reshape(g.size, c)
            run.updates[g] = after.updates.reshape(g.size, c)
            if means is not None and variances is not None and hm is not None and hv is not None:
                means[sel] = hm.reshape(g.size, c)
                variances[sel] = hv.reshape(g.size, c)
        return Folded(segs, fields, counts, means, variances)


@dataclass
class Folded:
    """What `GroupFold.add` folded: the chunk's segments and their statistics."""

    segments: Segments
    fields: dict[str, np.ndarray]  # each segment's moments, (segments, columns)
    counts: np.ndarray  # each segment's group count after its batch
    means: np.ndarray | None  # its group running mean after its batch (trace)
    variances: np.ndarray | None


# -- maps ---------------------------------------------------------------------------
def with_fallback(
    group: mp.Maps, fallback: mp.Maps, rare: np.ndarray, index: np.ndarray
) -> mp.Maps:
    """Per row: ``group``'s map at ``index`` (-1: none), or ``fallback``'s (one row per
    row, or ``(columns,)``) where the group is ``rare`` (per row and column) or
    unseen."""
    missing = (index < 0)[:, None] | rare
    at = np.maximum(index, 0)

    def pick(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        if a.shape[0] == 0:
            return np.broadcast_to(b, missing.shape).copy()
        return np.where(missing, b, a[at])

    return mp.Maps(
        pick(group.center_hi, fallback.center_hi),
        pick(group.center_lo, fallback.center_lo),
        pick(group.scale, fallback.scale),
        pick(group.beta, fallback.beta),
    )


def population_maps(
    stats: GroupStats, eps: float, gamma: np.ndarray, beta: np.ndarray, use: str
) -> mp.Maps:
    """Each group's inference map, ``(groups, columns)`` (the global builders)."""
    if use == "running":
        run = stats.running
        mp.check_finite_var(run.var, stats.columns, "running")
        return mp.build(run.mean, np.zeros_like(run.mean), run.var, eps, gamma, beta)
    pop = stats.population
    mp.check_finite_var(pop.var, stats.columns, "population")
    return mp.build(pop.mean_hi, pop.mean_lo, pop.var, eps, gamma, beta)


def rare_groups(stats: GroupStats, min_count: int) -> np.ndarray:
    """``(groups, columns)``: fewer than ``min_count`` valid values."""
    return np.asarray(stats.population.n < min_count)


def shifts(stats: GroupStats, global_pop: Population) -> np.ndarray:
    """``(groups, columns)``: how far each group's mean is from the global mean, in
    global standard deviations (NaN where the group has no value or the column is
    constant)."""
    p = stats.population
    with np.errstate(invalid="ignore", divide="ignore"):
        delta = (p.mean_hi - global_pop.mean_hi) + (p.mean_lo - global_pop.mean_lo)
        std = np.sqrt(global_pop.var)
        out = np.abs(delta) / np.where(std > 0, std, np.nan)
    return np.where(p.n > 0, out, np.nan)
