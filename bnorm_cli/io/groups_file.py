"""The per-key statistics sidecar: a Parquet file beside the statistics file.

A fit with ``--by`` writes ``STATS`` (the global statistics, as always, plus a
``"by"`` block) and ``STATS.groups.parquet`` beside it: one row per group, in
group order, holding the key columns and one struct column per normalized
column (``count``, ``null_count``, ``mean``, ``mean_residual``, ``var``,
``min``, ``max``, ``running_mean``, ``running_var``, ``running_updates``, the
statistics file's fields). The statistics file lists ``"by"`` in ``"requires"``,
so a bnorm that does not know per-key statistics refuses it instead of applying
the global ones; ``"by"`` holds the keys, ``min_count``, the group count, the
sidecar's name and a random ``sidecar_id`` that the sidecar's metadata repeats,
so a statistics file paired with another fit's sidecar is refused.

Both are staged beside their targets and renamed at the end, the sidecar
first: a failed run publishes neither.
"""

from __future__ import annotations

import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from ..core import groups as gr
from ..core.errors import OutputError, StatsFileError
from ..core.model import BatchNorm
from .atomic import staged, writes_through

FEATURE = "by"
SUFFIX = ".groups.parquet"
_ID_KEY = b"bnorm-sidecar-id"
#: struct fields per column: (name in the sidecar, Population/RunningState field)
_FIELDS = (
    ("count", "n"),
    ("null_count", "missing"),
    ("mean", "mean_hi"),
    ("mean_residual", "mean_lo"),
    ("var", "var"),
    ("min", "min"),
    ("max", "max"),
)
_RUNNING = (("running_mean", "mean"), ("running_var", "var"), ("running_updates", "updates"))


def sidecar_path(stats: str | os.PathLike[str]) -> Path:
    path = Path(stats)
    return path.with_name(path.name + SUFFIX)


def check_target(stats: str) -> None:
    """A statistics file with a sidecar must be a regular file (not stdout or a device)."""
    if stats == "-" or writes_through(stats):
        raise OutputError(
            f"{stats}: per-key statistics (--by) are written as a file and a Parquet sidecar"
            " beside it; give -s a regular file path"
        )


def encode(model: BatchNorm, stats: str | os.PathLike[str]) -> tuple[bytes, dict[str, Any]]:
    """The sidecar's bytes and the statistics file's ``"by"`` fields."""
    state = model.state_
    assert state is not None and state.groups is not None
    fold = state.groups
    token = secrets.token_hex(8)
    known = fold.index.known
    keys = (
        known.sort(gr.GROUP_ID).drop(gr.GROUP_ID)
        if known is not None
        else pl.DataFrame({k: [] for k in fold.keys})
    )
    arrays: dict[str, pa.Array] = {k: keys.get_column(k).to_arrow() for k in fold.keys}
    pop, run = fold.stats.population, fold.stats.running
    for j, c in enumerate(fold.columns):
        n = pop.n[:, j]
        has = n > 0
        values: dict[str, pa.Array] = {}
        for name, attr in _FIELDS:
            a = getattr(pop, attr)[:, j]
            values[name] = pa.array(a) if attr in ("n", "missing") else pa.array(a, mask=~has)
        for name, attr in _RUNNING:
            values[name] = pa.array(getattr(run, attr)[:, j])
        arrays[c] = pa.StructArray.from_arrays(list(values.values()), list(values))
    table = pa.table(arrays).replace_schema_metadata({_ID_KEY: token.encode()})
    buf = io.BytesIO()
    pq.write_table(table, buf)
    header = {
        "keys": list(fold.keys),
        "min_count": fold.min_count,
        "groups": len(fold.index),
        "sidecar": sidecar_path(stats).name,
        "sidecar_id": token,
    }
    return buf.getvalue(), header


def save(model: BatchNorm, stats: str, dumps: Callable[[BatchNorm, dict[str, Any]], str]) -> None:
    """Write the statistics file and its sidecar (``dumps``: the file's text, given
    the extra top-level fields)."""
    check_target(stats)
    data, header = encode(model, stats)
    text = dumps(model, {"requires": [FEATURE], FEATURE: header})
    with staged(stats) as put_stats, staged(sidecar_path(stats)) as put_sidecar:
        put_sidecar(data)
        put_stats(text.encode("utf-8"))
    # leaving the block renames the sidecar, then the statistics file


def staged_pair(
    model: BatchNorm, stats: str, dumps: Callable[[BatchNorm, dict[str, Any]], str]
) -> Callable[[Callable[[bytes], None], Callable[[bytes], None]], None]:
    """For a run that publishes the statistics with another output: a function
    writing both staged files (their ``put``s)."""

    def put(put_stats: Callable[[bytes], None], put_sidecar: Callable[[bytes], None]) -> None:
        data, header = encode(model, stats)
        put_sidecar(data)
        put_stats(dumps(model, {"requires": [FEATURE], FEATURE: header}).encode("utf-8"))

    return put


def attach(model: BatchNorm, doc: dict[str, Any], source: str) -> None:
    """Read the sidecar that ``doc`` (the statistics file ``source``) names."""
    by = doc.get(FEATURE)

    def bad(what: str) -> StatsFileError:
        return StatsFileError(
            f"{source}: inconsistent per-key statistics ({what}); re-create it with"
            " `bnorm fit --by ...`"
        )

    if not isinstance(by, dict) or not isinstance(by.get("keys"), list):
        raise bad('"by" must be an object with "keys"')
    keys = by["keys"]
    try:
        keys, min_count = gr.check_by(keys, by.get("min_count", 1))
    except Exception:
        raise bad('"by": keys or min_count') from None
    name = by.get("sidecar")
    if not isinstance(name, str) or "/" in name or name in ("", ".", ".."):
        raise bad('"by": sidecar must be a file name beside the statistics file')
    path = Path(source).with_name(name)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise StatsFileError(
            f"{source}: its per-key statistics {path} are missing; copy the sidecar beside"
            " the statistics file, or re-create both with `bnorm fit --by ...`"
        ) from None
    except (OSError, pa.ArrowException) as e:
        raise StatsFileError(f"{path}: not a readable Parquet sidecar ({e})") from None
    token = (table.schema.metadata or {}).get(_ID_KEY, b"").decode()
    if token != by.get("sidecar_id"):
        raise StatsFileError(
            f"{source}: {path} belongs to another fit (its sidecar_id differs); re-create"
            " both with `bnorm fit --by ...`"
        )
    state = model.state_
    assert state is not None
    columns = state.columns
    groups = table.num_rows
    if groups != by.get("groups"):
        raise bad(f"the sidecar has {groups} groups, the file says {by.get('groups')}")
    for name in [*keys, *columns]:
        if name not in table.column_names:
            raise bad(f'the sidecar has no column "{name}"')
    fold = gr.GroupFold(keys, columns, model.batch_size, model.momentum, min_count)
    frame = pl.from_arrow(table.select(keys))
    assert isinstance(frame, pl.DataFrame)
    fold.index = gr.GroupIndex(
        keys, frame.with_columns(pl.int_range(0, groups, dtype=pl.Int64).alias(gr.GROUP_ID))
    )
    stats = gr.GroupStats.empty(columns, groups)
    for j, c in enumerate(columns):
        struct = table.column(c).combine_chunks()
        for name, attr in (*_FIELDS, *_RUNNING):
            arr = struct.field(name).to_numpy(zero_copy_only=False)
            target = getattr(stats.running if (name, attr) in _RUNNING else stats.population, attr)
            if attr in ("n", "missing", "updates"):
                target[:, j] = arr.astype(np.int64)
            else:
                fill = np.nan if attr in ("min", "max") else 0.0
                target[:, j] = np.where(np.isnan(arr), fill, arr)
        total = int(stats.population.n[:, j].sum())
        if total != int(state.population.n[j]):
            raise bad(
                f'column "{c}": the groups count {total} values, the fit {state.population.n[j]}'
            )
    pop, run = stats.population, stats.running
    if (pop.var < 0).any() or (run.var < 0).any() or not np.isfinite(pop.var).all():
        raise bad("a group variance is negative or not finite")
    fold.stats = stats
    state.groups = fold
