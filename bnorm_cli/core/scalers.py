"""Centre and scale choices: other ways to fill the same affine map.

Every choice is, per batch and column, ``y = (x - center) * scale + beta``
(design.md §2); only where ``center`` and ``scale`` come from differs:

========  ==============================  ==========================================
choice    centre / spread                 scikit-learn
========  ==============================  ==========================================
mean      the population (or batch) mean  StandardScaler (with_mean=True)
median    the median (linear quantile)    RobustScaler (with_centering=True)
none      0                               with_mean=False, MaxAbsScaler
std       ``sqrt(var + eps)``             StandardScaler (with_std=True)
iqr       ``q(hi) - q(lo)`` of             RobustScaler(quantile_range=(lo, hi))
          ``quantile_range`` (percent)
range     ``max - min``; centre = min     MinMaxScaler(feature_range=(a, b))
maxabs    ``max |x - centre|``             MaxAbsScaler (centre none)
none      1                               with_std=False
========  ==============================  ==========================================

``scale = gamma / spread`` (``range``: ``gamma * (b - a) / spread`` and ``beta``
becomes ``beta + gamma * a``, so that min maps to a and max to b when gamma is 1
and beta 0). eps is added to the variance for ``std`` only. A spread of 0 (a
constant column) or one that no value defines (an all-null column) is 1, as in
scikit-learn's ``_handle_zeros_in_scale``, so outputs stay finite; bnorm takes
only an exact 0 as constant (scikit-learn also takes spreads below 2.2e-15).

The default choice (mean, std) is BatchNorm's; the running statistics of
PyTorch's BatchNorm1d exist only for it (and its ``none`` variants).
No I/O here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from . import maps as mp
from .brackets import lerp
from .errors import UsageError, opt
from .fold import Population

CENTERS = ("mean", "median", "none")
SCALES = ("std", "iqr", "range", "maxabs", "none")
#: Each scale's own centre, when none is given (``range`` always centres on the min).
DEFAULT_CENTER = {"std": "mean", "none": "mean", "iqr": "median", "maxabs": "none", "range": "min"}
DEFAULT_FEATURE_RANGE = (0.0, 1.0)
DEFAULT_QUANTILE_RANGE = (25.0, 75.0)


@dataclass(frozen=True)
class Scaling:
    """A resolved centre/scale choice (``center`` is ``"min"`` for ``range``)."""

    center: str = "mean"
    scale: str = "std"
    feature_range: tuple[float, float] = DEFAULT_FEATURE_RANGE
    quantile_range: tuple[float, float] = DEFAULT_QUANTILE_RANGE

    @property
    def is_default(self) -> bool:
        """BatchNorm's own choice (what a statistics file without "scaler" means)."""
        return self.center == "mean" and self.scale == "std"

    @property
    def probs(self) -> tuple[float, ...]:
        """The quantiles (in [0, 1], sorted) this choice needs; none for most."""
        out = set()
        if self.center == "median":
            out.add(0.5)
        if self.scale == "iqr":
            out.update(q / 100.0 for q in self.quantile_range)
        return tuple(sorted(out))

    @property
    def needs_quantiles(self) -> bool:
        return bool(self.probs)

    @property
    def has_running(self) -> bool:
        """Whether BN running statistics can express it (mean/std or none)."""
        return self.center in ("mean", "none") and self.scale in ("std", "none")

    def describe(self) -> str:
        """``--center median --scale iqr`` (for messages), options as `opt` marks; a
        range other than the default is named too."""
        center = "" if self.center == "min" else f"{opt('center', self.center)} "
        out = center + opt("scale", self.scale)
        if self.scale == "iqr" and self.quantile_range != DEFAULT_QUANTILE_RANGE:
            out += " " + opt("quantile_range", "{:g},{:g}".format(*self.quantile_range))
        if self.scale == "range" and self.feature_range != DEFAULT_FEATURE_RANGE:
            out += " " + opt("feature_range", "{:g},{:g}".format(*self.feature_range))
        return out

    def record(self) -> dict[str, Any]:
        """What the statistics file records of the choice (empty for the default)."""
        if self.is_default:
            return {}
        out: dict[str, Any] = {"center": self.center, "scale": self.scale}
        if self.scale == "range":
            out["feature_range"] = list(self.feature_range)
        if self.scale == "iqr":
            out["quantile_range"] = list(self.quantile_range)
        return out


def check_scaling(
    center: str | None,
    scale: str,
    feature_range: Sequence[float] | None = None,
    quantile_range: Sequence[float] | None = None,
) -> Scaling:
    """Validate the centre/scale options (names as `opt` marks) and resolve the centre."""
    if scale not in SCALES:
        raise UsageError(f"{opt('scale')} must be one of {', '.join(SCALES)}, got {scale!r}")
    if center is not None and center not in CENTERS and not (center == "min" and scale == "range"):
        raise UsageError(f"{opt('center')} must be one of {', '.join(CENTERS)}, got {center!r}")
    if scale == "range" and center not in (None, "min"):
        raise UsageError(
            f"{opt('center')} {center}: {opt('scale', 'range')} centres on the minimum (it maps"
            f" min to a and max to b of {opt('feature_range')}); drop {opt('center')}"
        )
    if feature_range is not None and scale != "range":
        raise UsageError(
            f"{opt('feature_range')} is the output range of {opt('scale', 'range')}; add"
            f" {opt('scale', 'range')} or drop {opt('feature_range')}"
        )
    if quantile_range is not None and scale != "iqr":
        raise UsageError(
            f"{opt('quantile_range')} sets the percentiles of {opt('scale', 'iqr')}; add"
            f" {opt('scale', 'iqr')} or drop {opt('quantile_range')}"
        )
    fr = _pair(feature_range, DEFAULT_FEATURE_RANGE, "feature_range")
    if not fr[0] < fr[1]:
        raise UsageError(f"{opt('feature_range')} a,b needs a < b, got {fr[0]:g},{fr[1]:g}")
    qr = _pair(quantile_range, DEFAULT_QUANTILE_RANGE, "quantile_range")
    if not 0.0 <= qr[0] < qr[1] <= 100.0:
        raise UsageError(
            f"{opt('quantile_range')} lo,hi are percents with 0 <= lo < hi <= 100,"
            f" got {qr[0]:g},{qr[1]:g}"
        )
    return Scaling(center or DEFAULT_CENTER[scale], scale, fr, qr)


def _pair(
    value: Sequence[float] | None, default: tuple[float, float], what: str
) -> tuple[float, float]:
    if value is None:
        return default
    try:
        a, b = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UsageError(f"{opt(what)} must be two numbers, got {value!r}") from None
    if not (math.isfinite(a) and math.isfinite(b)):
        raise UsageError(f"{opt(what)} must be two finite numbers, got {value!r}")
    return (a, b)


def params(s: Scaling) -> dict[str, Any]:
    """The `BatchNorm` constructor's parameters that give choice ``s``."""
    return {
        "center": None if s.scale == "range" else s.center,
        "scale": s.scale,
        "feature_range": s.feature_range if s.scale == "range" else None,
        "quantile_range": s.quantile_range if s.scale == "iqr" else None,
    }


def from_record(doc: dict[str, Any]) -> Scaling:
    """The choice a statistics file records (`Scaling.record`); default when absent."""
    scale = doc.get("scale", "std")
    return check_scaling(
        doc.get("center", "mean" if scale == "std" else None),
        scale,
        doc.get("feature_range"),
        doc.get("quantile_range"),
    )


@dataclass(frozen=True)
class Quantiles:
    """Quantiles ``probs`` of each column: ``values[i]`` is an array for ``probs[i]``
    (``(columns,)``, or ``(batches, columns)`` per batch; NaN where no value).
    ``exact`` False: a one-pass estimate whose ranks are off by at most
    ``rank_error`` times the column's count."""

    probs: tuple[float, ...]
    values: np.ndarray
    exact: bool = True
    rank_error: float = 0.0

    def of(self, p: float) -> np.ndarray:
        return self.values[self.probs.index(p)]

    def take(self, index: Sequence[int]) -> Quantiles:
        idx = np.asarray(index, np.int64)
        return Quantiles(self.probs, self.values[..., idx], self.exact, self.rank_error)


def build(
    s: Scaling,
    stats: Any,
    quantiles: Quantiles | None,
    eps: float,
    gamma: np.ndarray,
    beta: np.ndarray,
    columns: Sequence[str],
    what: str = "population",
) -> mp.Maps:
    """The maps of choice ``s`` from ``stats`` (``mean_hi``, ``mean_lo``, ``var``,
    ``min``, ``max`` arrays: a `fold.Population`, a `MomentsTable`, or running
    statistics with ``min``/``max`` absent) and the ``quantiles`` it needs."""
    if s.needs_quantiles and quantiles is None:
        raise UsageError(
            f"{s.describe()} needs quantiles, which this model has not computed; fit it with"
            " bnorm_cli.BatchNorm.fit or `bnorm fit`"
        )

    def get(name: str) -> np.ndarray:
        return np.asarray(getattr(stats, name) if isinstance(stats, Population) else stats[name])

    mean_hi, mean_lo = get("mean_hi"), get("mean_lo")
    zero = np.zeros_like(mean_hi)
    if s.center == "mean":
        c_hi, c_lo = mean_hi, mean_lo
    elif s.center == "median":
        assert quantiles is not None
        c_hi, c_lo = quantiles.of(0.5), zero
    elif s.center == "min":
        c_hi, c_lo = get("min"), zero
    else:
        c_hi, c_lo = zero, zero
    # an all-missing column (or batch) has no centre: 0 keeps its (absent) values finite
    c_hi = np.where(np.isnan(c_hi), 0.0, c_hi)
    if s.scale == "std":
        mp.check_finite_var(get("var"), columns, what)
        return mp.build(c_hi, c_lo, get("var"), eps, gamma, beta)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float64: refused below
        if s.scale == "none":
            spread = np.ones_like(mean_hi)
        elif s.scale == "iqr":
            assert quantiles is not None
            lo, hi = (quantiles.of(q / 100.0) for q in s.quantile_range)
            spread = hi - lo
        elif s.scale == "range":
            spread = get("max") - get("min")
        else:  # maxabs: the largest distance from the centre
            centre = c_hi + c_lo
            spread = np.fmax(get("max") - centre, centre - get("min"))
    # NaN (no value) is 1 below; an infinite spread is refused
    mp.check_finite_var(np.where(np.isnan(spread), 0.0, spread), columns, what, s.scale)
    spread = handle_zeros(spread)
    if s.scale == "range":
        a, b = s.feature_range
        scale = gamma * (b - a) / spread
        beta = beta + gamma * a
    else:
        scale = gamma / spread
    shape = np.broadcast_shapes(np.shape(c_hi), np.shape(scale), np.shape(beta))
    return mp.Maps(*(np.broadcast_to(a, shape) for a in (c_hi, c_lo, scale, beta)))


def handle_zeros(spread: np.ndarray) -> np.ndarray:
    """scikit-learn's rule: a spread of 0 (constant column) or none (no values) is 1."""
    return np.where((spread == 0.0) | np.isnan(spread), 1.0, spread)


def check_running(s: Scaling, why: str) -> None:
    """Running statistics (PyTorch's) exist for mean/std only: refuse the others."""
    if not s.has_running:
        raise UsageError(
            f"{why}: BatchNorm's running statistics are a mean and a variance, so they cannot"
            f" apply {s.describe()}; use {opt('center', 'mean')} {opt('scale', 'std')} (or"
            " none), or population/per-batch statistics"
        )


def batch_quantiles(
    frame: pl.DataFrame,
    columns: Sequence[str],
    rows: np.ndarray,
    probs: Sequence[float],
    inf_missing: bool,
) -> Quantiles:
    """Each batch's own quantiles, for normalize --mode batch: numpy's linear
    definition (the same bits as ``np.quantile`` of the batch's valid values;
    +/-inf are values unless ``inf_missing``). A batch is in memory, so these are
    exact; all batches of a chunk are sorted at once (no loop over batches)."""
    if not columns:
        return Quantiles(tuple(probs), np.empty((len(probs), len(rows), 0)))
    block = frame.select(pl.col(c).cast(pl.Float64).fill_null(np.nan) for c in columns).to_numpy()
    if inf_missing:
        block = np.where(np.isinf(block), np.nan, block)
    size, nb = int(rows.max(initial=1)), len(rows)
    padded = np.full((nb * size, len(columns)), np.nan)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]])
    at = (np.arange(nb) * size).repeat(rows) + (np.arange(block.shape[0]) - starts.repeat(rows))
    padded[at] = block
    cube = np.sort(padded.reshape(nb, size, len(columns)), axis=1)  # NaN last
    n = (~np.isnan(cube)).sum(axis=1)  # (batches, columns)
    out = np.full((len(probs), nb, len(columns)), np.nan)
    for i, p in enumerate(probs):
        virtual = (n - 1).astype(np.float64) * p  # numpy's "linear" virtual index
        lo = np.floor(virtual).astype(np.int64)
        hi = np.minimum(lo + 1, n - 1)
        t = virtual - lo
        a = np.take_along_axis(cube, np.clip(lo, 0, None)[:, None, :], axis=1)[:, 0, :]
        b = np.take_along_axis(cube, np.clip(hi, 0, None)[:, None, :], axis=1)[:, 0, :]
        out[i] = np.where(n > 0, lerp(a, b, t), np.nan)
    return Quantiles(tuple(probs), out)
