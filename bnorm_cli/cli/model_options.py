"""The statistics options of fit and normalize, parsed into a `BatchNorm`."""

from __future__ import annotations

from typing import Any

import polars as pl

from ..core.errors import UsageError
from ..core.model import BatchNorm
from .options import CenterOpt, DType, InfOpt, ModeOpt, ScaleOpt, names, pair, per_column


def engine_dtype(d: DType | None) -> str | type[pl.DataType] | None:
    """--dtype as the engines take it (None: float64, and the fitted types for --inverse)."""
    if d is None:
        return None
    return {DType.float32: pl.Float32, DType.float64: pl.Float64}.get(d, "same")


def build_model(
    batch_size: int,
    momentum: str,
    eps: float,
    columns: list[str] | None,
    exclude: list[str] | None,
    gamma: list[str] | None,
    beta: list[str] | None,
    inf: InfOpt,
    sketch: bool = True,
    weight: str | None = None,
    scaling: tuple[CenterOpt | None, ScaleOpt, str | None, str | None] = (
        None,
        ScaleOpt.std,
        None,
        None,
    ),
    renorm: dict[str, Any] | None = None,
) -> BatchNorm:
    g = per_column(gamma, "--gamma")
    b = per_column(beta, "--beta")
    center, scale, feature_range, quantile_range = scaling
    return BatchNorm(
        batch_size=batch_size,
        momentum=momentum,
        eps=eps,
        columns=names(columns),
        exclude=names(exclude) or [],
        gamma=1.0 if g is None else g,
        beta=0.0 if b is None else b,
        inf=inf.value,  # type: ignore[arg-type]
        sketch=sketch,
        weight=weight,
        center=None if center is None else center.value,
        scale=scale.value,
        feature_range=pair(feature_range, "--range"),
        quantile_range=pair(quantile_range, "--quantile-range"),
        renorm=renorm,
    )


def renorm_options(mode: ModeOpt, **given: float | int | None) -> dict[str, Any]:
    """--mode renorm's options that were given (the others keep their defaults); any of
    them with another mode is a usage error."""
    named = {k: v for k, v in given.items() if v is not None}
    if named and mode is not ModeOpt.renorm:
        flag = "--renorm-momentum" if "momentum" in named else f"--{next(iter(named))}"
        raise UsageError(f"{flag} applies to --mode renorm only (this is --mode {mode.value})")
    return named


def renorm_parameters(model: BatchNorm, mode: ModeOpt) -> tuple[tuple[str, str], ...]:
    """--mode renorm's settings, for the HTML report."""
    if mode is not ModeOpt.renorm:
        return ()
    o = model.renorm
    return (
        ("renorm", f"momentum {o.momentum:g}, rmax {o.rmax:g}, dmax {o.dmax:g}"),
        ("schedule", f"warmup {o.warmup:,} batches, ramp {o.ramp:,} batches"),
    )
