"""Batch-normalization modes as per-column affine maps (design.md §2).

Every mode reduces, per batch and column, to ``y = (x - center) * scale + beta``
with ``scale = gamma / sqrt(var + eps)``; only where ``center`` and ``var``
come from differs:

* population: the exact whole-dataset mean and biased variance;
* batch (BN training mode): the batch's own mean and biased variance;
* running (BN inference mode): PyTorch ``BatchNorm1d`` running statistics.

The map is applied in that order, never folded into ``a*x + c`` (which cancels
catastrophically when |mean| >> std). No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import polars as pl

from .moments import Moments

#: ``None`` is PyTorch's ``momentum=None``: the cumulative (equal-weight) average.
Momentum = float | None


@dataclass(frozen=True, slots=True)
class Running:
    """PyTorch ``BatchNorm1d`` running statistics of one column.

    ``updates`` counts the batches that updated them: a batch with fewer than two
    valid values has no unbiased variance and leaves the running statistics
    unchanged (PyTorch raises instead), so ``updates`` can be smaller than
    ``num_batches_tracked``. It is the ``k`` of the cumulative ``1/k`` factor.
    """

    mean: float = 0.0
    var: float = 1.0
    updates: int = 0

    def update(self, batch: Moments, momentum: Momentum) -> Running:
        unbiased = batch.var_unbiased
        mean = batch.mean
        if unbiased is None or mean is None:
            return self
        k = self.updates + 1
        f = 1.0 / k if momentum is None else momentum
        return Running(
            mean=(1.0 - f) * self.mean + f * mean,
            var=(1.0 - f) * self.var + f * unbiased,
            updates=k,
        )


@dataclass(frozen=True, slots=True)
class AffineMap:
    """``y = ((x - center_hi) - center_lo) * scale + beta`` for one column."""

    center_hi: float
    center_lo: float
    scale: float
    beta: float

    @classmethod
    def build(
        cls, mean_hi: float, mean_lo: float, var: float, eps: float, gamma: float, beta: float
    ) -> AffineMap:
        return cls(mean_hi, mean_lo, gamma / _std_or_one(var + eps), beta)

    def expr(self, name: str) -> pl.Expr:
        x = pl.col(name).cast(pl.Float64)
        centered = x - self.center_hi
        if self.center_lo != 0.0:
            centered = centered - self.center_lo
        return (centered * self.scale + self.beta).alias(name)

    def inverse_expr(self, name: str) -> pl.Expr:
        y = pl.col(name).cast(pl.Float64)
        return (((y - self.beta) / self.scale + self.center_lo) + self.center_hi).alias(name)


def _std_or_one(var: float) -> float:
    """sqrt(var + eps), or 1 when it is 0 (a constant column with eps=0).

    Then every value equals the center, so the output is ``beta`` whatever the
    scale; 1 keeps new values finite, as StandardScaler's zero-scale rule does.
    """
    return math.sqrt(var) if var > 0.0 else 1.0


def population_map(pop: Moments, eps: float, gamma: float, beta: float) -> AffineMap:
    """Inference with the exact population statistics."""
    var = pop.var
    return AffineMap.build(pop.mean_hi, pop.mean_lo, 0.0 if var is None else var, eps, gamma, beta)


def batch_map(batch: Moments, eps: float, gamma: float, beta: float) -> AffineMap:
    """BN training mode: the batch's own mean and biased variance.

    A batch with no valid value maps nothing (its values are all missing); a
    batch with one valid value has variance 0 and maps it to ``beta``.
    """
    var = batch.var
    return AffineMap.build(
        batch.mean_hi, batch.mean_lo, 0.0 if var is None else var, eps, gamma, beta
    )


def running_map(running: Running, eps: float, gamma: float, beta: float) -> AffineMap:
    """BN inference mode with running statistics."""
    return AffineMap.build(running.mean, 0.0, running.var, eps, gamma, beta)


def apply_maps(
    frame: pl.DataFrame,
    maps: Mapping[str, AffineMap],
    dtype: type[pl.DataType] = pl.Float64,
    inverse: bool = False,
) -> pl.DataFrame:
    """Return ``frame`` with each mapped column replaced; other columns untouched."""
    exprs = [
        (m.inverse_expr(name) if inverse else m.expr(name)).cast(dtype) for name, m in maps.items()
    ]
    return frame.with_columns(exprs)
