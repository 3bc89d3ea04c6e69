"""Quantiles of columns, for the robust centre and scale choices (median, IQR).

Interface shared by the engines and the model: `column_quantiles` is given a
way to read the input again from the start (``passes``) and returns numpy's
default (linear, ``method="linear"``) quantiles of each column's valid values
(null and NaN are left out, as everywhere in bnorm; +/-inf are values).

PLACEHOLDER implementation: it keeps every valid value of each column in
memory (one pass). It is to be replaced by the out-of-core multi-pass version
(sketch brackets each quantile, later passes keep only the values inside the
brackets) behind this same signature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

#: Memory the values kept between passes may use, by default.
BUDGET_BYTES = 256 << 20


@dataclass(frozen=True)
class QuantileResult:
    """``values[i, j]`` is quantile ``probs[i]`` of column ``columns[j]`` (NaN
    where a column has no valid value). ``exact`` is False for a one-pass
    (pipe) estimate, then ``rank_error`` bounds the error of each quantile's
    rank as a fraction of the column's valid count; ``passes`` counts reads."""

    probs: tuple[float, ...]
    columns: tuple[str, ...]
    values: np.ndarray
    exact: bool
    rank_error: float
    passes: int


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
    read twice (a pipe): the result is then approximate (``exact=False``).
    """
    kept: dict[str, list[np.ndarray]] = {c: [] for c in columns}
    for frame in passes():
        for c in columns:
            a = frame.get_column(c).cast(pl.Float64).to_numpy(allow_copy=True)
            kept[c].append(a[~np.isnan(a)])
    values = np.full((len(probs), len(columns)), np.nan)
    for j, c in enumerate(columns):
        a = np.concatenate(kept[c]) if kept[c] else np.empty(0)
        if a.size:
            values[:, j] = np.quantile(a, np.asarray(probs, dtype=np.float64))
    return QuantileResult(tuple(probs), tuple(columns), values, True, 0.0, 1)
