"""Where statistics are right but probably not what the user meant: the warning rules.

Each rule is a pure function of the fitted state (and of what `Trend` kept of
the pass); each returns one-line messages. The thresholds are module constants,
documented in the README ("Warnings"), chosen on real files (see there):

* running statistics not converged: PyTorch's 0/1 start still weighs
  ``(1 - m)^k > NOT_CONVERGED`` after ``k`` updates;
* running statistics never updated: no batch had two valid values;
* eps dominating the variance: ``sqrt(var / (var + eps)) < EPS_RATIO``;
* ordered data: with ``TREND_MIN_BATCHES``+ batches, ``|Spearman(batch mean,
  batch index)| > TREND_RHO`` and batch means spread more than ``TREND_SPREAD``
  times what random batches of that size would (``std / sqrt(batch size)``), so
  that a shuffled file with few batches does not trip it by chance;
* a row id: an integer column that is strictly increasing throughout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .errors import opt
from .fold import Momentum, Population, RunningState
from .moments import MomentsTable

NOT_CONVERGED = 0.05
EPS_RATIO = 0.99
TREND_MIN_BATCHES = 10
TREND_RHO = 0.5
TREND_SPREAD = 2.0
#: Batch means kept for the trend (every 2^j-th batch once there are more).
TREND_KEEP = 2048


class Trend:
    """A bounded, deterministic sample of the batch means (every ``stride``-th
    batch), and whether each column has been strictly increasing so far."""

    def __init__(self, width: int) -> None:
        self.stride = 1
        self.means = np.zeros((0, width))
        self.index = np.zeros(0, np.int64)
        self.increasing = np.ones(width, bool)
        self._last = np.full(width, -math.inf)
        self._seen = np.zeros(width, bool)

    def add(self, t: MomentsTable) -> None:
        if not len(t):
            return
        keep = t.batch % self.stride == 0
        mean = np.where(t["n"] > 0, t["mean_hi"] + t["mean_lo"], np.nan)
        self.means = np.concatenate([self.means, mean[keep]])
        self.index = np.concatenate([self.index, t.batch[keep]])
        while self.index.size > TREND_KEEP:
            self.stride *= 2
            thin = self.index % self.stride == 0
            self.means, self.index = self.means[thin], self.index[thin]
        inc = t.fields.get("increasing")
        if inc is None:
            self.increasing[:] = False
        else:
            after = np.concatenate([self._last[None, :], t["max"][:-1]])
            ok = inc & (t["missing"] == 0) & (t["min"] > after)
            self.increasing &= ok.all(axis=0)
            self._last = t["max"][-1]
        self._seen |= (t["n"] > 0).any(axis=0)

    @classmethod
    def concat(cls, trends: Sequence[Trend]) -> Trend:
        """One trend over the columns of several (column groups of the same batches)."""
        out = cls(0)
        out.stride = trends[0].stride
        out.index = trends[0].index
        out.means = np.concatenate([t.means for t in trends], axis=1)
        out.increasing = np.concatenate([t.increasing for t in trends])
        out._last = np.concatenate([t._last for t in trends])
        out._seen = np.concatenate([t._seen for t in trends])
        return out

    def take(self, index: Sequence[int]) -> Trend:
        idx = np.asarray(index, np.int64)
        out = Trend(0)
        out.stride, out.index = self.stride, self.index
        out.means = self.means[:, idx]
        out.increasing, out._last, out._seen = (
            self.increasing[idx],
            self._last[idx],
            self._seen[idx],
        )
        return out

    def spearman(self) -> np.ndarray:
        """Per column: Spearman's rho of the kept batch means against batch order
        (NaN with fewer than `TREND_MIN_BATCHES` batches or a constant column)."""
        width = self.means.shape[1]
        out = np.full(width, math.nan)
        for j in range(width):
            m = self.means[:, j]
            ok = ~np.isnan(m)
            if ok.sum() < TREND_MIN_BATCHES:
                continue
            a, b = _ranks(self.index[ok].astype(np.float64)), _ranks(m[ok])
            sa, sb = a.std(), b.std()
            if sa > 0 and sb > 0:
                out[j] = float(((a - a.mean()) * (b - b.mean())).mean() / (sa * sb))
        return out

    def spread(self) -> np.ndarray:
        """Per column: the standard deviation of the kept batch means (0 for fewer than two)."""
        out = np.zeros(self.means.shape[1])
        for j in range(out.size):
            m = self.means[:, j]
            m = m[~np.isnan(m)]
            if m.size > 1:
                # in units of the largest mean's binade (exact): means of +/-1e153
                # would overflow the squares
                e = int(np.frexp(np.abs(m).max())[1])
                out[j] = math.ldexp(float(np.ldexp(m, -e).std()), e)
        return out

    @property
    def row_id(self) -> np.ndarray:
        """Columns strictly increasing throughout (with values)."""
        return self.increasing & self._seen


def _ranks(x: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's rho needs."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(x.size)
    ranks[order] = np.arange(x.size, dtype=np.float64)
    values, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    if values.size < x.size:  # ties
        sums = np.bincount(inverse, weights=ranks)
        ranks = (sums / counts)[inverse]
    return ranks


def not_converged(run: RunningState, momentum: Momentum) -> np.ndarray:
    """The weight the 0/1 start still has in each column's running statistics."""
    if momentum is None:
        return np.where(run.updates > 0, 0.0, 1.0)
    return np.power(1.0 - momentum, run.updates.astype(np.float64))


def running_messages(
    columns: Sequence[str], run: RunningState, momentum: Momentum, batches: int
) -> list[str]:
    """Warnings for commands that use the running statistics (one line for the
    columns that share a problem)."""
    weight = not_converged(run, momentum)
    never = [c for j, c in enumerate(columns) if batches and run.updates[j] == 0]
    out = []
    if never:
        out.append(
            f"{_names(never)}: no batch had 2 or more valid values, so the running statistics"
            f" were never updated (still the 0/1 start); use a larger {opt('batch_size')}"
        )
    by_updates: dict[int, list[str]] = {}
    for j, c in enumerate(columns):
        if run.updates[j] > 0 and weight[j] > NOT_CONVERGED:
            by_updates.setdefault(int(run.updates[j]), []).append(c)
    for k, names in sorted(by_updates.items()):
        w = float(
            not_converged(RunningState(run.mean[:1], run.var[:1], np.array([k])), momentum)[0]
        )
        out.append(
            f"{_names(names)}: running statistics have not converged (the 0/1 start still"
            f" weighs {w:.0%} after {k} update{'' if k == 1 else 's'}); use"
            f" {opt('momentum', 'cumulative')} or a smaller {opt('batch_size')}"
        )
    return out


def _names(columns: Sequence[str]) -> str:
    """'column "a"' or 'columns "a", "b" and 3 more'."""
    shown = ", ".join(f'"{c}"' for c in columns[:4])
    more = f" and {len(columns) - 4} more" if len(columns) > 4 else ""
    return f"column {shown}" if len(columns) == 1 else f"columns {shown}{more}"


def fit_messages(
    columns: Sequence[str],
    pop: Population,
    eps: float,
    trend: Trend,
    batches: int,
    integer: Sequence[bool],
    batch_size: int,
) -> list[str]:
    """Warnings about what a fit found (eps, order, row ids)."""
    out = []
    spread = trend.spread()
    with np.errstate(invalid="ignore"):
        chance = np.sqrt(pop.var / batch_size)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = np.sqrt(pop.var / (pop.var + eps))
    rho = trend.spearman()
    row_id = trend.row_id
    for j, c in enumerate(columns):
        if pop.n[j] > 1 and pop.var[j] > 0 and ratio[j] < EPS_RATIO:
            out.append(
                f'column "{c}": eps {eps:g} dominates its variance {pop.var[j]:.3g} (the'
                f" normalized std is {ratio[j]:.3g}, not 1); use {opt('eps', 0)} or a"
                f" smaller {opt('eps')}"
            )
        is_id = bool(integer[j] and row_id[j] and pop.n[j] > 1)
        shifting = abs(rho[j]) > TREND_RHO and spread[j] > TREND_SPREAD * chance[j]
        if batches >= TREND_MIN_BATCHES and shifting and not is_id:
            out.append(
                f'column "{c}": batch means follow the row order (Spearman {rho[j]:+.2f} over'
                f" {batches:,} batches), so batch and running statistics see a shifting"
                " distribution; shuffle the rows, or use population statistics"
            )
        if is_id:
            out.append(
                f'column "{c}": strictly increasing integers, like a row id; leave it out'
                f" with {opt('exclude', c)}"
            )
    return out


def batch_mode_messages(columns: Sequence[str], run: RunningState, batches: int) -> list[str]:
    """normalize --mode batch: columns no batch of which had two valid values (each
    value is then the batch's mean and maps to beta)."""
    never = [c for j, c in enumerate(columns) if batches and run.updates[j] == 0]
    if not never:
        return []
    return [
        f"{_names(never)}: no batch had 2 or more valid values, so batch mode mapped every"
        f" value to beta; use a larger {opt('batch_size')}"
    ]


def renorm_messages(columns: Sequence[str], updates: np.ndarray, batches: int) -> list[str]:
    """Batch renormalization's moving statistics start from the first batch with a
    value, so they have nothing to converge from; a column without any value never
    started them (its running statistics stay the 0/1 placeholder)."""
    never = [c for j, c in enumerate(columns) if batches and updates[j] == 0]
    if not never:
        return []
    return [
        f"{_names(never)}: no batch had a valid value, so batch renormalization's moving"
        " statistics never started (the running statistics are the 0/1 placeholder)"
    ]
