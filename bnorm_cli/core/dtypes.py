"""Types of the mapped columns: float64 or float32, or each column's own ("same").

Normalized values are floats: ``"same"`` keeps a Float32 column Float32 (every
other column becomes Float64). Mapped back (``inverse``), ``"same"`` restores
the type the column was fitted with: integers are rounded to the nearest
(half to even) and cast back, so ``Int32`` stays ``Int32``; a value that does
not fit that type is an error naming the column, not a silent null.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TypeAlias

import polars as pl

from .errors import DataError, UsageError, opt

#: One type for every mapped column, or one per column.
OutType: TypeAlias = type[pl.DataType] | pl.DataType | Mapping[str, pl.DataType]
#: What a caller asks for: a float type, "same", or None (the default).
Spec: TypeAlias = str | type[pl.DataType] | pl.DataType | None
SAME = "same"

_NUMERIC = {
    name: getattr(pl, name)
    for name in (
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float32",
        "Float64",
    )
}


def parse(name: str) -> pl.DataType | None:
    """A fitted dtype's name (``"Int32"``) as a polars type; None if not a plain number type."""
    t = _NUMERIC.get(name)
    return t() if t is not None else None


def resolve(
    spec: Spec | Mapping[str, pl.DataType],
    columns: Sequence[str],
    schema: Mapping[str, pl.DataType],
    fitted: Mapping[str, str],
    inverse: bool = False,
) -> dict[str, pl.DataType]:
    """Each column's output type. ``spec``: a float type, ``"same"``, or None (the
    default: Float64, and ``"same"`` when mapping back). ``schema``: the input's
    types; ``fitted``: the types the columns were fitted with (`BatchNorm.dtypes_`)."""
    if isinstance(spec, Mapping):  # resolved already
        return {c: spec[c] for c in columns}
    if spec is None:
        spec = SAME if inverse else pl.Float64
    if isinstance(spec, str):
        if spec != SAME:
            raise UsageError(f'{opt("dtype")} must be a polars float type or "same", got {spec!r}')
        out: dict[str, pl.DataType] = {}
        for c in columns:
            restored = parse(fitted.get(c, "")) if inverse else None
            if restored is not None:
                out[c] = restored
            elif c in schema and schema[c] == pl.Float32:
                out[c] = pl.Float32()
            else:
                out[c] = pl.Float64()
        return out
    t = spec() if isinstance(spec, type) else spec
    if not t.is_float():
        raise UsageError(f'{opt("dtype")} must be Float64, Float32 or "same", got {spec!r}')
    return dict.fromkeys(columns, t)


def target(dtype: OutType, name: str) -> pl.DataType:
    """The output type of column ``name``."""
    if isinstance(dtype, Mapping):
        return dtype[name]
    return dtype() if isinstance(dtype, type) else dtype


def cast(expr: pl.Expr, t: pl.DataType) -> pl.Expr:
    """Float values as type ``t``: integers rounded to the nearest first; NaN becomes null."""
    if t.is_integer():
        return expr.fill_nan(None).round(0).cast(t, strict=True)
    return expr.cast(t)


def check_cast(frame: pl.DataFrame, exprs: Sequence[pl.Expr], dtype: OutType) -> pl.DataFrame:
    """``frame.with_columns(exprs)``; a value an integer type cannot hold is one error."""
    try:
        return frame.with_columns(exprs)
    except pl.exceptions.InvalidOperationError:
        pass
    for e in exprs:
        name = e.meta.output_name()
        t = target(dtype, name)
        try:
            frame.select(e)
        except pl.exceptions.InvalidOperationError:
            raise DataError(
                f'column "{name}": a value mapped back does not fit its fitted type {t};'
                f" write floats with {opt('dtype', 'float64')}",
                column=name,
            ) from None
    raise AssertionError("unreachable: the cast failed for no column")  # pragma: no cover
