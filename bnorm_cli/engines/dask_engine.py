"""The Dask engine: the seam of design.md §5 with moments and apply on workers.

The plan (`io.plan`) cuts footer-indexed inputs (Parquet row groups, Arrow IPC
record batches) into spans of whole batches; each worker reads the units its
span needs and returns the span's moments table (`core.moments.table_moments`,
a pure function of the batch's rows, so the same bits as the serial engine);
the client folds the tables in batch order (`core.fold.Fold`). transform and
normalize then map each span on a worker with its batches' affine maps
(`core.maps`) and write one Parquet part per span into a dataset directory.

Dask is imported here only: the serial engine and ``import bnorm_cli`` never
load it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.batching import polars_schema
from ..core.dtypes import OutType, Spec
from ..core.errors import BnormError, DataError, UsageError, opt
from ..core.maps import Maps, apply_batch_maps, apply_maps
from ..core.model import BatchNorm, Mode, Use
from ..core.moments import MomentsTable, check_weights, table_moments
from ..core.scalers import check_running
from ..io import storage
from ..io.atomic import pending
from ..io.dataset import output_location, part_name
from ..io.plan import Unit, batch_spans
from ..io.storage import is_url
from ..io.writers import parquet_options
from ..version import __version__
from .serial import has_inf, output_schema

Progress = Callable[[int], None]
#: Rows per task: a few chunks of whole batches (the worker holds one span).
SPAN_ROWS = 1 << 20
#: ... and at most about this many bytes of columns per task.
SPAN_BYTES = 256 << 20
#: The local cluster's HTTP server (dashboard_address=None still binds :8787).
LOOPBACK_ANY_PORT = "127.0.0.1:0"
#: How long to try reaching a --scheduler before giving up with one line.
CONNECT_TIMEOUT = "10s"
#: Why a median or IQR is refused here (the serial engine computes them exactly).
DASK_QUANTILES = (
    "--engine dask: a median or IQR needs exact quantiles of all the data, which this engine"
    " does not compute; use --engine serial (it reads the files again when needed), or"
    " --center mean with --scale std, range or maxabs"
)


@dataclass(frozen=True)
class Span:
    """Batches ``[first, first + count)`` of the input and the units holding them."""

    index: int
    first: int
    count: int
    units: tuple[Unit, ...]
    batch_size: int

    @property
    def first_row(self) -> int:
        return self.first * self.batch_size

    def rows(self, total: int) -> int:
        return min(total, (self.first + self.count) * self.batch_size) - self.first_row

    def read(self, columns: Sequence[str] | None, total: int) -> pa.Table:
        """The span's rows (only ``columns``, if given), read from its units alone."""
        try:
            table = pa.concat_tables([u.read(columns) for u in self.units])
        except (OSError, pa.ArrowException) as e:
            paths = ", ".join(sorted({u.path for u in self.units}))
            raise DataError(
                f"{paths}: a worker cannot read rows {self.first_row + 1} onwards ({e}); was the"
                " input changed or removed during the run, or is it not visible to every worker?"
            ) from None
        return table.slice(self.first_row - self.units[0].first_row, self.rows(total))


def spans(
    units: Sequence[Unit], batch_size: int, span_rows: int | None = None, width: int = 1
) -> list[Span]:
    """The tasks: runs of whole batches of about ``span_rows`` rows (`SPAN_ROWS`), fewer
    for a wide input (about `SPAN_BYTES` of ``width`` float64 columns)."""
    target = span_rows or max(1, min(SPAN_ROWS, SPAN_BYTES // (8 * max(width, 1))))
    return [
        Span(i, first, count, tuple(needed), batch_size)
        for i, (first, count, needed) in enumerate(batch_spans(units, batch_size, target))
    ]


def total_rows(units: Sequence[Unit]) -> int:
    return units[-1].first_row + units[-1].rows if units else 0


# -- tasks (run on workers; module-level so they pickle by reference) ---------------------
def _frame(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def moments_task(
    span: Span,
    columns: list[str],
    inf: str,
    batch0: int,
    row0: int,
    total: int,
    sketch: bool = True,
    weight: str | None = None,
) -> MomentsTable:
    """The span's moments table, labelled after the ``batch0`` batches already folded
    (weighted by the column ``weight``, if given)."""
    frame = _frame(span.read([*columns, weight] if weight else columns, total))
    weights = None
    if weight is not None:
        weights = check_weights(frame.get_column(weight), row0 + span.first_row)
    return table_moments(
        frame,
        columns,
        span.batch_size,
        first_batch=batch0 + span.first,
        first_row=row0 + span.first_row,
        inf=inf,
        rows=span.rows(total),
        sketch=sketch,
        weights=weights,
    )


def apply_task(
    span: Span,
    columns: list[str],
    maps: Any,
    per_batch: np.ndarray | None,
    dtype: OutType,
    inverse: bool,
    schema: pa.Schema,
    directory: str,
    total: int,
    inf: str | None = None,
    row0: int = 0,
) -> int:
    """Map the span (constant maps, or one `Maps` row per batch) and write its part."""
    table = span.read(None, total)
    numeric = _frame(table.select(columns))
    if inf is not None and has_inf(numeric):  # transform: the policy, as the serial engine
        table_moments(numeric, columns, numeric.height, first_row=row0, inf=inf)
    if per_batch is None:
        out = apply_maps(numeric, maps, dtype, inverse=inverse)
    else:
        out = apply_batch_maps(numeric, columns, maps, per_batch, dtype)
    arrays = [
        out.get_column(f.name).to_arrow() if f.name in out.columns else table.column(f.name)
        for f in schema
    ]
    result = pa.Table.from_arrays(arrays, schema=schema)
    if is_url(directory):
        fs, path = storage.filesystem(storage.join(directory, part_name(span.index)))
        with fs.open(path, "wb") as f:
            pq.write_table(result, f, **parquet_options(schema))
    else:
        pq.write_table(
            result, os.path.join(directory, part_name(span.index)), **parquet_options(schema)
        )
    return result.num_rows


# -- the client side ------------------------------------------------------------------------
def _results(client: Any, futures: list[Any], name: str, batch_size: int) -> Iterator[Any]:
    """Each future's result, in submission order (collected as they finish)."""
    from distributed import as_completed

    position = {f.key: i for i, f in enumerate(futures)}
    done: dict[int, Any] = {}
    following = 0
    try:
        for future in as_completed(futures):
            i = position[future.key]
            try:
                done[i] = future.result()
            except BnormError as e:
                raise _located(name, batch_size, e) from None
            except Exception as e:  # a worker died, the cluster went away
                raise DataError(
                    f"{name}: the Dask cluster failed ({type(e).__name__}: {e});"
                    " check the workers, or run without --engine dask"
                ) from e
            while following in done:
                yield done.pop(following)
                following += 1
    finally:
        client.cancel([f for f in futures if not f.done()])


def _located(name: str, batch_size: int, err: BnormError) -> BnormError:
    if err.row is None or not isinstance(err, DataError):
        return err
    batch = (err.row - 1) // batch_size + 1
    return DataError(
        f"{name}: batch {batch}: {err}", file=name, column=err.column, row=err.row, batch=batch
    )


def _fold_spans(
    model: BatchNorm,
    client: Any,
    plan: list[Span],
    name: str,
    total: int,
    progress: Progress,
    trace: bool = False,
) -> Iterator[tuple[Span, MomentsTable, tuple[np.ndarray, np.ndarray] | None]]:
    """Moments of every span on the workers, folded on the client in batch order."""
    fold = model.state_.fold if model.state_ else None
    assert fold is not None
    batch0, row0 = fold.batches, fold.rows
    futures = [
        client.submit(
            moments_task,
            s,
            model.columns_,
            model.inf,
            batch0,
            row0,
            total,
            model.sketch,
            model.weight,
            pure=False,
        )
        for s in plan
    ]
    for span, table in zip(plan, _results(client, futures, name, model.batch_size), strict=True):
        model.check_integers(table)
        traced = model.fold(table, trace=trace)
        progress(span.rows(total))
        yield span, table, traced


def fit(
    model: BatchNorm,
    units: list[Unit],
    client: Any,
    name: str,
    progress: Progress,
    span_rows: int | None = None,
) -> None:
    """The statistics of ``units`` folded onto ``model``'s state (started or loaded)."""
    if model.scaling.needs_quantiles:
        raise UsageError(DASK_QUANTILES)
    total = total_rows(units)
    plan = spans(units, model.batch_size, span_rows, len(model.columns_))
    for _ in _fold_spans(model, client, plan, name, total, progress):
        pass


def transform(
    model: BatchNorm,
    units: list[Unit],
    schema: pa.Schema,
    client: Any,
    name: str,
    output: str,
    use: Use,
    dtype: Spec,
    inverse: bool,
    progress: Progress,
    span_rows: int | None = None,
    overwrite: bool = False,
) -> int:
    """Inference mode on the workers: one Parquet part per span in directory ``output``."""
    maps = model.maps(use)
    if inverse:
        model.check_invertible(maps)
    types = model.output_types(dtype, polars_schema(schema), inverse)
    out_schema = output_schema(schema, model.columns_, types)
    total = total_rows(units)
    # constant maps: a span need not hold whole batches
    plan = spans(units, 1, span_rows, len(schema))
    with output_location(output, overwrite) as tmp:
        futures = [
            client.submit(
                apply_task,
                s,
                model.columns_,
                maps,
                None,
                types,
                inverse,
                out_schema,
                tmp,
                total,
                model.inf,
                s.first_row,
                pure=False,
            )
            for s in plan
        ]
        rows = 0
        for written in _results(client, futures, name, model.batch_size):
            rows += written
            progress(written)
    return rows


def normalize(
    model: BatchNorm,
    units: list[Unit],
    schema: pa.Schema,
    client: Any,
    name: str,
    output: str,
    mode: Mode,
    dtype: Spec,
    progress: Progress,
    span_rows: int | None = None,
    check: Callable[[], None] | None = None,
    overwrite: bool = False,
) -> int:
    """Training mode in two passes over the files: moments on the workers, the fold
    on the client (each batch's map), then each span mapped on a worker.
    ``check()`` runs between the two (an error there writes nothing)."""
    s = model.state_
    assert s is not None
    total = total_rows(units)
    plan = spans(units, model.batch_size, span_rows, len(schema))
    if mode == "running":
        check_running(model.scaling, opt("mode", "running"))
    if model.scaling.needs_quantiles:
        raise UsageError(DASK_QUANTILES)
    types = model.output_types(dtype, polars_schema(schema))
    out_schema = output_schema(schema, model.columns_, types)
    jobs: list[tuple[Span, Maps, np.ndarray]] = []
    for span, table, traced in _fold_spans(
        model, client, plan, name, total, lambda r: None, trace=True
    ):
        assert traced is not None
        if mode == "running":
            maps = model.running_maps(traced, opt("mode", "running"))
        elif mode == "renorm":  # sequential over batches, on the client, in batch order
            maps, _ = model.renorm_step(table)
        else:
            maps = model.batch_maps(None, table)
        jobs.append((span, maps, table.rows))
    if check is not None:
        check()
    with output_location(output, overwrite) as tmp:
        futures = [
            client.submit(
                apply_task,
                span,
                model.columns_,
                maps,
                rows,
                types,
                False,
                out_schema,
                tmp,
                total,
                pure=False,
            )
            for span, maps, rows in jobs
        ]
        written_rows = 0
        for written in _results(client, futures, name, model.batch_size):
            written_rows += written
            progress(written)
    return written_rows


@contextlib.contextmanager
def connect(scheduler: str | None, workers: int | None) -> Iterator[Any]:
    """A client of the cluster at ``scheduler``, or of a local one started (on
    127.0.0.1, ``workers`` single-threaded processes) and stopped here."""
    import dask
    from distributed import Client, LocalCluster

    named = f"--scheduler {scheduler}"
    if scheduler is None and workers is None:  # dask's own variable names a cluster
        scheduler = os.environ.get("DASK_SCHEDULER_ADDRESS") or None
        named = f"DASK_SCHEDULER_ADDRESS={scheduler}"
    if scheduler:
        try:
            client = Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as e:
            raise BnormError(
                f"{named}: cannot reach the Dask scheduler within {CONNECT_TIMEOUT} ({e});"
                " check the address and that the scheduler runs, or leave it out to start a"
                " local cluster"
            ) from None
        with client:
            check_versions(client)
            yield client
        return
    scratch = tempfile.mkdtemp(prefix="bnorm-dask-")  # the workers' spill space, removed
    quiet_resource_tracker()
    try:
        with (
            pending(scratch),
            dask.config.set({"temporary-directory": scratch}),  # the scheduler's too
            LocalCluster(
                n_workers=workers or min(4, os.cpu_count() or 1),
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=LOOPBACK_ANY_PORT,
                local_directory=scratch,
                silence_logs=logging.CRITICAL,  # a failed task is reported once, by the client
            ) as local,
            Client(local) as client,
        ):
            check_versions(client)
            yield client
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


#: What multiprocessing's resource tracker says when a run stopped by Ctrl-C exits at
#: once (`cli.exits`): it frees the local workers' semaphores itself, with a warning.
TRACKER_NOISE = "ignore::UserWarning:multiprocessing.resource_tracker"


def quiet_resource_tracker() -> None:
    """Start the tracker (a process of its own) with its leak warning ignored: it takes
    the interpreter's -W options when it starts, before the first semaphore."""
    if TRACKER_NOISE not in sys.warnoptions:
        sys.warnoptions.append(TRACKER_NOISE)


def versions() -> dict[str, str]:
    """What a moments record's bits depend on: this bnorm and its numeric libraries."""
    return {
        "bnorm": __version__,
        "numpy": np.__version__,
        "polars": pl.__version__,
        "pyarrow": pa.__version__,
    }


def check_versions(client: Any, mine: dict[str, str] | None = None) -> None:
    """Every worker must run the client's versions (else the statistics could differ
    from a serial fit's bits, or a task not unpickle)."""
    mine = mine if mine is not None else versions()
    try:
        theirs = client.run(versions)
    except Exception as e:
        raise BnormError(
            f"the Dask workers cannot run bnorm ({type(e).__name__}: {e}); install bnorm"
            f" {__version__} on every worker"
        ) from None
    if not theirs:
        raise BnormError("the Dask cluster has no workers; start some, or leave out --scheduler")
    for worker, found in sorted(theirs.items()):
        for name, version in mine.items():
            if found.get(name) != version:
                raise BnormError(
                    f"Dask worker {worker} runs {name} {found.get(name)}, this bnorm runs"
                    f" {version}; install the same versions on every worker (the statistics'"
                    " bits depend on them)"
                )
