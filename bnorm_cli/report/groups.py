"""The groups of a per-key fit (``--by``) whose statistics differ most from the
global ones, for ``bnorm inspect``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..core import groups as gr
from ..core.model import BatchNorm
from .summary import fmt

HEADERS = ("group", "column", "count", "mean", "std", "shift (global std)")


@dataclass(frozen=True)
class Shift:
    group: str  # the key values, "k=v, ..."
    column: str
    count: int
    mean: float
    std: float
    shift: float  # |group mean - global mean| / global std


def largest_shifts(model: BatchNorm, top: int = 10) -> list[Shift]:
    """The ``top`` (group, column) pairs with the largest shift of the mean, largest first
    (groups below min_count, which use the global statistics, are left out)."""
    state = model.state_
    if state is None or state.groups is None or state.groups.index.known is None:
        return []
    fold = state.groups
    known = state.groups.index.known
    stats = fold.stats
    shift = gr.shifts(stats, state.population)
    shift = np.where(gr.rare_groups(stats, fold.min_count), np.nan, shift)
    flat = np.where(np.isnan(shift), -1.0, shift).ravel()
    order = np.argsort(-flat, kind="stable")[:top]
    keys = known.sort(gr.GROUP_ID)
    pop = stats.population
    out = []
    for at in order:
        if flat[at] < 0:
            break
        g, j = divmod(int(at), len(stats.columns))
        row = keys.row(g, named=True)
        label = ", ".join(f"{k}={'null' if row[k] is None else row[k]}" for k in fold.keys)
        out.append(
            Shift(
                label,
                stats.columns[j],
                int(pop.n[g, j]),
                float(pop.mean_hi[g, j] + pop.mean_lo[g, j]),
                float(np.sqrt(pop.var[g, j])),
                float(flat[at]),
            )
        )
    return out


def cells(s: Shift) -> list[str]:
    return [s.group, s.column, fmt(s.count), fmt(s.mean, s.std), fmt(s.std), f"{s.shift:.3g}"]


def caption(model: BatchNorm) -> str:
    state = model.state_
    assert state is not None and state.groups is not None
    fold = state.groups
    return (
        f"{len(fold.index):,} groups by {', '.join(fold.keys)} (min-count {fold.min_count});"
        " shift: |group mean - global mean| in global standard deviations"
    )
