"""Independent plain-numpy reference for the formulas of design.md section 2.

Written from the formulas, not from the engine, and deliberately simple:
clarity over speed. Everything works on ONE column given as a 1-D float64
numpy array ``x`` in which NaN means "missing" (the caller converts nulls to
NaN). A batch size ``B`` cuts ``x`` into consecutive slices ``x[0:B]``,
``x[B:2B]``, ...; only the last slice may be shorter.

Formulas (per batch, over the ``n`` valid = non-NaN values only):

* ``mean = sum(x)/n``; ``var_biased = sum((x-mean)**2)/n``;
  ``var_unbiased = sum((x-mean)**2)/(n-1)`` (``None`` when ``n < 2``).
* per-batch normalization: ``y = (x - mean) * scale + beta`` with
  ``scale = gamma / sqrt(var_biased + eps)``.
* running statistics (PyTorch ``BatchNorm1d``): start ``rm = 0``, ``rv = 1``;
  ``rm = (1-f)*rm + f*mean``, ``rv = (1-f)*rv + f*var_unbiased`` where
  ``f = m`` for a numeric momentum and ``f = 1/k`` for ``"cumulative"``
  (``k`` = number of batches used so far for this column, 1 for the first).
* population statistics: exact mean and ddof=0 variance over all valid values.

Policies (choices the formulas alone do not settle):

* NaN is never a value: it is left out of every statistic and stays NaN in
  every output.
* A batch with fewer than 2 valid values (0 or 1) does NOT update the running
  statistics at all and does not count in the cumulative ``k``.
  ``num_batches`` still counts every batch (PyTorch's ``num_batches_tracked``).
* Per-batch normalization: a constant batch (including a batch with a single
  valid value) maps every valid value to exactly ``beta``; a batch with no
  valid value is all NaN.
* Online running normalization: each batch FIRST updates the running stats
  (per the policy above), THEN is normalized with the updated stats.
* ``normalize_with`` requires ``var + eps > 0`` (raises ``ValueError``).

Limits: ``batch_stats`` uses plain float64 two-pass sums, so it overflows
for |x| beyond ~1e150; ``population`` (exact ``Fraction`` arithmetic) is the
reference to use for extreme magnitudes.
"""

import math
from fractions import Fraction
from typing import Literal, TypedDict

import numpy as np
from numpy.typing import NDArray

FloatArray = NDArray[np.float64]
Momentum = float | Literal["cumulative"]


class BatchStats(TypedDict):
    n: int
    nulls: int
    mean: float | None
    m2: float | None
    var_biased: float | None
    var_unbiased: float | None
    min: float | None
    max: float | None


class Population(TypedDict):
    count: int
    null_count: int
    mean: float | None
    var: float | None
    std: float | None
    min: float | None
    max: float | None


class Running(TypedDict):
    running_mean: float
    running_var: float
    batches_used: int


def _as_column(x: FloatArray | list[float]) -> FloatArray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"expected a 1-D column, got shape {arr.shape}")
    return arr


def _check_batch_size(B: int) -> None:
    if int(B) != B or B < 1:
        raise ValueError(f"batch size must be a positive integer, got {B!r}")


def batches(x: FloatArray | list[float], B: int) -> list[FloatArray]:
    """Consecutive slices x[0:B], x[B:2B], ...; the last may be shorter."""
    _check_batch_size(B)
    arr = _as_column(x)
    return [arr[i : i + B] for i in range(0, len(arr), B)]


def num_batches(x: FloatArray | list[float], B: int) -> int:
    """Total number of batches (PyTorch's num_batches_tracked)."""
    _check_batch_size(B)
    return -(-len(_as_column(x)) // B)


def batch_stats(xb: FloatArray | list[float]) -> BatchStats:
    """Statistics of one batch over its valid (non-NaN) values, two-pass."""
    arr = _as_column(xb)
    valid = arr[~np.isnan(arr)]
    n = int(valid.size)
    nulls = int(arr.size - n)
    if n == 0:
        return BatchStats(
            n=0,
            nulls=nulls,
            mean=None,
            m2=None,
            var_biased=None,
            var_unbiased=None,
            min=None,
            max=None,
        )
    mean = float(np.mean(valid))
    dev = valid - mean
    m2 = float(np.sum(dev * dev))
    return BatchStats(
        n=n,
        nulls=nulls,
        mean=mean,
        m2=m2,
        var_biased=m2 / n,
        var_unbiased=m2 / (n - 1) if n >= 2 else None,
        min=float(np.min(valid)),
        max=float(np.max(valid)),
    )


def _fraction_to_float(q: Fraction) -> float:
    try:
        return float(q)
    except OverflowError:
        return math.inf if q > 0 else -math.inf


def _fraction_sqrt(q: Fraction) -> float:
    """sqrt of a non-negative Fraction, accurate to well under 1 ulp."""
    if q == 0:
        return 0.0
    p, d = q.numerator, q.denominator
    # sqrt(p/d) = isqrt(p * 4**k // d) / 2**k with k chosen for ~120 bits.
    k = max(0, 120 - (p.bit_length() - d.bit_length()) // 2)
    root = math.isqrt((p << (2 * k)) // d)
    return _fraction_to_float(Fraction(root, 1 << k))


def population(x: FloatArray | list[float]) -> Population:
    """Exact population statistics (ddof=0) with fractions.Fraction.

    Every float is an exact Fraction, so ``(S2 - S1**2/n)/n`` is exact here
    (no cancellation: this is rational arithmetic, not floating point). The
    mean and variance are rounded to float once, at the end.
    """
    arr = _as_column(x)
    valid = arr[~np.isnan(arr)]
    n = int(valid.size)
    nulls = int(arr.size - n)
    if n == 0:
        return Population(
            count=0, null_count=nulls, mean=None, var=None, std=None, min=None, max=None
        )
    if not np.all(np.isfinite(valid)):
        raise ValueError("population() needs finite values (or NaN for missing)")
    s1 = Fraction(0)
    s2 = Fraction(0)
    for v in valid.tolist():
        q = Fraction(v)
        s1 += q
        s2 += q * q
    mean = s1 / n
    var = (s2 - s1 * s1 / n) / n
    return Population(
        count=n,
        null_count=nulls,
        mean=_fraction_to_float(mean),
        var=_fraction_to_float(var),
        std=_fraction_sqrt(var),
        min=float(np.min(valid)),
        max=float(np.max(valid)),
    )


def population_fsum(x: FloatArray | list[float]) -> Population:
    """Population statistics with math.fsum on data shifted by its median.

    For inputs too large for ``population``. Each shifted value and each
    squared deviation is rounded once; the sums themselves are exact.
    """
    arr = _as_column(x)
    valid = arr[~np.isnan(arr)]
    n = int(valid.size)
    nulls = int(arr.size - n)
    if n == 0:
        return Population(
            count=0, null_count=nulls, mean=None, var=None, std=None, min=None, max=None
        )
    shift = float(np.median(valid))
    d = valid - shift
    dmean = math.fsum(d.tolist()) / n
    dev = d - dmean
    # divide by a power of two (exact) so the squares cannot overflow
    peak = float(np.max(np.abs(dev)))
    p2 = math.ldexp(1.0, math.frexp(peak)[1]) if peak > 0 else 1.0
    unit = dev / p2
    var_unit = math.fsum((unit * unit).tolist()) / n
    with np.errstate(over="ignore"):
        var = float(np.float64(var_unit) * p2 * p2)
    return Population(
        count=n,
        null_count=nulls,
        mean=shift + dmean,
        var=var,
        std=math.sqrt(var_unit) * p2,
        min=float(np.min(valid)),
        max=float(np.max(valid)),
    )


def _factor(momentum: Momentum, k: int) -> float:
    if momentum == "cumulative":
        return 1.0 / k
    if isinstance(momentum, str):
        raise ValueError(f"momentum must be a number or 'cumulative', got {momentum!r}")
    return float(momentum)


def _running_steps(
    x: FloatArray | list[float], B: int, momentum: Momentum
) -> list[tuple[float, float, int]]:
    """(rm, rv, k) after each batch, k = batches used so far."""
    rm, rv, k = 0.0, 1.0, 0
    out: list[tuple[float, float, int]] = []
    for xb in batches(x, B):
        st = batch_stats(xb)
        if st["n"] >= 2:
            mean, unbiased = st["mean"], st["var_unbiased"]
            assert mean is not None and unbiased is not None
            k += 1
            f = _factor(momentum, k)
            rm = (1.0 - f) * rm + f * mean
            rv = (1.0 - f) * rv + f * unbiased
        out.append((rm, rv, k))
    return out


def running(x: FloatArray | list[float], B: int, momentum: Momentum) -> Running:
    """Running mean/var after all batches (PyTorch BatchNorm1d semantics)."""
    _factor(momentum, 1)  # validate even for an empty column
    steps = _running_steps(x, B, momentum)
    rm, rv, k = steps[-1] if steps else (0.0, 1.0, 0)
    return Running(running_mean=rm, running_var=rv, batches_used=k)


def running_trace(
    x: FloatArray | list[float], B: int, momentum: Momentum
) -> list[tuple[float, float]]:
    """(running_mean, running_var) after each batch; unchanged when skipped."""
    _factor(momentum, 1)
    return [(rm, rv) for rm, rv, _ in _running_steps(x, B, momentum)]


def normalize_with(
    x: FloatArray | list[float],
    mean: float,
    var: float,
    eps: float = 1e-5,
    gamma: float = 1.0,
    beta: float = 0.0,
) -> FloatArray:
    """y = (x - mean) * scale + beta, scale = gamma / sqrt(var + eps)."""
    arr = _as_column(x)
    if not var + eps > 0:
        raise ValueError(f"var + eps must be > 0, got var={var!r}, eps={eps!r}")
    scale = gamma / math.sqrt(var + eps)
    return (arr - mean) * scale + beta


def normalize_batch(
    x: FloatArray | list[float], B: int, eps: float = 1e-5, gamma: float = 1.0, beta: float = 0.0
) -> FloatArray:
    """BN training mode: each batch normalized with its own mean and biased var."""
    parts: list[FloatArray] = []
    for xb in batches(x, B):
        st = batch_stats(xb)
        mean, vb = st["mean"], st["var_biased"]
        if mean is None or vb is None:  # no valid value: all NaN already
            parts.append(xb.copy())
        elif st["min"] == st["max"]:  # constant (or single value): exactly beta
            parts.append(np.where(np.isnan(xb), np.nan, beta))
        else:
            parts.append(normalize_with(xb, mean, vb, eps, gamma, beta))
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)


def normalize_running(
    x: FloatArray | list[float],
    B: int,
    momentum: Momentum = 0.1,
    eps: float = 1e-5,
    gamma: float = 1.0,
    beta: float = 0.0,
) -> FloatArray:
    """BN online mode: update running stats with the batch, then apply them."""
    _factor(momentum, 1)
    parts = [
        normalize_with(xb, rm, rv, eps, gamma, beta)
        for xb, (rm, rv, _) in zip(batches(x, B), _running_steps(x, B, momentum), strict=True)
    ]
    return np.concatenate(parts) if parts else np.empty(0, dtype=np.float64)
