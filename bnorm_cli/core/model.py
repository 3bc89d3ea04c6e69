"""`BatchNorm`: the Python API, and the engine behind every CLI command.

Modelled on scikit-learn's StandardScaler: ``fit`` = reset + ``partial_fit``
over batches; learned state ends in ``_``. One call to ``partial_fit`` is one
Batch Normalization mini-batch. Data in and out are polars DataFrames, or
pyarrow Tables/RecordBatches (then the results are pyarrow Tables); no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Literal, TypeAlias, overload

import numpy as np
import polars as pl
import pyarrow as pa

from . import moments as mom
from .errors import DataError, UsageError, did_you_mean
from .maps import AffineMap, Momentum, Running, apply_maps, batch_map, population_map, running_map

#: Data the API accepts: polars frames or pyarrow tables / record batches.
Data: TypeAlias = pl.DataFrame | pa.Table | pa.RecordBatch
Use = Literal["population", "running"]
Mode = Literal["batch", "running"]
InfPolicy = Literal["error", "missing"]
DEFAULT_BATCH_SIZE = 65536


def is_numeric(dtype: pl.DataType) -> bool:
    """Columns bnorm normalizes by default: integers and floats (not booleans)."""
    return dtype.is_numeric() and not isinstance(dtype, pl.Decimal)


def resolve_per_column(
    spec: float | Mapping[str, float], columns: Sequence[str], what: str, default: float
) -> dict[str, float]:
    """Expand a number (for every column) or a ``{column: value}`` mapping.

    A mapping may hold the key ``"*"`` for the value of the unnamed columns.
    """
    if not isinstance(spec, Mapping):
        return dict.fromkeys(columns, float(spec))
    fallback = float(spec.get("*", default))
    for name in spec:
        if name != "*" and name not in columns:
            raise UsageError(
                f'--{what}: "{name}" is not a normalized column{did_you_mean(name, columns)}'
            )
    return {c: float(spec.get(c, fallback)) for c in columns}


class BatchNorm:
    """Batch Normalization of tabular data, streamed in mini-batches.

    Parameters mirror the CLI options: ``batch_size`` rows per batch,
    ``momentum`` (a number in [0, 1], or ``None``/``"cumulative"`` for the
    equal-weight average), ``eps``, ``columns``/``exclude`` (default: every
    numeric column), ``gamma``/``beta`` (a number, or ``{column: value}``),
    and ``inf`` ("error": +/-inf stops the run; "missing": treated like NaN).
    """

    def __init__(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        momentum: float | str | None = 0.1,
        eps: float = 1e-5,
        columns: Sequence[str] | None = None,
        exclude: Sequence[str] = (),
        gamma: float | Mapping[str, float] = 1.0,
        beta: float | Mapping[str, float] = 0.0,
        inf: InfPolicy = "error",
    ) -> None:
        self.batch_size = check_batch_size(batch_size)
        self.momentum: Momentum = check_momentum(momentum)
        self.eps = check_eps(eps)
        self.columns = list(columns) if columns is not None else None
        self.exclude = list(exclude)
        self.gamma = gamma
        self.beta = beta
        self.inf: InfPolicy = inf
        self._reset()

    # -- learned state ---------------------------------------------------------
    def _reset(self) -> None:
        self.columns_: list[str] = []
        self.dtypes_: dict[str, str] = {}
        self.input_schema_: dict[str, str] = {}
        self.population_: dict[str, mom.Moments] = {}
        self.running_: dict[str, Running] = {}
        self.gamma_: dict[str, float] = {}
        self.beta_: dict[str, float] = {}
        self.rows_ = 0
        self.num_batches_tracked_ = 0
        self.started_ = False
        self.last_moments_: dict[str, mom.Moments] = {}
        self._shifts: dict[str, float] = {}  # per column: a recent batch mean (moments.recentre)
        self.warnings_: list[str] = []

    @property
    def is_fitted(self) -> bool:
        return self.started_

    def select_columns(self, schema: pl.Schema) -> list[str]:
        """The columns to normalize in an input with this schema."""
        names = list(schema.names())
        for name in [*(self.columns or []), *self.exclude]:
            if name not in schema:
                flag = "--columns" if name in (self.columns or []) else "--exclude"
                raise UsageError(
                    f'{flag}: no column "{name}" in the input{did_you_mean(name, names)}'
                )
        if self.columns is not None:
            for name in self.columns:
                if name not in self.exclude and not is_numeric(schema[name]):
                    raise UsageError(
                        f'--columns: column "{name}" is {schema[name]}, not numeric;'
                        " only numeric columns can be normalized"
                    )
            chosen = [c for c in names if c in self.columns]
        else:
            chosen = [c for c in names if is_numeric(schema[c])]
        return [c for c in chosen if c not in self.exclude]

    def start(self, schema: pl.Schema) -> None:
        """Reset and prepare for batches with this schema (done by ``fit``)."""
        self._reset()
        self.started_ = True
        self.columns_ = self.select_columns(schema)
        self.input_schema_ = {name: str(dtype) for name, dtype in schema.items()}
        self.dtypes_ = {c: self.input_schema_[c] for c in self.columns_}
        self.population_ = {c: mom.Moments() for c in self.columns_}
        self.running_ = {c: Running() for c in self.columns_}
        self.gamma_ = resolve_per_column(self.gamma, self.columns_, "gamma", 1.0)
        self.beta_ = resolve_per_column(self.beta, self.columns_, "beta", 0.0)

    # -- fitting ---------------------------------------------------------------
    def partial_fit(self, batch: pl.DataFrame, rows: int | None = None) -> dict[str, mom.Moments]:
        """Account for one mini-batch; return its per-column moments.

        ``rows`` is the batch's row count when ``batch`` holds only the columns to
        normalize (possibly none); by default ``batch.height``.
        """
        if not self.started_:
            self.start(batch.schema)
        else:
            self.check_schema(batch.schema)
        moments = self.batch_moments(batch, first_row=self.rows_)
        for c, m in moments.items():
            self.population_[c] = mom.merge(self.population_[c], m)
            self.running_[c] = self.running_[c].update(m, self.momentum)
        self.rows_ += batch.height if rows is None else rows
        self.num_batches_tracked_ += 1
        return moments

    def fit(self, data: Data | Iterable[Data]) -> BatchNorm:
        """Reset, then ``partial_fit`` every batch of ``batch_size`` rows."""
        self._reset()
        for batch in self.iter_batches(data):
            self.partial_fit(batch)
        return self

    def iter_batches(self, data: Data | Iterable[Data]) -> Iterator[pl.DataFrame]:
        """Batches of exactly ``batch_size`` rows (the last may be shorter)."""
        from .batching import exact_batches

        frames = [data] if isinstance(data, pl.DataFrame | pa.Table | pa.RecordBatch) else data
        pieces = (b for f in frames for b in _arrow(f).to_batches())
        for batch in exact_batches(pieces, self.batch_size):
            frame = pl.from_arrow(batch)
            assert isinstance(frame, pl.DataFrame)
            yield frame

    def batch_moments(self, batch: pl.DataFrame, first_row: int = 0) -> dict[str, mom.Moments]:
        """Per-column moments of one batch (valid values only; see moments.py)."""
        fast = mom.frame_moments(batch, self.columns_, self._shifts)
        out: dict[str, mom.Moments] = {}
        for c in self.columns_:
            quick = fast[c]
            if quick is not None:
                out[c] = quick
                if quick.n and mom.recentre(self._shifts.get(c), quick):
                    self._shifts[c] = quick.mean_hi  # later batches sum around this mean
                continue
            values = batch.get_column(c).cast(pl.Float64).to_numpy()
            nan = np.isnan(values)
            missing = int(nan.sum())
            valid = values[~nan] if missing else values
            m = mom.from_values(valid, missing)
            if m.n and not (math.isfinite(m.min) and math.isfinite(m.max)):
                m = self._handle_inf(c, values, first_row, missing)
            out[c] = m
            if m.n and math.isfinite(m.mean_hi):
                self._shifts[c] = m.mean_hi
        self._check_integer_range(batch, out)
        return out

    def _check_integer_range(self, batch: pl.DataFrame, moments: dict[str, mom.Moments]) -> None:
        """Integers beyond 2^53 are rounded to float64 (the policy); say so once."""
        for c, m in moments.items():
            if m.n and max(-m.min, m.max) > 2.0**53 and batch.schema[c].is_integer():
                msg = (
                    f'column "{c}": integers beyond 2^53 are rounded to the nearest float64'
                    " before normalizing; exclude it with -x if exact integers matter"
                )
                if msg not in self.warnings_:
                    self.warnings_.append(msg)

    def _handle_inf(
        self, column: str, values: np.ndarray, first_row: int, missing: int
    ) -> mom.Moments:
        inf = np.isinf(values)
        if self.inf == "error":
            row = first_row + int(np.argmax(inf)) + 1
            raise DataError(
                f'column "{column}", row {row}: value {values[inf][0]}; infinite values have no'
                " mean or variance (use --inf missing to treat them like NaN)"
            )
        keep = ~(inf | np.isnan(values))
        return mom.from_values(values[keep], missing + int(inf.sum()))

    # -- transforming ----------------------------------------------------------
    def check_schema(self, schema: pl.Schema) -> None:
        """Fitted columns must be present and numeric in ``schema``."""
        for c in self.columns_:
            if c not in schema:
                raise DataError(
                    f'column "{c}" was fitted but is missing from the input'
                    f"{did_you_mean(c, schema.names())}; refit, or pass matching data"
                )
            if not is_numeric(schema[c]):
                raise DataError(
                    f'column "{c}" was fitted as {self.dtypes_.get(c, "numeric")} but is now'
                    f" {schema[c]}; check the input or refit"
                )

    def maps(self, use: Use = "population") -> dict[str, AffineMap]:
        """The inference-mode affine map of each column."""
        self._require_fitted()
        if use == "running":
            return {
                c: running_map(self.running_[c], self.eps, self.gamma_[c], self.beta_[c])
                for c in self.columns_
            }
        return {
            c: population_map(self.population_[c], self.eps, self.gamma_[c], self.beta_[c])
            for c in self.columns_
        }

    @overload
    def transform(
        self, data: pl.DataFrame, use: Use = ..., dtype: type[pl.DataType] = ...
    ) -> pl.DataFrame: ...
    @overload
    def transform(
        self, data: pa.Table | pa.RecordBatch, use: Use = ..., dtype: type[pl.DataType] = ...
    ) -> pa.Table: ...
    def transform(
        self, data: Data, use: Use = "population", dtype: type[pl.DataType] = pl.Float64
    ) -> pl.DataFrame | pa.Table:
        """Normalize with the fitted statistics (BN inference mode)."""
        self._require_fitted()
        frame = _polars(data)
        self.check_schema(frame.schema)
        return _like(data, apply_maps(frame, self.maps(use), dtype))

    @overload
    def inverse_transform(
        self, data: pl.DataFrame, use: Use = ..., dtype: type[pl.DataType] = ...
    ) -> pl.DataFrame: ...
    @overload
    def inverse_transform(
        self, data: pa.Table | pa.RecordBatch, use: Use = ..., dtype: type[pl.DataType] = ...
    ) -> pa.Table: ...
    def inverse_transform(
        self, data: Data, use: Use = "population", dtype: type[pl.DataType] = pl.Float64
    ) -> pl.DataFrame | pa.Table:
        """Map normalized data back to the original units."""
        self._require_fitted()
        frame = _polars(data)
        self.check_schema(frame.schema)
        maps = self.maps(use)
        for c, m in maps.items():
            if m.scale == 0.0:
                raise DataError(f'column "{c}": gamma is 0, so the map cannot be inverted')
        return _like(data, apply_maps(frame, maps, dtype, inverse=True))

    def train_step(
        self,
        batch: pl.DataFrame,
        mode: Mode = "batch",
        dtype: type[pl.DataType] = pl.Float64,
        rows: int | None = None,
    ) -> pl.DataFrame:
        """One BN training-mode step: account for the batch, then normalize it.

        ``batch``: with the batch's own statistics. ``running``: with the running
        statistics just updated by this batch.
        """
        moments = self.partial_fit(batch, rows)
        self.last_moments_ = moments
        if mode == "running":
            maps = self.maps("running")
        else:
            maps = {
                c: batch_map(m, self.eps, self.gamma_[c], self.beta_[c]) for c, m in moments.items()
            }
        return apply_maps(batch, maps, dtype)

    def _require_fitted(self) -> None:
        if not self.is_fitted:
            raise UsageError("this BatchNorm is not fitted yet; call fit() or load() first")


def _arrow(data: Data) -> pa.Table:
    if isinstance(data, pl.DataFrame):
        return data.to_arrow()
    return data if isinstance(data, pa.Table) else pa.Table.from_batches([data])


def _polars(data: Data) -> pl.DataFrame:
    if isinstance(data, pl.DataFrame):
        return data
    frame = pl.from_arrow(data)
    assert isinstance(frame, pl.DataFrame)
    return frame


def _like(data: Data, out: pl.DataFrame) -> pl.DataFrame | pa.Table:
    """Polars in, polars out; pyarrow in, a pyarrow Table out."""
    return out if isinstance(data, pl.DataFrame) else out.to_arrow()


def check_batch_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise UsageError(f"--batch-size must be a positive integer, got {value!r}")
    return value


def check_eps(value: float) -> float:
    if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
        raise UsageError(f"--eps must be a finite number >= 0, got {value!r}")
    return float(value)


def check_momentum(value: float | str | None) -> Momentum:
    """A number in [0, 1], or ``None``/``"cumulative"`` (PyTorch's momentum=None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "cumulative"):
        return None
    try:
        m = float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f'--momentum must be a number in [0, 1] or "cumulative", got {value!r}'
        ) from None
    if not 0.0 <= m <= 1.0:
        raise UsageError(f'--momentum must be a number in [0, 1] or "cumulative", got {value!r}')
    return m
