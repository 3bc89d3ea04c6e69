"""Streaming passes: source -> exact N-row batches -> model -> writer.

Each command is one pass over its input; memory holds one batch (plus the
writer's row-group buffer), never the file.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from typing import Protocol

import polars as pl
import pyarrow as pa

from ..core import moments as mom
from ..core.batching import exact_batches, polars_schema, prefetch
from ..core.errors import DataError
from ..core.maps import Running
from ..core.model import BatchNorm, Mode, Use
from ..io.readers import Source

Progress = Callable[[int], None]
Observed = dict[str, mom.Moments]


class Profile(Protocol):
    """What watches each batch go by (the HTML report's sampler, `report.profile`)."""

    def add_batch(
        self,
        before: pl.DataFrame,
        after: pl.DataFrame | None,
        moments: Mapping[str, mom.Moments] | None = None,
        running: Mapping[str, Running] | None = None,
    ) -> None: ...


def output_schema(schema: pa.Schema, columns: list[str], dtype: type[pl.DataType]) -> pa.Schema:
    """The input schema with each normalized column turned into float64/float32."""
    target = pa.float32() if dtype == pl.Float32 else pa.float64()
    chosen = set(columns)
    return pa.schema(
        [pa.field(f.name, target, nullable=True) if f.name in chosen else f for f in schema]
    )


def _batches(source: Source, model: BatchNorm, progress: Progress) -> Iterator[pa.RecordBatch]:
    for batch in prefetch(exact_batches(source.pieces, model.batch_size)):
        yield batch
        progress(batch.num_rows)


def _numeric(batch: pa.RecordBatch, columns: list[str]) -> pl.DataFrame:
    frame = pl.from_arrow(batch.select(columns))
    assert isinstance(frame, pl.DataFrame)
    return frame


def _replace(batch: pa.RecordBatch, out: pl.DataFrame, schema: pa.Schema) -> pa.RecordBatch:
    arrays = [
        out.get_column(f.name).to_arrow() if f.name in out.columns else batch.column(f.name)
        for f in schema
    ]
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


def _in_batch(source: Source, index: int, err: DataError) -> DataError:
    """A batch's error, with the input named and the batch counted from 1."""
    return DataError(f"{source.name}: batch {index}: {err}")


def fit(
    model: BatchNorm, source: Source, progress: Progress, profile: Profile | None = None
) -> None:
    """One pass: population and running statistics (and the report's profile)."""
    model.start(polars_schema(source.schema))
    for i, batch in enumerate(_batches(source, model, progress), 1):
        frame = _numeric(batch, model.columns_)
        try:
            moments = model.partial_fit(frame, batch.num_rows)
        except DataError as e:
            raise _in_batch(source, i, e) from None
        if profile is not None:
            profile.add_batch(frame, None, moments, model.running_)


def transform(
    model: BatchNorm,
    source: Source,
    use: Use,
    dtype: type[pl.DataType],
    inverse: bool,
    observed: Observed | None,
    progress: Progress,
    profile: Profile | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """Inference mode with saved statistics; fills ``observed`` with the input's moments.

    With ``observed`` None (no report wanted) only the +/-inf policy is checked,
    which is cheaper than the moments.
    """
    try:
        model.check_schema(polars_schema(source.schema))
    except DataError as e:
        raise DataError(f"{source.name}: {e}") from None
    schema = output_schema(source.schema, model.columns_, dtype)
    maps = model.maps(use)
    if observed is not None:
        observed.update({c: mom.Moments() for c in model.columns_})

    def run() -> Iterator[pa.RecordBatch]:
        from ..core.maps import apply_maps

        rows = 0
        for i, batch in enumerate(_batches(source, model, progress), 1):
            frame = _numeric(batch, model.columns_)
            seen = None
            try:
                if observed is not None or profile is not None or _has_inf(frame):
                    seen = model.batch_moments(frame, first_row=rows)
            except DataError as e:
                raise _in_batch(source, i, e) from None
            if observed is not None and seen is not None:
                for c, m in seen.items():
                    observed[c] = mom.merge(observed[c], m)
            rows += batch.num_rows
            out = apply_maps(frame, maps, dtype, inverse=inverse)
            if profile is not None:
                profile.add_batch(frame, out, seen, model.running_)
            yield _replace(batch, out, schema)

    return schema, run()


def _has_inf(frame: pl.DataFrame) -> bool:
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
    dtype: type[pl.DataType],
    progress: Progress,
    profile: Profile | None = None,
) -> tuple[pa.Schema, Iterator[pa.RecordBatch]]:
    """BN training mode, one pass: each batch updates the statistics, then is normalized."""
    model.start(polars_schema(source.schema))
    schema = output_schema(source.schema, model.columns_, dtype)

    def run() -> Iterator[pa.RecordBatch]:
        for i, batch in enumerate(_batches(source, model, progress), 1):
            frame = _numeric(batch, model.columns_)
            try:
                out = model.train_step(frame, mode, dtype, batch.num_rows)
            except DataError as e:
                raise _in_batch(source, i, e) from None
            if profile is not None:
                profile.add_batch(frame, out, model.last_moments_, model.running_)
            yield _replace(batch, out, schema)

    return schema, run()
