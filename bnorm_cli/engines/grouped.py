"""Per-key normalization (``--by``) on the serial engine: the same pass as
`serial`, with a `groups.GroupFold` beside the global fold.

The global statistics are computed exactly as without ``--by`` (they are the
fallback for rare and unseen groups, and what the report shows); each chunk's
rows are also cut into (batch, group) segments whose moments the group fold
merges. Apply is one vectorized affine map per row: its group's map, or the
global one. Memory: a chunk plus O(groups).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import pyarrow as pa

from ..core import groups as gr
from ..core import maps as mp
from ..core.batching import polars_schema, prefetch, prefetch_depth
from ..core.errors import DataError
from ..core.frames import to_polars
from ..core.model import BatchNorm, Mode, Use, chunk_rows
from ..core.moments import table_moments
from ..io.readers import Source
from .serial import (
    Progress,
    _chunks,
    _located,
    _numeric,
    _replace,
    check_fitted,
    has_inf,
    output_schema,
)


@dataclass
class Fallbacks:
    """Rows that used the global statistics (in at least one column), and why."""

    unseen_rows: int = 0
    rare_rows: int = 0
    unseen: pl.DataFrame | None = None  # the distinct unseen keys
    rare_groups: int = 0  # groups below min_count in some column (of the fit)
    groups: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def unseen_groups(self) -> int:
        return 0 if self.unseen is None else self.unseen.height


def start(model: BatchNorm, source: Source, keys: list[str], min_count: int) -> gr.GroupFold:
    """Reset ``model`` for ``source`` with per-key statistics over ``keys``."""
    schema = polars_schema(source.schema)
    try:
        gr.check_keys(keys, schema, model.columns)
    except DataError as e:
        raise DataError(f"{source.name}: {e.raw}", file=source.name, column=e.column) from None
    model.exclude = [*model.exclude, *(k for k in keys if k not in model.exclude)]
    model.start(schema)
    state = model.state_
    assert state is not None
    state.groups = gr.GroupFold(
        keys, state.columns, model.batch_size, model.momentum, min_count=min_count
    )
    state.groups.index.ids(pl.DataFrame(schema={k: schema[k] for k in keys}), add=True)  # types
    return state.groups


def _keys(batch: pa.RecordBatch, keys: list[str]) -> pl.DataFrame:
    return to_polars(batch.select(keys))


def fit(
    model: BatchNorm, source: Source, keys: list[str], min_count: int, progress: Progress
) -> Fallbacks:
    """One pass: global and per-group population and running statistics."""
    fold = start(model, source, keys, min_count)
    for batch in _chunks(source, chunk_rows(model.batch_size), progress):
        frame = _numeric(batch, model.columns_)
        first = model.rows_
        try:
            table = model.moments(frame, batch.num_rows)
            fold.add(_keys(batch, keys), frame, first, model.inf)
        except DataError as e:
            raise _located(source, model.batch_size, e, first) from None
        model.fold(table)
    rare = gr.rare_groups(fold.stats, min_count)
    return Fallbacks(rare_groups=int(rare.any(axis=1).sum()), groups=len(fold.index))


def transform(
    model: BatchNorm,
    source: Source,
    use: Use,
    dtype: type[pl.DataType],
    inverse: bool,
    progress: Progress,
    fallbacks: Fallbacks,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Inference mode with each row's group statistics (the global ones for groups
    unseen at fit or with fewer than min_count values)."""
    check_fitted(model, source)
    state = model.state_
    assert state is not None and state.groups is not None
    fold = state.groups
    schema_in = polars_schema(source.schema)
    for k in fold.keys:
        if k not in schema_in:
            raise DataError(
                f'{source.name}: key column "{k}" was fitted but is missing from the input;'
                " pass data with the key columns",
                file=source.name,
                column=k,
            )
    columns = model.columns_
    stats = fold.stats.take_columns([fold.columns.index(c) for c in columns])
    group_maps = gr.population_maps(stats, model.eps, state.gamma, state.beta, use)
    global_maps = model.map_arrays(use)
    if inverse and (state.gamma == 0).any():
        model.check_invertible(model.maps(use))
    rare = gr.rare_groups(stats, fold.min_count)
    fallbacks.rare_groups = int(rare.any(axis=1).sum())
    fallbacks.groups = len(fold.index)
    schema = output_schema(source.schema, columns, dtype)

    def run() -> Iterator[pa.RecordBatch]:
        rows = 0
        for batch in prefetch(source.pieces, prefetch_depth(1 << 16, len(source.schema))):
            if not batch.num_rows:
                continue
            frame = _numeric(batch, columns)
            keys = _keys(batch, fold.keys)
            try:
                if model.inf == "error" and has_inf(frame):  # names the row
                    table_moments(frame, columns, batch.num_rows, first_row=rows, sketch=False)
                gid = fold.index.ids(keys, add=False)
            except DataError as e:
                raise _located(source, model.batch_size, e, rows) from None
            unseen = gid < 0
            row_rare = rare[np.maximum(gid, 0)] & ~unseen[:, None] if len(rare) else None
            if row_rare is None:
                row_rare = np.zeros((gid.size, len(columns)), bool)
            if unseen.any():
                fallbacks.unseen_rows += int(unseen.sum())
                new = fold.index.keys_of(keys).filter(pl.Series(unseen)).unique()
                seen = fallbacks.unseen
                fallbacks.unseen = new if seen is None else pl.concat([seen, new]).unique()
            fallbacks.rare_rows += int(row_rare.any(axis=1).sum())
            maps = gr.with_fallback(group_maps, global_maps, row_rare, gid)
            out = mp.apply_row_maps(frame, columns, maps, dtype, inverse)
            rows += batch.num_rows
            progress(batch.num_rows)
            yield _replace(batch, out, schema)

    return schema, run()


def normalize(
    model: BatchNorm,
    source: Source,
    keys: list[str],
    min_count: int,
    mode: Mode,
    dtype: type[pl.DataType],
    progress: Progress,
    fallbacks: Fallbacks,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """BN training mode per group, one pass: batch mode normalizes each (batch,
    group) segment by its own statistics; running mode by its group's running
    statistics right after the batch. Rare segments (batch mode: fewer than
    min_count valid values in the segment; running mode: in the group so far) use
    the global statistics of the same batch."""
    fold = start(model, source, keys, min_count)
    state = model.state_
    assert state is not None
    columns = model.columns_
    schema = output_schema(source.schema, columns, dtype)
    eps, gamma, beta = model.eps, state.gamma, state.beta

    def run() -> Iterator[pa.RecordBatch]:
        for batch in _chunks(source, chunk_rows(model.batch_size), progress):
            frame = _numeric(batch, columns)
            first = model.rows_
            try:
                table = model.moments(frame, batch.num_rows)
                done = fold.add(_keys(batch, keys), frame, first, model.inf, mode == "running")
            except DataError as e:
                raise _located(source, model.batch_size, e, first) from None
            trace = model.fold(table, trace=True)
            assert trace is not None
            f = done.fields
            if mode == "running":
                assert done.means is not None and done.variances is not None
                why = "--mode running"
                group = model.running_maps((done.means, done.variances), why)
                whole = model.running_maps(trace, why)
                rare = (done.counts < min_count) & (f["n"] > 0)
            else:
                mp.check_finite_var(f["var"], columns, "batch")
                group = mp.build(f["mean_hi"], f["mean_lo"], f["var"], eps, gamma, beta)
                whole = model.batch_maps(frame, table)
                rare = (f["n"] < min_count) & (f["n"] > 0)
            segs = done.segments
            of_row = segs.of_row
            batch_of_row = segs.batch[of_row]
            per_row = mp.Maps(
                whole.center_hi[batch_of_row],
                whole.center_lo[batch_of_row],
                whole.scale[batch_of_row],
                whole.beta[batch_of_row],
            )
            row_rare = rare[of_row]
            fallbacks.rare_rows += int(row_rare.any(axis=1).sum())
            maps = gr.with_fallback(group, per_row, row_rare, of_row)
            out = mp.apply_row_maps(frame, columns, maps, dtype)
            yield _replace(batch, out, schema)
        fallbacks.groups = len(fold.index)

    return schema, run()
