"""The serial engine: plan -> moments -> fold -> apply, in one process.

Each command is one pass over its input. fit and normalize read chunks of
whole batches (about 64k rows, `model.chunk_rows`), compute the chunk's moments
table at once (vectorized over its batches) and fold it; normalize then applies
each batch's map. transform applies constant maps to the pieces as the reader
delivers them. Memory holds a chunk (plus the writer's row-group buffer), never
the file.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Protocol

import numpy as np
import polars as pl
import pyarrow as pa

from ..core import moments as moments_module
from ..core.batching import (
    Behind,
    Joined,
    Piece,
    exact_batches,
    polars_schema,
    prefetch,
    prefetch_depth,
)
from ..core.diagnostics import Trend
from ..core.drift import Watch
from ..core.dtypes import OutType, Spec, check_cast, target
from ..core.errors import DataError, UsageError, opt
from ..core.fold import (
    Fold,
    Population,
    Running,
    concat_columns,
    group_population,
    merge_population,
)
from ..core.frames import to_polars
from ..core.maps import MappedBatches, map_exprs
from ..core.model import BatchNorm, Mode, Use, chunk_rows
from ..core.moments import Moments, MomentsTable, table_moments
from ..core.renorm import Trace
from ..core.scalers import Quantiles, check_running
from ..io.readers import Source
from .quantiles import column_quantiles

Progress = Callable[[int], None]


def _cpus() -> int:
    """CPUs this process may run on (a container may allow fewer than the machine has)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


moments_module.THREADS = min(4, _cpus())
Observed = dict[str, Moments]


class Profile(Protocol):
    """What watches each batch go by (the HTML report's sampler, `report.profile`)."""

    def add_batch(
        self,
        before: pl.DataFrame,
        after: pl.DataFrame | None,
        moments: Mapping[str, Moments] | None = None,
        running: Mapping[str, Running] | None = None,
    ) -> None: ...

    def add_trace(self, moments: Mapping[str, Moments], running: Mapping[str, Running]) -> None: ...

    def add_corrections(
        self, r: Mapping[str, float], d: Mapping[str, float], rmax: float, dmax: float
    ) -> None: ...


def output_schema(schema: pa.Schema, columns: list[str], dtype: OutType) -> pa.Schema:
    """The input schema with each normalized column turned into its output type."""
    chosen = set(columns)
    known: dict[pl.DataType, pa.DataType] = {}

    def arrow(name: str) -> pa.DataType:
        t = target(dtype, name)
        if t not in known:
            known[t] = pl.DataFrame(schema={"x": t}).to_arrow().schema.field(0).type
        return known[t]

    return pa.schema(
        [pa.field(f.name, arrow(f.name), nullable=True) if f.name in chosen else f for f in schema]
    )


def _chunks(source: Source, rows: int, progress: Progress) -> Iterator[pa.RecordBatch]:
    depth = prefetch_depth(rows, len(source.schema))
    for batch in prefetch(exact_batches(source.pieces, rows), depth):
        yield batch
        progress(batch.num_rows)


def _numeric(batch: pa.RecordBatch, columns: list[str]) -> pl.DataFrame:
    return to_polars(batch.select(columns))


def _replace(batch: pa.RecordBatch, out: pl.DataFrame, schema: pa.Schema) -> pa.RecordBatch:
    mapped = set(out.columns)  # a set: `out.columns` is a new list each call (1,000 columns)
    arrays = [
        out.get_column(f.name).to_arrow() if f.name in mapped else batch.column(f.name)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _located(source: Source, batch_size: int, err: DataError, first_row: int) -> DataError:
    """A batch's error, with the input named and the batch counted from 1."""
    row = err.row if err.row is not None else first_row + 1
    batch = (row - 1) // batch_size + 1
    return DataError(
        f"{source.name}: batch {batch}: {err.raw}",
        file=source.name,
        column=err.column,
        row=err.row,
        batch=batch,
    )


def _observe(
    profile: Profile,
    frame: pl.DataFrame,
    out: pl.DataFrame | None,
    table: MomentsTable,
    trace: tuple[np.ndarray, np.ndarray],
) -> None:
    """Hand each batch of a chunk to the report's sampler, with its running statistics."""
    base = int(table.first_row[0]) if len(table) else 0
    for i in range(len(table)):
        start, rows = int(table.first_row[i]) - base, int(table.rows[i])
        running = {
            c: Running(float(trace[0][i, j]), float(trace[1][i, j]))
            for j, c in enumerate(table.columns)
        }
        after = out.slice(start, rows) if out is not None else None
        profile.add_batch(frame.slice(start, rows), after, table.moments(i), running)


def _corrections(profile: Profile, columns: list[str], step: Trace) -> None:
    """Each batch's renormalization r and d, for the report's charts."""
    for i in range(step.r.shape[0]):
        profile.add_corrections(
            {c: float(step.r[i, j]) for j, c in enumerate(columns)},
            {c: float(step.d[i, j]) for j, c in enumerate(columns)},
            float(step.rmax[i]),
            float(step.dmax[i]),
        )


#: Bytes of float64 values per chunk of one column group: a wide columnar input
#: (1,000 columns) is fitted in passes over groups of columns, each reading only
#: its columns (a Parquet reader holds buffers for every column it reads).
GROUP_BYTES = 64 << 20

Reopen = Callable[[list[str]], Source]


def start(model: BatchNorm, source: Source, resume: bool = False) -> None:
    """Reset ``model`` for ``source`` or, with ``resume``, check that ``source`` can
    continue its fit (``fit --update``: the new batches follow the saved ones)."""
    if resume:
        if model.state_ is not None and model.state_.moving is not None:
            raise UsageError(
                f"{opt('update')}: these statistics are batch renormalization's"
                f" ({opt('mode', 'renorm')}), whose running statistics start from the first"
                " batch and cannot be continued by a fit; normalize the whole data again"
                " instead"
            )
        check_fitted(model, source)
    else:
        model.start(polars_schema(source.schema))


def check_fitted(model: BatchNorm, source: Source) -> None:
    """The fitted columns must be present and numeric in ``source``."""
    try:
        model.check_schema(polars_schema(source.schema))
    except DataError as e:
        raise DataError(f"{source.name}: {e.raw}", file=source.name, column=e.column) from None


def fit(
    model: BatchNorm,
    source: Source,
    progress: Progress,
    profile: Profile | None = None,
    reopen: Reopen | None = None,
    resume: bool = False,
    again: Callable[[], Source] | None = None,
) -> None:
    """One pass: population and running statistics (and the report's profile);
    with ``resume``, folded onto the model's saved statistics.

    A median or IQR choice also needs quantiles (`quantiles.column_quantiles`):
    ``again()`` opens the whole input anew for its later passes; without it (a
    pipe) they come from the same single pass and are approximate.

    ``reopen(columns)`` opens the input again reading only ``columns`` (a columnar
    file can be read again at no cost); given that, a wide input is fitted column
    group by column group, in several passes that each read only their columns
    (not with ``resume``: the groups start from nothing).
    """
    if model.scaling.needs_quantiles:
        if resume:
            raise UsageError(
                f"--update: {model.scaling.describe()} needs quantiles of all the data, which"
                " cannot be updated with new rows; fit the whole dataset again"
            )
        _fit_quantiles(model, source, progress, profile, again)
        return
    start(model, source, resume)
    rows = chunk_rows(model.batch_size)
    width = max(1, GROUP_BYTES // (8 * rows))
    columns = model.columns_
    if reopen is not None and profile is None and not resume and len(columns) > width:
        groups = [columns[i : i + width] for i in range(0, len(columns), width)]
        w = [model.weight] if model.weight is not None else []  # each group reads the weights
        done = [_fit_group(model, reopen([*g, *w]), g, progress, len(groups)) for g in groups]
        state = model.state_
        assert state is not None
        state.fold = concat_columns([fold for fold, _ in done])
        state.trend = Trend.concat([trend for _, trend in done])
        return
    for _ in _fit_pass(model, source, progress, profile):
        pass


def _fit_pass(
    model: BatchNorm, source: Source, progress: Progress, profile: Profile | None
) -> Iterator[pl.DataFrame]:
    """The fit's pass over ``source``, yielding each chunk's fitted columns once folded."""
    for batch in _chunks(source, chunk_rows(model.batch_size), progress):
        frame = _numeric(batch, model.needed_)
        try:
            table = model.moments(frame, batch.num_rows)
        except DataError as e:
            raise _located(source, model.batch_size, e, model.rows_) from None
        trace = model.fold(table, trace=profile is not None)
        if profile is not None and trace is not None:
            _observe(profile, frame.select(model.columns_), None, table, trace)
        yield frame


def _fit_quantiles(
    model: BatchNorm,
    source: Source,
    progress: Progress,
    profile: Profile | None,
    again: Callable[[], Source] | None,
) -> None:
    """The fit's pass, and the quantiles its median/IQR need. The fit's own pass is
    the quantiles' first (`column_quantiles` keeps what fits its budget); later
    passes, when it needs any, read a re-readable input again (``again``). A pipe
    has only the one pass: its quantiles are then approximate."""
    start(model, source)
    columns, probs = model.columns_, model.scaling.probs
    fitting = _fit_pass(model, source, progress, profile)
    reads = 0

    def passes() -> Iterator[pl.DataFrame]:
        nonlocal reads
        reads += 1
        if reads == 1:
            return (model.fitted_values(frame) for frame in fitting)
        assert again is not None  # one_pass: never asked for a second read
        pieces = again().pieces
        return (
            model.fitted_values(_numeric(batch, columns))
            for batch in exact_batches(pieces, chunk_rows(model.batch_size))
        )

    result = column_quantiles(passes, columns, probs, one_pass=again is None)
    for _ in fitting:  # the statistics need every row, whatever the quantiles read
        pass
    if result.columns != tuple(columns) or result.probs != probs:
        raise AssertionError("column_quantiles answered another question")
    q = Quantiles(probs, result.values, result.exact, result.rank_error)
    model.set_quantiles(q, source.name, "for exact ones fit a file (bnorm reads it again)")


def _fit_group(
    model: BatchNorm, source: Source, columns: list[str], progress: Progress, groups: int
) -> tuple[Fold, Trend]:
    """Fold the moments of some of the model's columns, in one pass."""
    weighted = model.weight is not None
    fold = Fold(columns, model.batch_size, model.momentum, sketch=model.sketch, weighted=weighted)
    trend = Trend(len(columns))
    read = [*columns, model.weight] if model.weight is not None else columns
    for batch in _chunks(source, chunk_rows(model.batch_size), lambda n: progress(n // groups)):
        frame = _numeric(batch, read)
        try:
            table = table_moments(
                frame,
                columns,
                model.batch_size,
                fold.batches,
                fold.rows,
                model.inf,
                batch.num_rows,
                sketch=model.sketch,
                weights=model.weights_of(frame, fold.rows),
            )
        except DataError as e:
            raise _located(source, model.batch_size, e, fold.rows) from None
        model.note_ranges(frame, table)
        trend.add(table)
        fold.add(table)
    return fold, trend


def transform(
    model: BatchNorm,
    source: Source,
    use: Use,
    dtype: Spec,
    inverse: bool,
    observed: Observed | None,
    progress: Progress,
    profile: Profile | None = None,
    watch: Watch | None = None,
    gate: Callable[[], None] | None = None,
) -> tuple[pa.Schema, Iterable[pa.RecordBatch]]:
    """Inference mode with saved statistics; fills ``observed`` with the input's moments.

    The maps are constants, so the reader's pieces are mapped as they come (no
    batch is assembled). With ``observed`` None (no report wanted) only the
    +/-inf policy is checked, which is cheaper than the moments. ``watch``
    (drift) accumulates the input's moments and sketch on the fitted grid, in
    the same pass; ``gate`` runs after the last row, before the output is
    complete: raising there withholds it (the writer removes its temporary file).
    """
    check_fitted(model, source)
    columns = model.columns_
    types = model.output_types(dtype, polars_schema(source.schema), inverse)
    schema = output_schema(source.schema, columns, types)
    maps = model.maps(use)
    if inverse:
        model.check_invertible(maps)
    running = model.running_
    # the input statistics (report) are weighted when the input has the weight column
    w = model.weight if model.weight in source.schema.names else None
    seen = Population.empty(len(columns), w is not None)

    # an infinity to refuse: unless the file's statistics rule it out
    look = model.inf == "error" and not set(columns) <= source.finite

    def watched(frame: pl.DataFrame, first_row: int, rows: int) -> MomentsTable:
        """Add one piece to the drift summary; its moments table."""
        assert watch is not None
        try:
            table = watch.table(frame, first_row, model.inf, rows)
        except DataError as e:
            raise _located(source, model.batch_size, e, first_row) from None
        watch.add(table)
        return table

    def measured(batch: pa.RecordBatch, frame: pl.DataFrame, first_row: int) -> MomentsTable | None:
        """One piece checked, and its moments if anything needs them."""
        if watch is not None:
            return watched(frame, first_row, batch.num_rows)
        if observed is None and profile is None and not (look and has_inf(frame)):
            return None
        try:
            weights = None
            if w is not None:
                weights = model.weights_of(_numeric(batch, [w]), first_row)
            return table_moments(
                frame,
                columns,
                batch.num_rows,
                first_row=first_row,
                inf=model.inf,
                rows=batch.num_rows,
                sketch=False,
                weights=weights,
            )
        except DataError as e:
            raise _located(source, model.batch_size, e, first_row) from None

    def checked() -> Iterator[tuple[pa.RecordBatch, pl.DataFrame]]:
        """Each input batch with its columns to map, once checked and counted."""
        nonlocal seen
        rows = 0
        depth = prefetch_depth(1 << 16, len(source.schema))
        # the drift summary follows the pieces on a thread of its own, so the writer
        # never waits for it, except when the report's profile needs each piece's
        # moments in turn
        behind = Behind(watched, depth) if watch is not None and profile is None else None
        joined = drift_pieces()
        try:
            for batch in prefetch(source.pieces, depth):
                if not batch.num_rows:
                    continue
                frame = _numeric(batch, columns)
                table = None
                if behind is not None:  # raises an earlier piece's error, located
                    full = joined.add(frame, rows, batch.num_rows)
                    if full is not None:
                        behind.submit(*full)
                else:
                    table = measured(batch, frame, rows)
                if watch is None and table is not None and observed is not None:
                    seen = merge_population(seen, group_population(table))
                    observed.update({c: seen.at(j) for j, c in enumerate(columns)})
                rows += batch.num_rows
                if profile is not None:
                    for i in range(len(table) if table is not None else 0):  # a piece: many batches
                        profile.add_trace(table.moments(i), running)  # type: ignore[union-attr]
                progress(batch.num_rows)
                yield batch, frame
            if behind is not None:
                rest = joined.flush()
                if rest is not None:
                    behind.submit(*rest)
                behind.close()
        finally:
            if behind is not None:
                behind.cancel()
        if watch is not None and observed is not None:
            observed.update(watch.observed())
        if gate is not None:
            gate()

    exprs = map_exprs(maps, types, inverse)  # once: 1,000 columns' are ~10 ms to build

    def run() -> Iterator[pa.RecordBatch]:
        for batch, frame in checked():
            out = check_cast(frame, exprs, types)
            if profile is not None:
                profile.add_batch(frame, out)
            yield _replace(batch, out, schema)

    def inputs() -> Iterator[pa.RecordBatch]:
        for batch, _ in checked():
            yield batch if batch.schema.equals(source.schema) else _conform(batch, source.schema)

    if observed is not None:
        observed.update({c: Moments() for c in columns})
    if profile is not None:  # the report samples each mapped batch
        return schema, run()
    exact = all(not target(types, c).is_integer() for c in columns)
    # nothing to check or measure on the way (the file's statistics rule out +/-inf):
    # the writer may let polars read the file itself
    unseen = observed is None and watch is None and gate is None and not look
    return schema, MappedBatches(
        run(),
        inputs(),
        source.schema,
        exprs if exact else None,
        scan=source.scan if unseen else None,
        rows=source.total_rows or 0,
        name=source.name,
    )


def _conform(batch: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``batch`` with the columns and types of ``schema`` (a later input file's
    batch: the types the first file set)."""
    arrays = [batch.column(f.name).cast(f.type) for f in schema]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def has_inf(frame: pl.DataFrame) -> bool:
    """Whether a +/-inf is among the values (the --inf policy decides)."""
    if not frame.width:
        return False
    # max() skips NaN and nulls, so the largest magnitude is inf exactly when an
    # inf is present (1.6x faster than is_infinite().any() per batch)
    largest = frame.select(pl.max_horizontal(pl.all().cast(pl.Float64).abs().max())).item()
    return largest == math.inf


def normalize(
    model: BatchNorm,
    source: Source,
    mode: Mode,
    dtype: Spec,
    progress: Progress,
    profile: Profile | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """BN training mode, one pass: each batch updates the statistics, then is normalized."""
    model.start(polars_schema(source.schema))
    if mode == "running":
        check_running(model.scaling, opt("mode", "running"))
    types = model.output_types(dtype, polars_schema(source.schema))
    schema = output_schema(source.schema, model.columns_, types)

    def run() -> Iterator[pa.RecordBatch]:
        for batch in _chunks(source, chunk_rows(model.batch_size), progress):
            frame = _numeric(batch, model.needed_)
            first = model.rows_
            try:
                out, table, trace = model.normalize_batches(frame, mode, types, batch.num_rows)
            except DataError as e:
                raise _located(source, model.batch_size, e, first) from None
            if model.weight is not None:  # the weight column passes through as it was read
                out = out.drop(model.weight)
                frame = frame.drop(model.weight)
            if profile is not None:
                _observe(profile, frame, out, table, trace)
                if mode == "renorm" and model.last_renorm_ is not None:
                    _corrections(profile, table.columns, model.last_renorm_)
            yield _replace(batch, out, schema)

    return schema, run()


#: Pieces the drift summary takes at once: joined up to this many rows or bytes of
#: float64 values (a 1,000-column file's 2,048-row pieces alone cost 2.6x the CPU
#: of transform; the rows and bytes of narrow files' pieces pass alone, as read).
DRIFT_ROWS, DRIFT_BYTES = 8192, 64 << 20


def drift_pieces() -> Joined:
    """How `drift` and `transform --drift` join pieces for the summary (the same way)."""
    return Joined(DRIFT_ROWS, DRIFT_BYTES)


def drift(model: BatchNorm, source: Source, watch: Watch, progress: Progress) -> None:
    """One pass over the input (only the compared columns): its moments and sketch."""
    try:
        model.check_schema(polars_schema(source.schema))
    except DataError as e:
        raise DataError(f"{source.name}: {e}", file=source.name, column=e.column) from None
    rows = 0
    joined = drift_pieces()

    def add(piece: Piece | None) -> None:
        if piece is None:
            return
        frame, first, count = piece
        try:
            watch.add(watch.table(frame, first, model.inf, count))
        except DataError as e:
            raise _located(source, model.batch_size, e, first) from None

    for batch in prefetch(source.pieces):
        if not batch.num_rows:
            continue
        add(joined.add(_numeric(batch, model.columns_), rows, batch.num_rows))
        rows += batch.num_rows
        progress(batch.num_rows)
    add(joined.flush())
