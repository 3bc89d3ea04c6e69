"""What the HTML report plots, gathered during the one streaming pass.

Bounded memory whatever the file size: a bottom-k sample of rows (each row gets
a random key; the ``size`` rows with the smallest keys are kept, so "before"
and "after" values of a row stay paired across columns), and one small record
per batch and column for the running-statistics trace. No I/O, no plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from ..core import moments as mom
from ..core.fold import Running
from ..core.moments import Moments

SAMPLE_ROWS = 20_000


@dataclass
class Trace:
    """Per batch: the batch's mean and unbiased variance, then the running ones."""

    batch_mean: list[float | None] = field(default_factory=list)
    batch_var: list[float | None] = field(default_factory=list)
    running_mean: list[float] = field(default_factory=list)
    running_var: list[float] = field(default_factory=list)
    #: batch renormalization: each batch's r and d, and the schedule's limits
    r: list[float] = field(default_factory=list)
    d: list[float] = field(default_factory=list)
    rmax: list[float] = field(default_factory=list)
    dmax: list[float] = field(default_factory=list)


class Profile:
    """Samples of input and output values, and running-statistics traces."""

    def __init__(self, size: int = SAMPLE_ROWS, seed: int = 0) -> None:
        self.columns: list[str] = []
        self.size = size
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0)
        self._before: dict[str, np.ndarray] = {}
        self._after: dict[str, np.ndarray] = {}
        self.traces: dict[str, Trace] = {}
        self.output: dict[str, Moments] = {}  # exact statistics of the written columns

    def _start(self, columns: list[str]) -> None:
        self.columns = columns
        self._before = {c: np.empty(0) for c in columns}
        self._after = {c: np.empty(0) for c in columns}
        self.traces = {c: Trace() for c in columns}

    def add_batch(
        self,
        before: pl.DataFrame,
        after: pl.DataFrame | None,
        moments: Mapping[str, Moments] | None = None,
        running: Mapping[str, Running] | None = None,
    ) -> None:
        """Account for one batch (``after``: its normalized columns, if any)."""
        if not self.columns and before.width:
            self._start(before.columns)
        if after is not None and self.columns:
            self._add_output(after)
        if moments is not None and running is not None:
            self.add_trace(moments, running)
        keys = self._rng.random(before.height)
        threshold = (
            np.partition(self._keys, self.size - 1)[self.size - 1]
            if self._keys.size >= self.size
            else 1.0
        )
        take = np.flatnonzero(keys < threshold)
        if take.size == 0:
            return
        all_keys = np.concatenate([self._keys, keys[take]])
        keep = np.argsort(all_keys, kind="stable")[: self.size]
        self._keys = all_keys[keep]
        rows = pl.Series(take)  # gather the few sampled rows before converting
        picked_before = before.select(self.columns)[rows]
        picked_after = after.select(self.columns)[rows] if after is not None else None
        for c in self.columns:
            new = picked_before.get_column(c).cast(pl.Float64).to_numpy()
            self._before[c] = np.concatenate([self._before[c], new])[keep]
            if picked_after is not None:
                out = picked_after.get_column(c).cast(pl.Float64).to_numpy()
                self._after[c] = np.concatenate([self._after[c], out])[keep]

    def add_trace(self, moments: Mapping[str, Moments], running: Mapping[str, Running]) -> None:
        """One batch's statistics, and the running ones after it, for the traces."""
        for c in self.columns:
            t, m, r = self.traces[c], moments[c], running[c]
            t.batch_mean.append(m.mean)
            t.batch_var.append(m.var_unbiased)
            t.running_mean.append(r.mean)
            t.running_var.append(r.var)

    def add_corrections(
        self, r: Mapping[str, float], d: Mapping[str, float], rmax: float, dmax: float
    ) -> None:
        """One batch's renormalization corrections (NaN: no value in the batch)."""
        for c in self.columns:
            t = self.traces[c]
            t.r.append(r[c])
            t.d.append(d[c])
            t.rmax.append(rmax)
            t.dmax.append(dmax)

    def _add_output(self, after: pl.DataFrame) -> None:
        if not after.height:
            return
        table = mom.table_moments(after, self.columns, after.height, inf="missing")
        for c, m in table.moments(0).items():
            self.output[c] = mom.merge(self.output.get(c, Moments()), m)

    def before(self, column: str) -> np.ndarray:
        """Sampled input values (NaN for missing)."""
        return self._before.get(column, np.empty(0))

    def after(self, column: str) -> np.ndarray:
        """Sampled output values, paired with `before` (empty if none were given)."""
        return self._after.get(column, np.empty(0))

    def set_after(self, column: str, values: np.ndarray) -> None:
        """Outputs computed after the pass (fit: the sample mapped with the final statistics)."""
        self._after[column] = values
