"""`BatchNorm`: the Python API's model, and the core behind every engine.

Modelled on scikit-learn's StandardScaler: ``fit`` = reset + ``partial_fit``
over batches; learned state ends in ``_``. One call to ``partial_fit`` is one
Batch Normalization mini-batch. Data in and out are polars or pandas DataFrames,
or pyarrow Tables/RecordBatches (results are of the kind given: polars, pandas
with the input's index, or a pyarrow Table); no I/O
(saving and loading are `bnorm_cli.api`'s).

Every option is validated once, here, in the constructor (and in `adjusted`,
which makes a changed copy): the CLI only translates the errors.

The learned state is one structure, `FitState` (what the statistics file
serializes): the columns, their gamma and beta, and a `fold.Fold` holding the
population and running statistics as arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, overload

import numpy as np
import polars as pl
import pyarrow as pa

from . import diagnostics, dtypes
from . import maps as mp
from . import renorm as rn
from . import scalers as sc
from .diagnostics import Trend
from .dtypes import Spec
from .errors import DataError, StatsFileError, UsageError, did_you_mean, opt, phrase
from .fold import Fold, Momentum, Population, Running, RunningState, merge_folds
from .frames import as_arrow, as_polars, is_frame, like, to_polars
from .moments import Moments, MomentsTable, check_weights, table_moments
from .scalers import Quantiles, Scaling
from .sketch import Summary

if TYPE_CHECKING:  # per-key statistics: core.groups is loaded by the --by paths only
    from .groups import GroupFold

#: Data the API accepts: polars frames or pyarrow tables / record batches; pandas
#: DataFrames too (not named here: pandas is optional; see `frames.is_frame`).
Data: TypeAlias = pl.DataFrame | pa.Table | pa.RecordBatch
Use = Literal["population", "running"]
Mode = Literal["batch", "running", "renorm"]
InfPolicy = Literal["error", "missing"]
DEFAULT_BATCH_SIZE = 65536
#: Rows per chunk when the model cuts data itself: many small batches at once.
CHUNK_ROWS = 1 << 16


def is_numeric(dtype: pl.DataType) -> bool:
    """Columns bnorm normalizes by default: integers and floats (not booleans)."""
    return dtype.is_numeric() and not isinstance(dtype, pl.Decimal)


def chunk_rows(batch_size: int) -> int:
    """Rows per chunk of whole batches (at least one batch, about `CHUNK_ROWS`)."""
    return batch_size * max(1, CHUNK_ROWS // batch_size)


@dataclass
class FitState:
    """What a fit learned (and what the statistics file holds)."""

    columns: list[str]
    dtypes: dict[str, str]
    input_schema: dict[str, str]
    gamma: np.ndarray
    beta: np.ndarray
    fold: Fold
    warnings: list[str] = field(default_factory=list)
    trend: Trend | None = None  # what the warnings need of the pass (None: loaded from a file)
    quantiles: Quantiles | None = None  # what a median/iqr choice needs (`scalers`)
    #: per-key statistics (``--by``, `groups.GroupFold`); None for a global fit
    groups: GroupFold | None = None
    #: batch renormalization's moving statistics (None: the running statistics are
    #: PyTorch's); the fold's running statistics are then derived from them
    moving: rn.Moving | None = None
    #: statistics fitted elsewhere (`bnorm import`): ``{"from", "file", "statistics"}``,
    #: ``statistics`` the only kind held ("population" or "running"); counts it
    #: does not know are `fold.UNKNOWN`
    imported: dict[str, str] | None = None

    @property
    def population(self) -> Population:
        return self.fold.population

    @property
    def running(self) -> RunningState:
        return self.fold.running


class BatchNorm:
    """Batch Normalization of tabular data, streamed in mini-batches.

    Parameters mirror the CLI options: ``batch_size`` rows per batch,
    ``momentum`` (a number in [0, 1], or ``None``/``"cumulative"`` for the
    equal-weight average), ``eps``, ``columns``/``exclude`` (default: every
    numeric column), ``gamma``/``beta`` (a number, or ``{column: value}`` with
    ``"*"`` for the others), and ``inf`` ("error": +/-inf stops the run;
    "missing": treated like NaN). ``sketch`` (default on): also record each
    column's distribution summary (`sketch`), what ``bnorm drift`` compares with.
    ``weight``: the name of a column of per-row weights (scikit-learn's
    ``sample_weight`` as a column, so it streams with the rows: frequency weights,
    never normalized itself); the statistics are then weighted (`moments`).

    ``center`` ("mean", "median", "none"; default: the scale's own) and
    ``scale`` ("std", "iqr", "range", "maxabs", "none") choose how the map is
    filled (`scalers`): ``scale="range"`` maps min to ``feature_range[0]`` and
    max to ``feature_range[1]`` (default (0, 1)); ``scale="iqr"`` divides by the
    spread between the ``quantile_range`` percentiles (default (25, 75)).
    ``renorm``: the options of ``mode="renorm"`` (`renorm.Renorm`, or a mapping of
    its fields: momentum, rmax, dmax, warmup, ramp).
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
        sketch: bool = True,
        weight: str | None = None,
        center: str | None = None,
        scale: str = "std",
        feature_range: tuple[float, float] | None = None,
        quantile_range: tuple[float, float] | None = None,
        renorm: rn.Renorm | Mapping[str, object] | None = None,
    ) -> None:
        self.sketch = bool(sketch)
        if weight is not None and (not isinstance(weight, str) or not weight):
            raise UsageError(f"{opt('weight')} must be a column name, got {weight!r}")
        self.weight = weight
        self.scaling: Scaling = sc.check_scaling(center, scale, feature_range, quantile_range)
        self.center, self.scale = center, scale
        self.feature_range, self.quantile_range = feature_range, quantile_range
        if weight is not None and self.scaling.needs_quantiles:
            raise UsageError(
                f"{opt('weight')}: weighted quantiles (a weighted median or IQR) are not"
                f" supported; drop {opt('weight')}, or centre on the mean with a std, range"
                " or maxabs scale"
            )
        self.renorm = check_renorm(renorm)
        self.batch_size = check_batch_size(batch_size)
        self.momentum: Momentum = check_momentum(momentum)
        self.eps = check_eps(eps)
        self.columns = _names(columns, opt("columns")) if columns is not None else None
        self.exclude = _names(exclude, opt("exclude"))
        self.gamma = check_per_column(gamma, "gamma")
        self.beta = check_per_column(beta, "beta")
        self.inf: InfPolicy = check_inf(inf)
        self.state_: FitState | None = None
        self._last_table: MomentsTable | None = None
        #: the corrections of the last batches renormalized (`renorm.Trace`)
        self.last_renorm_: rn.Trace | None = None
        self.last_moments_: dict[str, Moments] = {}
        #: how the input's text was read (informational; set and used by the CLI)
        self.reading_: dict[str, object] = {}
        self._views: dict[str, tuple[tuple[object, ...], dict]] = {}  # type: ignore[type-arg]

    # -- learned state, as views -------------------------------------------------
    @property
    def is_fitted(self) -> bool:
        return self.state_ is not None

    started_ = is_fitted

    def _state(self) -> FitState:
        if self.state_ is None:
            raise UsageError("this BatchNorm is not fitted yet; call fit() or load() first")
        return self.state_

    @property
    def columns_(self) -> list[str]:
        return list(self.state_.columns) if self.state_ else []

    @property
    def dtypes_(self) -> dict[str, str]:
        return dict(self.state_.dtypes) if self.state_ else {}

    @property
    def input_schema_(self) -> dict[str, str]:
        return dict(self.state_.input_schema) if self.state_ else {}

    def _view(self, name: str) -> dict:  # type: ignore[type-arg]
        """A per-column view of the state, built once per state of the fold."""
        s = self.state_
        if s is None:
            return {}
        key = (name, id(s), s.fold.batches, s.fold.rows)
        cached = self._views.get(name)
        if cached is None or cached[0] != key:
            cols = s.columns
            if name == "population":
                pop = s.population
                view: dict = {c: pop.at(j) for j, c in enumerate(cols)}  # type: ignore[type-arg]
            elif name == "running":
                run = s.running
                view = {c: run.at(j) for j, c in enumerate(cols)}
            else:
                values = s.gamma if name == "gamma" else s.beta
                view = {c: float(v) for c, v in zip(cols, values, strict=True)}
            cached = (key, view)
            self._views[name] = cached
        return dict(cached[1])

    @property
    def population_(self) -> dict[str, Moments]:
        return self._view("population")

    @property
    def summary_(self) -> Summary | None:
        """The distribution summary of the fitted columns (None: not recorded)."""
        return self.state_.fold.summary if self.state_ else None

    @property
    def running_(self) -> dict[str, Running]:
        return self._view("running")

    @property
    def gamma_(self) -> dict[str, float]:
        return self._view("gamma")

    @property
    def beta_(self) -> dict[str, float]:
        return self._view("beta")

    @property
    def needed_(self) -> list[str]:
        """The columns a pass reads: the normalized ones, and the weight column."""
        cols = self.columns_
        return [*cols, self.weight] if self.weight is not None else cols

    @property
    def imported_(self) -> dict[str, str] | None:
        """Where statistics fitted elsewhere came from (`FitState.imported`), or None."""
        s = self.state_
        return dict(s.imported) if s is not None and s.imported is not None else None

    @property
    def rows_(self) -> int:
        return self.state_.fold.rows if self.state_ else 0

    @property
    def segments_(self) -> list[int]:
        """Rows of each run of batches (more than one after merging onto a short batch)."""
        return list(self.state_.fold.segments) if self.state_ else []

    @property
    def num_batches_tracked_(self) -> int:
        return self.state_.fold.batches if self.state_ else 0

    @property
    def warnings_(self) -> list[str]:
        """What the pass noticed (e.g. integers beyond 2^53), options as parameters."""
        return [phrase(w) for w in self.state_.warnings] if self.state_ else []

    def noted(self, cli: bool = False) -> list[str]:
        """`warnings_`, with options as command-line flags when ``cli``."""
        return [phrase(w, cli) for w in self.state_.warnings] if self.state_ else []

    # -- starting ----------------------------------------------------------------
    def select_columns(self, schema: pl.Schema) -> list[str]:
        """The columns to normalize in an input with this schema."""
        names = list(schema.names())
        w = self.weight
        for name in [*(self.columns or []), *self.exclude]:
            if name not in schema:
                flag = opt("columns" if name in (self.columns or []) else "exclude")
                raise UsageError(
                    f'{flag}: no column "{name}" in the input{did_you_mean(name, names)}'
                )
        if self.columns is not None:
            for name in self.columns:
                if name not in self.exclude and not is_numeric(schema[name]):
                    raise UsageError(
                        f'{opt("columns")}: column "{name}" is {schema[name]}, not numeric;'
                        " only numeric columns can be normalized"
                    )
            chosen = [c for c in names if c in self.columns]
        else:
            chosen = [c for c in names if is_numeric(schema[c])]
        return [c for c in chosen if c not in self.exclude and c != w]

    def start(self, schema: pl.Schema) -> None:
        """Reset and prepare for batches with this schema (done by ``fit``)."""
        w = self.weight
        if w is not None:
            if w not in schema:
                raise UsageError(
                    f'{opt("weight")}: no column "{w}" in the input'
                    f"{did_you_mean(w, list(schema.names()))}"
                )
            if w in (self.columns or []):
                raise UsageError(
                    f'{opt("columns")}: "{w}" is the weight column ({opt("weight")}), which is'
                    " never normalized; leave it out of the columns"
                )
        columns = self.select_columns(schema)
        gamma = resolve_per_column(self.gamma, columns, "gamma", 1.0)
        beta = resolve_per_column(self.beta, columns, "beta", 0.0)
        self.state_ = FitState(
            columns=columns,
            dtypes={c: str(schema[c]) for c in columns},
            input_schema={name: str(dtype) for name, dtype in schema.items()},
            gamma=np.array([gamma[c] for c in columns], np.float64),
            beta=np.array([beta[c] for c in columns], np.float64),
            fold=Fold(
                columns,
                self.batch_size,
                self.momentum,
                sketch=self.sketch,
                weighted=self.weight is not None,
            ),
            trend=Trend(len(columns)),
        )
        self.last_moments_ = {}
        decimals = (  # named columns are chosen, not left
            [c for c, t in schema.items() if isinstance(t, pl.Decimal) and c not in self.exclude]
            if self.columns is None
            else []
        )
        if decimals:  # numbers, left as they are: likely not what was meant
            named = ", ".join(f'"{c}"' for c in decimals)
            self.state_.warnings.append(
                f"{'column' if len(decimals) == 1 else 'columns'} {named}: decimal, left as"
                " it is (bnorm normalizes integer and float columns); cast to float64 before"
                f" bnorm to normalize, or leave out with {opt('exclude', ','.join(decimals))}"
            )

    # -- fitting -------------------------------------------------------------------
    def moments(self, frame: Data, rows: int | None = None) -> MomentsTable:
        """The moments table of the next consecutive batches in ``frame`` (a pure
        function of their rows; not folded). ``rows``: the row count when ``frame``
        holds only the columns to normalize (possibly none)."""
        frame = _polars(frame)
        state = self._state()
        fold = state.fold
        height = frame.height if rows is None else rows
        table = table_moments(
            frame,
            state.columns,
            self.batch_size,
            first_batch=fold.batches,
            first_row=fold.rows,
            inf=self.inf,
            rows=height,
            sketch=self.sketch,
            weights=self.weights_of(frame, fold.rows),
        )
        self.note_ranges(frame, table)
        return table

    def weights_of(self, frame: pl.DataFrame, first_row: int) -> np.ndarray | None:
        """The rows' weights (checked), or None when unweighted."""
        if self.weight is None:
            return None
        if self.weight not in frame.columns:
            raise DataError(
                f'the weight column "{self.weight}" is missing from the input'
                f"{did_you_mean(self.weight, frame.columns)}; give the weights, or fit without"
                f" {opt('weight')}",
                column=self.weight,
            )
        return check_weights(frame.get_column(self.weight), first_row)

    def fold(
        self, table: MomentsTable, trace: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Fold the next batches' moments into the statistics (see `fold.Fold.add`)."""
        state = self._state()
        if state.trend is not None:
            state.trend.add(table)
        return state.fold.add(table, trace)

    def fit_batches(self, frame: Data, rows: int | None = None) -> MomentsTable:
        """Account for consecutive ``batch_size``-row batches (the last may be shorter)."""
        table = self.moments(frame, rows)
        self.fold(table)
        return table

    def partial_fit(self, batch: Data, rows: int | None = None) -> BatchNorm:
        """Account for one mini-batch (of any size); return ``self``.

        ``rows`` is the batch's row count when ``batch`` holds only the columns to
        normalize (possibly none); by default its height.
        """
        self._check_mode("batch")  # after renorm, a plain update would mix the two
        if self.scaling.needs_quantiles:
            raise UsageError(
                f"partial_fit: {self.scaling.describe()} needs quantiles of all the data, which"
                " batches seen one at a time cannot update exactly; call fit (which reads the"
                " data twice) or choose a mean centre and a std, range or maxabs scale"
            )
        return self._partial_fit(_polars(batch), rows)

    def _partial_fit(self, frame: pl.DataFrame, rows: int | None) -> BatchNorm:
        """`partial_fit` without the quantile check (`train_step` needs only the batch's)."""
        if self.state_ is None:
            self.start(frame.schema)
        else:
            self.check_schema(frame.schema)
        state = self._state()
        height = frame.height if rows is None else rows
        table = table_moments(
            frame,
            state.columns,
            max(height, 1),
            first_batch=state.fold.batches,
            first_row=state.fold.rows,
            inf=self.inf,
            rows=height,
            sketch=self.sketch,
            weights=self.weights_of(frame, state.fold.rows),
        )
        self.note_ranges(frame, table)
        self.fold(table)
        self.last_moments_ = table.moments(0) if len(table) else {}
        self._last_table = table
        return self

    def fit(self, data: Data | Iterable[Data]) -> BatchNorm:
        """Reset, then account for every batch of ``batch_size`` rows."""
        for _ in self.fitting(data):
            pass
        return self

    def fitting(self, data: Data | Iterable[Data]) -> Iterator[pl.DataFrame]:
        """`fit`, yielding each chunk once it is accounted for (so a one-pass input
        can feed the quantiles in the same pass)."""
        self.state_ = None
        for chunk in self.iter_batches(data, chunk_rows(self.batch_size)):
            if self.state_ is None:
                self.start(chunk.schema)
            else:
                self.check_schema(chunk.schema)
            self.fit_batches(chunk)
            yield chunk
        if self.state_ is None and is_frame(data):
            self.start(_polars(data).schema)  # no rows: the columns are still known

    def fitted_values(self, frame: pl.DataFrame) -> pl.DataFrame:
        """The fitted columns of ``frame`` as Float64 values the statistics count
        (+/-inf are missing with ``inf="missing"``), for the quantiles."""
        cols = self._state().columns
        exprs = [pl.col(c).cast(pl.Float64) for c in cols]
        if self.inf == "missing":
            exprs = [
                pl.when(e.is_infinite()).then(None).otherwise(e).alias(c)
                for e, c in zip(exprs, cols, strict=True)
            ]
        return frame.select(exprs)

    def set_quantiles(self, q: Quantiles, source: str, fix: str) -> None:
        """The quantiles of the fitted columns (computed by an engine, `scalers`); an
        approximate one-pass estimate is noted as a warning naming ``source`` and ``fix``."""
        state = self._state()
        state.quantiles = q
        if not q.exact:
            state.warnings.append(
                f"{source}: the {self.scaling.describe()} statistics are approximate (one pass:"
                f" each quantile's rank may be off by {q.rank_error:.2g} of the count); {fix}"
            )

    def iter_batches(
        self, data: Data | Iterable[Data], rows: int | None = None
    ) -> Iterator[pl.DataFrame]:
        """Batches of exactly ``batch_size`` (or ``rows``) rows; the last may be shorter."""
        from .batching import exact_batches

        frames = [data] if is_frame(data) else data
        pieces = (b for f in frames for b in _arrow(f).to_batches())
        for batch in exact_batches(pieces, rows or self.batch_size):
            yield to_polars(batch)

    def note_ranges(self, frame: pl.DataFrame, table: MomentsTable) -> None:
        """`_warn_integers` for the integer columns of ``frame``."""
        schema = frame.schema
        self._warn_integers(
            table, {c for c in table.columns if c in schema and schema[c].is_integer()}
        )

    def check_integers(self, table: MomentsTable) -> None:
        """`note_ranges` for a table computed elsewhere (by the fitted dtypes)."""
        dtypes = self._state().dtypes
        self._warn_integers(table, {c for c in table.columns if "Int" in dtypes.get(c, "")})

    def _warn_integers(self, table: MomentsTable, integers: set[str]) -> None:
        """Integers beyond 2^53 are rounded to float64 (the policy); say so once."""
        state = self._state()
        for j, c in enumerate(table.columns):
            if c not in integers or not len(table):
                continue
            top = max(-np.fmin.reduce(table["min"][:, j]), np.fmax.reduce(table["max"][:, j]))
            if top > 2.0**53:
                msg = (
                    f'column "{c}": integers beyond 2^53 are rounded to the nearest float64'
                    f" before normalizing; leave it out with {opt('exclude', c)} if exact"
                    " integers matter"
                )
                if msg not in state.warnings:
                    state.warnings.append(msg)

    def diagnose(
        self,
        uses_running: bool = False,
        fitting: bool = True,
        batch_mode: bool = False,
        cli: bool = False,
        renorm: bool = False,
    ) -> list[str]:
        """One-line warnings where the statistics are likely not what was meant
        (see `diagnostics`): about the fit, and about the running statistics when
        they are used. Options are named as parameters, or as flags with ``cli``."""
        s = self._state()
        out = []
        if fitting and s.trend is not None:
            integer = [s.dtypes.get(c, "").startswith(("Int", "UInt")) for c in s.columns]
            eps = self.eps if self.scaling.scale == "std" else 0.0  # eps scales std only
            out += diagnostics.fit_messages(
                s.columns, s.population, eps, s.trend, s.fold.batches, integer, self.batch_size
            )
        if s.moving is not None and (uses_running or renorm):  # no 0/1 start to converge from
            out += diagnostics.renorm_messages(s.columns, s.moving.updates, s.fold.batches)
        elif uses_running and s.imported is None:  # how imported ones were fitted is unknown
            out += diagnostics.running_messages(s.columns, s.running, self.momentum, s.fold.batches)
        if batch_mode:
            out += diagnostics.batch_mode_messages(s.columns, s.running, s.fold.batches)
        return [phrase(w, cli) for w in out]

    def not_converged(self) -> list[str]:
        """Columns whose running statistics still weigh their 0/1 start over 5%
        (none for a centre/scale choice that running statistics cannot apply)."""
        if not self.scaling.has_running:
            return []
        s = self._state()
        weight = diagnostics.not_converged(s.running, self.momentum)
        return [c for j, c in enumerate(s.columns) if weight[j] > diagnostics.NOT_CONVERGED]

    # -- transforming --------------------------------------------------------------
    def check_schema(self, schema: pl.Schema) -> None:
        """Fitted columns must be present and numeric in ``schema``."""
        for c in self.columns_:
            if c not in schema:
                raise DataError(
                    f'column "{c}" was fitted but is missing from the input'
                    f"{did_you_mean(c, schema.names())}; refit, or pass matching data",
                    column=c,
                )
            if not is_numeric(schema[c]):
                raise DataError(
                    f'column "{c}" was fitted as {self.dtypes_.get(c, "numeric")} but is now'
                    f" {schema[c]}; check the input or refit",
                    column=c,
                )

    def map_arrays(self, use: Use = "population") -> mp.Maps:
        """The inference-mode maps of every column, as arrays."""
        s = self._state()
        if s.imported is not None and s.imported["statistics"] != use:
            held = s.imported["statistics"]
            raise UsageError(
                f"the statistics imported from {s.imported['file']} ({s.imported['from']}) are"
                f" {held} statistics only; use {opt('use', held)}"
            )
        if use == "running":
            return self.running_maps((s.running.mean, s.running.var), opt("use", "running"))
        return sc.build(
            self.scaling, s.population, s.quantiles, self.eps, s.gamma, s.beta, s.columns
        )

    def running_maps(self, run: tuple[np.ndarray, np.ndarray], why: str) -> mp.Maps:
        """Maps from running (mean, var) arrays (or a trace of them, per batch)."""
        s = self._state()
        sc.check_running(self.scaling, why)
        mean, var = run
        stats = {"mean_hi": mean, "mean_lo": np.zeros_like(mean), "var": var}
        return sc.build(self.scaling, stats, None, self.eps, s.gamma, s.beta, s.columns, "running")

    def batch_maps(self, frame: pl.DataFrame | None, table: MomentsTable) -> mp.Maps:
        """BN training mode: each batch of ``frame`` by its own statistics (`table`:
        their moments; quantiles, when the choice needs them, of the batch in memory)."""
        s = self._state()
        q = None
        if self.scaling.needs_quantiles:
            assert frame is not None, "per-batch quantiles need the batch's values"
            q = sc.batch_quantiles(
                frame, s.columns, table.rows, self.scaling.probs, self.inf == "missing"
            )
        return sc.build(self.scaling, table, q, self.eps, s.gamma, s.beta, s.columns, "batch")

    def maps(self, use: Use = "population") -> dict[str, mp.AffineMap]:
        """The inference-mode affine map of each column."""
        return self.map_arrays(use).by_column(self._state().columns)

    @overload
    def transform(self, data: pl.DataFrame, use: Use = ..., dtype: Spec = ...) -> pl.DataFrame: ...
    @overload
    def transform(
        self, data: pa.Table | pa.RecordBatch, use: Use = ..., dtype: Spec = ...
    ) -> pa.Table: ...
    def transform(self, data: Data, use: Use = "population", dtype: Spec = pl.Float64) -> Any:
        """Normalize with the fitted statistics (BN inference mode). ``dtype``: a
        float type, or "same" (Float32 columns stay Float32; `dtypes`)."""
        frame = _polars(data)
        self._global_only()
        self.check_schema(frame.schema)
        types = self.output_types(dtype, frame.schema)
        return _like(data, mp.apply_maps(frame, self.maps(use), types), self.columns_)

    def output_types(
        self,
        dtype: Spec | Mapping[str, pl.DataType],
        schema: Mapping[str, pl.DataType],
        inverse: bool = False,
    ) -> dict[str, pl.DataType]:
        """Each fitted column's output type (`dtypes.resolve`) for input ``schema``."""
        return dtypes.resolve(dtype, self.columns_, schema, self.dtypes_, inverse)

    @overload
    def inverse_transform(
        self, data: pl.DataFrame, use: Use = ..., dtype: Spec = ...
    ) -> pl.DataFrame: ...
    @overload
    def inverse_transform(
        self, data: pa.Table | pa.RecordBatch, use: Use = ..., dtype: Spec = ...
    ) -> pa.Table: ...
    def inverse_transform(self, data: Data, use: Use = "population", dtype: Spec = None) -> Any:
        """Map normalized data back to the original units and, by default (``dtype``
        None or "same"), the original types: integers rounded back (`dtypes`)."""
        frame = _polars(data)
        self._global_only()
        self.check_schema(frame.schema)
        maps = self.maps(use)
        self.check_invertible(maps)
        types = self.output_types(dtype, frame.schema, inverse=True)
        return _like(data, mp.apply_maps(frame, maps, types, inverse=True), self.columns_)

    def _global_only(self) -> FitState:
        s = self._state()
        if s.groups is not None:
            raise UsageError(
                f"these statistics are per key ({opt('by')} {','.join(s.groups.keys)}); the"
                " Python API applies global statistics only: use `bnorm transform`"
            )
        return s

    @staticmethod
    def check_invertible(maps: Mapping[str, mp.AffineMap]) -> None:
        for c, m in maps.items():
            if m.scale == 0.0:
                raise UsageError(
                    f'{opt("inverse")}: column "{c}" has gamma 0, so the map cannot be inverted',
                    column=c,
                )

    @overload
    def train_step(
        self,
        batch: pl.DataFrame,
        mode: Mode = ...,
        dtype: Spec = ...,
        rows: int | None = ...,
    ) -> pl.DataFrame: ...
    @overload
    def train_step(
        self, batch: Any, mode: Mode = ..., dtype: Spec = ..., rows: int | None = ...
    ) -> Any: ...
    def train_step(
        self,
        batch: Data,
        mode: Mode = "batch",
        dtype: Spec = pl.Float64,
        rows: int | None = None,
    ) -> Any:
        """One BN training-mode step: account for the batch, then normalize it
        (returned as the kind of table given).

        ``batch``: with the batch's own statistics. ``running``: with the running
        statistics just updated by this batch. ``renorm``: batch renormalization
        (`renorm`), corrected by the moving statistics from before this batch.
        """
        frame = _polars(batch)
        self._check_mode(mode)
        if mode == "renorm":
            sc.check_running(self.scaling, opt("mode", "renorm"))
            self._partial_fit(frame, rows)
            s = self._state()
            table = self._last_table
            assert table is not None
            maps, self.last_renorm_ = self.renorm_step(table)
            types = self.output_types(dtype, frame.schema)
            return mp.apply_batch_maps(frame, s.columns, maps, table.rows, types)
        if mode == "running":
            sc.check_running(self.scaling, opt("mode", "running"))
        self._partial_fit(frame, rows)
        s = self._state()
        types = self.output_types(dtype, frame.schema)
        if mode == "running":
            return _like(batch, mp.apply_maps(frame, self.maps("running"), types), s.columns)
        pop = Population.of([self.last_moments_[c] for c in s.columns])
        q = None
        if self.scaling.needs_quantiles:  # the batch's own, from the batch in memory
            per_batch = sc.batch_quantiles(
                frame,
                s.columns,
                np.array([frame.height]),
                self.scaling.probs,
                self.inf == "missing",
            )
            q = Quantiles(per_batch.probs, per_batch.values[:, 0, :])
        maps = sc.build(self.scaling, pop, q, self.eps, s.gamma, s.beta, s.columns, "batch")
        return _like(batch, mp.apply_maps(frame, maps.by_column(s.columns), types), s.columns)

    def normalize_batches(
        self,
        data: Data,
        mode: Mode = "batch",
        dtype: Spec | Mapping[str, pl.DataType] = pl.Float64,
        rows: int | None = None,
    ) -> tuple[Any, MomentsTable, tuple[np.ndarray, np.ndarray]]:
        """`train_step` over consecutive ``batch_size``-row batches at once.

        Returns the normalized columns (the kind of table given), the batches' moments
        and the running (mean, var) after each batch.
        """
        frame = _polars(data)
        s = self._state()
        self._check_mode(mode)
        if mode in ("running", "renorm"):
            sc.check_running(self.scaling, opt("mode", mode))
        table = self.moments(frame, rows)
        if mode == "renorm":
            self.fold(table)
            maps, step = self.renorm_step(table)
            self.last_renorm_ = step
            types = self.output_types(dtype, frame.schema)
            out = mp.apply_batch_maps(frame, s.columns, maps, table.rows, types)
            return out, table, (step.mean, step.var)
        trace = self.fold(table, trace=True)
        assert trace is not None
        if mode == "running":
            maps = self.running_maps(trace, opt("mode", "running"))
        else:
            maps = self.batch_maps(frame, table)
        types = self.output_types(dtype, frame.schema)
        out = mp.apply_batch_maps(frame, s.columns, maps, table.rows, types)
        return _like(data, out, s.columns), table, trace

    def _check_mode(self, mode: Mode) -> None:
        if mode not in ("batch", "running", "renorm"):
            raise UsageError(f'mode must be "batch", "running" or "renorm", got {mode!r}')
        if mode != "renorm" and self.state_ is not None and self.state_.moving is not None:
            raise UsageError(
                f'mode="{mode}" (or partial_fit) after mode="renorm": the running statistics'
                " are batch renormalization's; start a new model for another mode"
            )

    def renorm_step(self, table: MomentsTable) -> tuple[mp.Maps, rn.Trace]:
        """Batch renormalization of the just folded batches of ``table``: each batch's
        map and corrections (`renorm.step`); the moving statistics become the running
        statistics (mean, ``std**2 - eps``), what inference uses afterwards."""
        s = self._state()
        if s.moving is None:
            if s.fold.batches > len(table):
                raise UsageError(
                    "batch renormalization starts with the first batch; this model has"
                    " already folded batches in another mode (start a new one)"
                )
            s.moving = rn.Moving.start(len(s.columns))
        s.moving, step = rn.step(s.moving, table, self.eps, self.renorm)
        s.fold.running = RunningState(
            s.moving.mean, s.moving.running_var(self.eps), s.moving.updates.copy()
        )
        maps = mp.renorm_maps(table, step.r, step.d, self.eps, s.gamma, s.beta, s.columns)
        return maps, step

    # -- changed copies -------------------------------------------------------------
    def adjusted(
        self,
        *,
        columns: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        gamma: float | Mapping[str, float] | None = None,
        beta: float | Mapping[str, float] | None = None,
        eps: float | None = None,
        inf: InfPolicy | None = None,
        batch_size: int | None = None,
        weight: str | None = None,
    ) -> BatchNorm:
        """A copy of this fitted model for applying it: some of its columns,
        gamma/beta replacing the saved values they name, another eps, inf policy,
        batch size or weight column (of the input statistics; the maps are the
        saved ones). The model itself is left as it is."""
        s = self._state()
        if weight is not None and weight in s.columns:
            raise UsageError(
                f'{opt("weight")}: "{weight}" is a normalized column of the statistics file;'
                " name the column of weights"
            )
        for name in [*(columns or []), *(exclude or [])]:
            if name not in s.columns:
                raise UsageError(
                    f'{opt("columns")}/{opt("exclude")}: "{name}" is not a column of the'
                    " statistics file"
                    f"{did_you_mean(name, s.columns)}",
                    column=name,
                )
        keep = [
            j
            for j, c in enumerate(s.columns)
            if (columns is None or c in columns) and c not in (exclude or [])
        ]
        kept = [s.columns[j] for j in keep]
        new = BatchNorm(
            batch_size=self.batch_size if batch_size is None else batch_size,
            momentum="cumulative" if self.momentum is None else self.momentum,
            eps=self.eps if eps is None else eps,
            columns=kept,
            inf=self.inf if inf is None else inf,
            weight=self.weight if weight is None else weight,
            **sc.params(self.scaling),
            renorm=self.renorm,
        )
        g, b = s.gamma[keep].copy(), s.beta[keep].copy()
        for spec, target, what in ((gamma, g, "gamma"), (beta, b, "beta")):
            if spec is None:
                continue
            values = resolve_per_column(check_per_column(spec, what), kept, what, math.nan)
            for j, c in enumerate(kept):
                if not math.isnan(values[c]):
                    target[j] = values[c]
        new.state_ = replace(
            s,
            columns=kept,
            dtypes={c: s.dtypes[c] for c in kept},
            gamma=g,
            beta=b,
            fold=s.fold.restricted(keep),
            warnings=list(s.warnings),
            trend=s.trend.take(keep) if s.trend is not None else None,
            quantiles=s.quantiles.take(keep) if s.quantiles is not None else None,
            moving=s.moving.take(keep) if s.moving is not None else None,
        )
        return new


def merge(models: Sequence[BatchNorm], names: Sequence[str] | None = None) -> BatchNorm:
    """One fitted model for the data of ``models``, in that order (A's rows, then B's...).

    The fits must agree on everything but the data: columns and their dtypes,
    batch size, momentum, eps, inf policy, gamma and beta. Population statistics
    merge by the Chan update, running statistics compose (`fold.merge_folds`).
    ``names`` name the models in errors (the statistics files).
    """
    if not models:
        raise UsageError("merge: give at least one statistics file")
    labels = list(names) if names is not None else [f"model {i + 1}" for i in range(len(models))]
    first = models[0]
    a = first._state()
    fold = a.fold
    warnings = list(a.warnings)
    for model, label in zip(models, labels, strict=True):
        if model._state().imported is not None:
            raise StatsFileError(
                f"{label}: its statistics were imported (bnorm import) without the counts and"
                " moments a merge needs; merge statistics files written by bnorm fit",
                file=label,
            )
    for model, label in zip(models[1:], labels[1:], strict=True):
        b = model._state()
        for which, state in ((labels[0], a), (label, b)):
            if state.moving is not None:
                raise StatsFileError(
                    f"{which}: its running statistics are batch renormalization's"
                    f" ({opt('mode', 'renorm')}), which start from the first batch's own"
                    " statistics and do not compose; normalize the whole data in one pass"
                    " instead",
                    file=which,
                )
        for what, mine, theirs in (
            ("columns", a.columns, b.columns),
            ("dtypes", a.dtypes, b.dtypes),
            ("batch size", first.batch_size, model.batch_size),
            ("momentum", first.momentum, model.momentum),
            ("eps", first.eps, model.eps),
            ("inf policy", first.inf, model.inf),
            ("weight column", first.weight, model.weight),
            ("centre/scale", phrase(first.scaling.describe()), phrase(model.scaling.describe())),
            ("gamma", a.gamma.tolist(), b.gamma.tolist()),
            ("beta", a.beta.tolist(), b.beta.tolist()),
        ):
            if mine != theirs:
                raise StatsFileError(
                    f"{label}: its {what} ({_shown(theirs)}) differs from {labels[0]}'s"
                    f" ({_shown(mine)}); only fits made with the same options merge: re-fit"
                    " with matching options",
                    file=label,
                )
        if a.quantiles is not None or b.quantiles is not None:
            raise StatsFileError(
                f"{label}: fits with a median or IQR do not merge (quantiles of parts do not give"
                " the quantiles of the whole); fit the whole dataset at once",
                file=label,
            )
        fold = merge_folds(fold, b.fold)
        warnings += [w for w in b.warnings if w not in warnings]
    out = type(first)(
        batch_size=first.batch_size,
        momentum="cumulative" if first.momentum is None else first.momentum,
        eps=first.eps,
        columns=a.columns,
        inf=first.inf,
        weight=first.weight,
        **sc.params(first.scaling),
    )
    out.state_ = replace(a, fold=fold, warnings=warnings)
    return out


def _shown(value: object) -> str:
    text = "cumulative" if value is None else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


_arrow, _polars, _like = as_arrow, as_polars, like


# -- validation: every option is checked here, once --------------------------------
def check_batch_size(value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise UsageError(f"{opt('batch_size')} must be a positive integer, got {value!r}")
    if value >= 2**63:
        raise UsageError(f"{opt('batch_size')} must be below 2^63, got {value!r}")
    return int(value)


def check_eps(value: float) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise UsageError(f"{opt('eps')} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_momentum(value: float | str | None) -> Momentum:
    """A number in [0, 1], or ``None``/``"cumulative"`` (PyTorch's momentum=None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() == "cumulative"):
        return None
    try:
        m = float(value)
    except (TypeError, ValueError):
        raise UsageError(
            f'{opt("momentum")} must be a number in [0, 1] or "cumulative", got {value!r}'
        ) from None
    if not 0.0 <= m <= 1.0:
        raise UsageError(
            f'{opt("momentum")} must be a number in [0, 1] or "cumulative", got {value!r}'
        )
    return m


def check_renorm(value: rn.Renorm | Mapping[str, object] | None) -> rn.Renorm:
    """Batch renormalization's options (`renorm.check`), from a `Renorm` or a mapping."""
    if value is None:
        return rn.Renorm()
    if isinstance(value, rn.Renorm):
        return rn.check(value.momentum, value.rmax, value.dmax, value.warmup, value.ramp)
    if not isinstance(value, Mapping):
        raise UsageError(f"renorm must be a mapping of its options, got {value!r}")
    unknown = set(value) - {"momentum", "rmax", "dmax", "warmup", "ramp"}
    if unknown:
        raise UsageError(
            f"renorm: unknown option {sorted(unknown)[0]!r} (momentum, rmax, dmax, warmup, ramp)"
        )
    return rn.check(**value)  # type: ignore[arg-type]


def check_inf(value: str) -> InfPolicy:
    if value not in ("error", "missing"):
        raise UsageError(f'{opt("inf")} must be "error" or "missing", got {value!r}')
    return value  # type: ignore[return-value]


def check_per_column(spec: float | Mapping[str, float], what: str) -> float | dict[str, float]:
    """gamma/beta: a finite number, or ``{column: finite number}``."""

    def finite(value: object, where: str) -> float:
        try:
            v = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise UsageError(f"{opt(what)}{where}: expected a number, got {value!r}") from None
        if not math.isfinite(v):
            raise UsageError(f"{opt(what)}{where}: must be a finite number, got {value!r}")
        return v

    if isinstance(spec, Mapping):
        return {str(k): finite(v, "" if k == "*" else f" {k}") for k, v in spec.items()}
    return finite(spec, "")


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
                f'{opt(what)}: "{name}" is not a normalized column{did_you_mean(name, columns)}',
                column=name,
            )
    return {c: float(spec.get(c, fallback)) for c in columns}


def _names(values: Sequence[str], option: str) -> list[str]:
    if isinstance(values, str):
        return [values]
    out = list(values)
    for v in out:
        if not isinstance(v, str):
            raise UsageError(f"{option}: column names must be strings, got {v!r}")
    return out
