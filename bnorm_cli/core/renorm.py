"""Batch renormalization (Ioffe 2017): the per-batch corrections ``r``, ``d`` and the
moving statistics they come from (``normalize --mode renorm``).

Per batch ``B`` and column, from the moments table (``mu_B`` its mean, ``v_B`` its
biased variance) and the moving mean ``mu`` and standard deviation ``sigma``
*before* the batch::

    sigma_B = sqrt(v_B + eps)
    r = clip(sigma_B / sigma, 1/rmax_k, rmax_k)
    d = clip((mu_B - mu) / sigma, -dmax_k, dmax_k)
    y = gamma * ((x - mu_B) / sigma_B * r + d) + beta
    mu    += alpha * (mu_B - mu)
    sigma += alpha * (sigma_B - sigma)

``y`` is the affine map ``(x - mu_B) * (gamma * r / sigma_B) + (gamma * d + beta)``
(`maps.renorm_maps`). The rules, written once here:

* **Start.** A column's moving statistics start from its first batch with a valid
  value (``mu = mu_B``, ``sigma = sigma_B``, so that batch has ``r = 1, d = 0``),
  not from 0/1.
* **Schedule.** Batch ``k`` (global, counted from 0) has ``rmax_k``, ``dmax_k``:
  plain batch normalization (1, 0) for ``k < warmup``; then
  ``p = min(1, (k - warmup + 1) / ramp)`` (``p = 1`` when ``ramp == 0``) and
  ``rmax_k = 1 + p * (rmax - 1)``, ``dmax_k = p * dmax``: the batches
  ``warmup .. warmup + ramp - 1`` ramp linearly and the last of them is at the full
  limits. ``rmax``/``dmax`` may be ``inf`` (no clipping, Keras' default).
* **Missing values.** A batch without a valid value in a column leaves its moving
  statistics alone and has no ``r``/``d`` (NaN in the trace; its output is all
  missing). A batch with one valid value has ``v_B = 0`` and updates them (the
  biased variance exists for n = 1).
* **Zero spread** (only with ``eps = 0``): ``r`` and ``d`` are the clipped limits of
  their quotients: ``c / 0`` is ``+-inf`` (clipped to the limit), ``0 / 0`` is the
  neutral value (``r = 1``, ``d = 0``). A constant batch (``sigma_B = 0``) maps to
  ``gamma * d + beta`` (every value equals ``mu_B``). A correction still infinite
  after the clip (``sigma = 0`` with ``rmax`` or ``dmax`` inf) is not applied: it
  takes the neutral value, so outputs stay finite.

What inference uses afterwards (the statistics file's running statistics) is
``mu`` and ``sigma**2 - eps`` (floored at 0), so ``transform --use running``
divides by ``sqrt(sigma**2 - eps + eps) = sigma``, as Keras' ``moving_variance``.

Vectorized across columns, sequential over batches. No I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import UsageError, opt
from .moments import MomentsTable, two_sum


@dataclass(frozen=True)
class Renorm:
    """The options of batch renormalization (validated by `check`)."""

    momentum: float = 0.01
    rmax: float = 3.0
    dmax: float = 5.0
    warmup: int = 0
    ramp: int = 0

    def limits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(rmax_k, dmax_k)`` of the global batch indices ``batch`` (the schedule)."""
        k = np.asarray(batch, np.float64)
        if self.ramp == 0:
            p = np.where(k >= self.warmup, 1.0, 0.0)
        else:
            p = np.clip((k - self.warmup + 1.0) / self.ramp, 0.0, 1.0)
        with np.errstate(invalid="ignore"):  # 0 * inf: still warming up
            rmax = np.where(
                p >= 1.0, self.rmax, np.where(p > 0.0, 1.0 + p * (self.rmax - 1.0), 1.0)
            )
            dmax = np.where(p >= 1.0, self.dmax, np.where(p > 0.0, p * self.dmax, 0.0))
        return rmax, dmax

    def as_dict(self) -> dict[str, object]:
        """For the statistics file (``inf`` as the string "inf": JSON has no infinity)."""

        def num(x: float) -> float | str:
            return "inf" if math.isinf(x) else x

        return {
            "momentum": self.momentum,
            "rmax": num(self.rmax),
            "dmax": num(self.dmax),
            "warmup": self.warmup,
            "ramp": self.ramp,
        }


def check(
    momentum: float = 0.01,
    rmax: float | str = 3.0,
    dmax: float | str = 5.0,
    warmup: int = 0,
    ramp: int = 0,
) -> Renorm:
    """Validated `Renorm` options: ``0 < momentum <= 1``, ``rmax >= 1``,
    ``dmax >= 0`` (either may be inf), ``warmup``/``ramp`` integers >= 0."""

    def number(value: object, name: str, low: float, what: str) -> float:
        try:
            v = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            v = math.nan
        if isinstance(value, bool) or math.isnan(v) or v < low:
            raise UsageError(f"{opt(name)} must be {what}, got {value!r}")
        return v

    def count(value: object, name: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
            raise UsageError(f"{opt(name)} must be an integer >= 0 (batches), got {value!r}")
        return int(value)

    alpha = number(momentum, "renorm_momentum", 0.0, "a number in (0, 1]")
    if not 0.0 < alpha <= 1.0:
        raise UsageError(f"{opt('renorm_momentum')} must be a number in (0, 1], got {momentum!r}")
    return Renorm(
        alpha,
        number(rmax, "rmax", 1.0, "a number >= 1 (or inf)"),
        number(dmax, "dmax", 0.0, "a number >= 0 (or inf)"),
        count(warmup, "warmup"),
        count(ramp, "ramp"),
    )


def running_var(std: np.ndarray, updates: np.ndarray, eps: float) -> np.ndarray:
    """What inference divides by, less eps: ``sigma**2 - eps`` (floored at 0 against
    rounding, as Keras' relu; 1 for a column never started, the 0/1 start)."""
    return np.where(updates > 0, np.maximum(std * std - eps, 0.0), 1.0)


@dataclass(frozen=True)
class Moving:
    """The moving mean and standard deviation of every column: ``(columns,)`` arrays.

    The mean is kept as ``mean + mean_lo`` (two floats, as the moments' means), so
    ``d`` of a column like ``1e9 + noise`` is not the rounding of ``mu`` over a
    small ``sigma``. ``updates`` counts the batches that updated a column (0: not
    started yet, the mean and std are then meaningless placeholders 0 and 1).
    """

    mean: np.ndarray
    std: np.ndarray
    updates: np.ndarray
    mean_lo: np.ndarray | None = None

    @classmethod
    def start(cls, width: int) -> Moving:
        return cls(np.zeros(width), np.ones(width), np.zeros(width, np.int64), np.zeros(width))

    @property
    def low(self) -> np.ndarray:
        return self.mean_lo if self.mean_lo is not None else np.zeros_like(self.mean)

    def running_var(self, eps: float) -> np.ndarray:
        """The variance inference uses (`running_var`)."""
        return running_var(self.std, self.updates, eps)

    def take(self, index: list[int]) -> Moving:
        idx = np.asarray(index, np.int64)
        return Moving(self.mean[idx], self.std[idx], self.updates[idx], self.low[idx])


@dataclass(frozen=True)
class Trace:
    """Per batch and column: the corrections applied, and the moving statistics
    after the batch (``(batches, columns)``; ``var`` the `running_var` of ``std``);
    the schedule's limits (``(batches,)``)."""

    r: np.ndarray
    d: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    var: np.ndarray
    rmax: np.ndarray
    dmax: np.ndarray


def _quotient(num: np.ndarray, den: np.ndarray, neutral: float) -> np.ndarray:
    """``num / den`` with ``c / 0 = +-inf`` and ``0 / 0 = neutral`` (zero spread)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        q = num / den
    return np.where(np.isnan(q) & (den == 0.0) & (num == 0.0), neutral, q)


def step(moving: Moving, t: MomentsTable, eps: float, options: Renorm) -> tuple[Moving, Trace]:
    """``moving`` updated by every batch of ``t`` in order, with each batch's ``r``, ``d``."""
    n = t["n"]
    hi, lo = t["mean_hi"], t["mean_lo"]
    with np.errstate(invalid="ignore", over="ignore"):
        sigma_b = np.sqrt(t["var"] + eps)
    rmax, dmax = options.limits(t.batch)
    alpha = options.momentum
    mean, std, updates = moving.mean.copy(), moving.std.copy(), moving.updates.copy()
    mean_lo = moving.low.copy()
    shape = n.shape
    r_out, d_out = np.full(shape, math.nan), np.full(shape, math.nan)
    mean_out, std_out, var_out = np.empty(shape), np.empty(shape), np.empty(shape)
    for i in range(len(t)):
        has = n[i] > 0
        first = has & (updates == 0)
        mean = np.where(first, hi[i], mean)
        mean_lo = np.where(first, lo[i], mean_lo)
        std = np.where(first, sigma_b[i], std)
        diff = (hi[i] - mean) + (lo[i] - mean_lo)  # mu_B - mu, with both low parts
        with np.errstate(invalid="ignore"):
            r = np.clip(_quotient(sigma_b[i], std, 1.0), 1.0 / rmax[i], rmax[i])
            d = np.clip(_quotient(diff, std, 0.0), -dmax[i], dmax[i])
        r = np.where(np.isfinite(r), r, 1.0)  # unbounded (sigma = 0, no clip): not applied
        d = np.where(np.isfinite(d), d, 0.0)
        first_r = np.where(first, 1.0, r)  # exactly the neutral values on the first batch
        first_d = np.where(first, 0.0, d)
        r_out[i] = np.where(has, first_r, math.nan)
        d_out[i] = np.where(has, first_d, math.nan)
        with np.errstate(invalid="ignore", over="ignore"):
            new_hi, err = two_sum(mean, alpha * diff)
            new_hi, new_lo = two_sum(new_hi, err + mean_lo)
        mean = np.where(has, new_hi, mean)
        mean_lo = np.where(has, new_lo, mean_lo)
        std = np.where(has, std + alpha * (sigma_b[i] - std), std)
        updates = updates + has
        mean_out[i], std_out[i] = mean, std
        var_out[i] = running_var(std, updates, eps)
    trace = Trace(r_out, d_out, mean_out, std_out, var_out, rmax, dmax)
    return Moving(mean, std, updates, mean_lo), trace
