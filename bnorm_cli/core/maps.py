"""Batch-normalization modes as per-column affine maps (design.md §2).

Every mode reduces, per batch and column, to ``y = (x - center) * scale + beta``
with ``scale = gamma / sqrt(var + eps)``; only where ``center`` and ``var``
come from differs:

* population: the exact whole-dataset mean and biased variance;
* batch (BN training mode): the batch's own mean and biased variance;
* running (BN inference mode): PyTorch ``BatchNorm1d`` running statistics;
* renorm (batch renormalization): the batch's own mean and ``sqrt(var + eps)``,
  with ``gamma * r`` for gamma and ``gamma * d + beta`` for beta (`renorm`).

Other centre/scale choices (median, IQR, min-max, max-abs) fill the same maps:
`scalers` builds every map from the statistics; `build` here is the std rule.

The map is applied in that order, never folded into ``a*x + c`` (which cancels
catastrophically when |mean| >> std). Builders are vectorized: they take and
return arrays, ``(columns,)`` for one map per column or ``(batches, columns)``
for one per batch. No I/O here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from . import dtypes
from .dtypes import OutType
from .errors import DataError, opt
from .moments import MomentsTable


@dataclass(frozen=True, slots=True)
class AffineMap:
    """``y = ((x - center_hi) - center_lo) * scale + beta`` for one column."""

    center_hi: float
    center_lo: float
    scale: float
    beta: float

    def expr(self, name: str) -> pl.Expr:
        x = pl.col(name).cast(pl.Float64)
        centered = x - self.center_hi
        if self.center_lo != 0.0:
            centered = centered - self.center_lo
        return (centered * self.scale + self.beta).alias(name)

    def inverse_expr(self, name: str) -> pl.Expr:
        y = pl.col(name).cast(pl.Float64)
        return (((y - self.beta) / self.scale + self.center_lo) + self.center_hi).alias(name)


@dataclass(frozen=True)
class Maps:
    """Affine maps as arrays: ``(columns,)`` or ``(batches, columns)`` each."""

    center_hi: np.ndarray
    center_lo: np.ndarray
    scale: np.ndarray
    beta: np.ndarray

    def by_column(self, columns: Sequence[str]) -> dict[str, AffineMap]:
        """One `AffineMap` per column (for maps of shape ``(columns,)``)."""
        return {
            c: AffineMap(
                float(self.center_hi[j]),
                float(self.center_lo[j]),
                float(self.scale[j]),
                float(self.beta[j]),
            )
            for j, c in enumerate(columns)
        }


def build(
    center_hi: np.ndarray,
    center_lo: np.ndarray,
    var: np.ndarray,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
) -> Maps:
    """``scale = gamma / sqrt(var + eps)``; where ``var + eps`` is 0 (a constant
    column with eps=0) every value equals the center, so the output is ``beta``
    whatever the scale: 1 keeps new values finite, as StandardScaler's rule does."""
    total = var + eps
    with np.errstate(invalid="ignore"):
        std = np.where(total > 0.0, np.sqrt(np.where(total > 0.0, total, 1.0)), 1.0)
    scale = gamma / std
    shape = np.broadcast_shapes(np.shape(center_hi), np.shape(scale))
    return Maps(
        np.broadcast_to(center_hi, shape),
        np.broadcast_to(center_lo, shape),
        np.broadcast_to(scale, shape),
        np.broadcast_to(beta, shape),
    )


def check_finite_var(
    var: np.ndarray, columns: Sequence[str], what: str, statistic: str = "variance"
) -> None:
    """A variance (or another spread) beyond float64 would scale every value to 0:
    refuse it, naming the column."""
    bad = ~np.isfinite(var)
    if bad.any():
        at = np.argwhere(bad)[0]
        column = columns[int(at[-1])]
        batch = int(at[0]) if var.ndim == 2 else None
        raise DataError(
            f'column "{column}": its {what} {statistic} exceeds the float64 range; rescale the'
            f" column or leave it out with {opt('exclude', column)}",
            column=column,
            batch=batch,
        )


def renorm_maps(
    t: MomentsTable,
    r: np.ndarray,
    d: np.ndarray,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    columns: Sequence[str],
) -> Maps:
    """Batch renormalization: ``gamma * ((x - mu_B) / sigma_B * r + d) + beta`` as
    ``(x - mu_B) * (gamma * r / sigma_B) + (gamma * d + beta)``, still centered
    first. A batch without a valid value (``r``, ``d`` NaN) maps nothing."""
    check_finite_var(t["var"], columns, "batch")
    has = ~np.isnan(r)
    return build(
        t["mean_hi"],
        t["mean_lo"],
        t["var"],
        eps,
        gamma * np.where(has, r, 1.0),
        gamma * np.where(has, d, 0.0) + beta,
    )


def apply_maps(
    frame: pl.DataFrame,
    maps: Mapping[str, AffineMap],
    dtype: OutType = pl.Float64,
    inverse: bool = False,
) -> pl.DataFrame:
    """Return ``frame`` with each mapped column replaced; other columns untouched.
    ``dtype``: one type, or one per column (`dtypes`: integers are rounded back)."""
    return dtypes.check_cast(frame, map_exprs(maps, dtype, inverse), dtype)


def map_exprs(
    maps: Mapping[str, AffineMap], dtype: OutType = pl.Float64, inverse: bool = False
) -> list[pl.Expr]:
    """The polars expressions `apply_maps` evaluates, one per mapped column."""
    return [
        dtypes.cast(m.inverse_expr(name) if inverse else m.expr(name), dtypes.target(dtype, name))
        for name, m in maps.items()
    ]


@dataclass
class MappedBatches:
    """A transform's output: ``batches`` (each input batch mapped here, in Python),
    or the same rows as ``inputs`` (the input's batches, read and checked as they
    are pulled) mapped by ``exprs`` — for a writer that evaluates expressions as it
    writes (polars' Parquet sink, on every core). ``exprs`` is None when a mapped
    value can fail its cast (integer targets: `dtypes.check_cast` names the column).
    Only one of the two is iterated.

    ``scan``, when nothing needs to see the rows go by (no check, no statistics,
    no drift, no progress), reads the same rows as ``inputs`` as a polars query
    (`io.readers.Source.scan`): then polars reads, maps and writes, all on every
    core; ``rows`` is their count and ``name`` the input's, for its errors.
    """

    batches: Iterator[pa.RecordBatch]
    inputs: Iterator[pa.RecordBatch]
    input_schema: pa.Schema
    exprs: list[pl.Expr] | None
    scan: Callable[[], pl.LazyFrame] | None = None
    rows: int = 0
    name: str = ""

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self.batches


def apply_batch_maps(
    frame: pl.DataFrame,
    columns: Sequence[str],
    maps: Maps,
    rows: np.ndarray,
    dtype: OutType = pl.Float64,
) -> pl.DataFrame:
    """Each batch of ``frame`` (``rows[i]`` rows, in order) mapped by its own maps."""
    if len(rows) == 1:  # one batch: constants, as `apply_maps` computes them
        return apply_maps(frame, maps_of(maps, 0, columns), dtype)

    def per_row(a: np.ndarray) -> pl.Series:
        return pl.Series(np.repeat(a, rows))

    exprs = []
    for j, c in enumerate(columns):
        x = pl.col(c).cast(pl.Float64)
        centered = (x - per_row(maps.center_hi[:, j])) - per_row(maps.center_lo[:, j])
        y = centered * per_row(maps.scale[:, j]) + per_row(maps.beta[:, j])
        exprs.append(dtypes.cast(y.alias(c), dtypes.target(dtype, c)))
    return frame.with_columns(exprs)


def maps_of(maps: Maps, i: int, columns: Sequence[str]) -> dict[str, AffineMap]:
    """The maps of batch ``i`` of per-batch ``maps``."""
    return Maps(maps.center_hi[i], maps.center_lo[i], maps.scale[i], maps.beta[i]).by_column(
        columns
    )


def apply_row_maps(
    frame: pl.DataFrame,
    columns: Sequence[str],
    maps: Maps,
    dtype: type[pl.DataType] = pl.Float64,
    inverse: bool = False,
) -> pl.DataFrame:
    """Each row of ``frame`` mapped by its own map (``maps`` of shape ``(rows,
    columns)``, e.g. its group's): the same expression as `AffineMap`, vectorized."""
    exprs = []
    for j, c in enumerate(columns):
        hi, lo = pl.Series(maps.center_hi[:, j]), pl.Series(maps.center_lo[:, j])
        scale, beta = pl.Series(maps.scale[:, j]), pl.Series(maps.beta[:, j])
        x = pl.col(c).cast(pl.Float64)
        y = (((x - beta) / scale + lo) + hi) if inverse else ((x - hi) - lo) * scale + beta
        exprs.append(y.cast(dtype).alias(c))
    return frame.with_columns(exprs)
