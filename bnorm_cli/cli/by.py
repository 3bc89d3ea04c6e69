"""The ``--by`` variants of fit, transform and normalize (per-key statistics).

`app` parses the options and hands over here when ``--by`` is given (or, for
transform, when the statistics file holds per-key statistics); the work is
`engines.grouped`'s, the files `io.groups_file`'s (both imported by the commands
below, so a run without ``--by`` does not load them).
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any

import polars as pl

from ..core.errors import UsageError
from ..core.model import BatchNorm, Mode, Use
from ..io import stats_file, streams
from ..io.atomic import staged
from ..io.inputs import open_inputs
from ..io.readers import TextOptions
from ..report import summary as report
from .options import names

if TYPE_CHECKING:
    from ..engines import grouped


def keys_of(by: list[str] | None, min_count: int | None) -> tuple[list[str], int]:
    """``--by`` and ``--min-count``, checked (``--min-count`` needs ``--by``)."""
    if not by:
        if min_count is not None:
            raise UsageError("--min-count needs --by (it applies to per-key statistics)")
        return [], 1
    from ..core import groups as gr

    return gr.check_by(names(by) or [], 1 if min_count is None else min_count)


def refuse(**given: object) -> None:
    """Options that per-key normalization does not support yet: a usage error."""
    for flag, value in given.items():
        if value:
            raise UsageError(f"--{flag.replace('_', '-')} cannot be combined with --by yet")


def float_type(dtype: str | type[pl.DataType] | None) -> type[pl.DataType]:
    """--dtype for per-key output: float64 or float32 (not "same" yet)."""
    if dtype is None:
        return pl.Float64
    if isinstance(dtype, str):
        raise UsageError("--dtype same cannot be combined with --by yet; use float64 or float32")
    return dtype


def refuse_scaling(model: BatchNorm) -> None:
    """Per-key statistics are mean/std only for now."""
    if not model.scaling.is_default:
        raise UsageError(
            "--center/--scale other than mean/std cannot be combined with --by yet; per-key"
            " statistics are means and standard deviations"
        )


def no_groups(model: BatchNorm, stats: str, command: str) -> BatchNorm:
    """Commands that do not handle per-key statistics yet refuse them (rather than
    use only the global ones)."""
    if model.state_ is not None and model.state_.groups is not None:
        raise UsageError(
            f"{stats}: holds per-key statistics (--by); bnorm {command} does not handle them"
            " yet (only transform and inspect do)"
        )
    return model


def _exclude_keys(model: BatchNorm, keys: list[str]) -> None:
    if model.columns is not None:
        for k in keys:
            if k in model.columns:
                raise UsageError(
                    f'--by: key column "{k}" is also named by -c/--columns; key columns are'
                    " never normalized: leave it out of -c"
                )
    model.exclude = [*model.exclude, *(k for k in keys if k not in model.exclude)]


def _open(model: BatchNorm, keys: list[str], inputs: list[str], *args: Any, **kw: Any) -> Any:
    """open_inputs for fit/normalize: key columns read as they are, not as numbers."""
    given = list(model.exclude)
    _exclude_keys(model, keys)
    try:
        return open_inputs(inputs, *args, **kw)
    except UsageError as e:
        for k in keys:
            if k not in given and f'no column "{k}"' in str(e):
                rest = str(e).split(f'no column "{k}"', 1)[1].removeprefix(" in the input")
                raise UsageError(f'--by: no column "{k}" in the input{rest}') from None
        raise


def _notes(fb: grouped.Fallbacks, min_count: int, fitting: bool) -> list[str]:
    out = []
    if fb.rare_groups and (fitting or min_count > 1):
        out.append(
            f"{fb.rare_groups:,} of {fb.groups:,} groups have fewer than {min_count} valid"
            " value(s) in some column; they use the global statistics there (lower"
            " --min-count to keep their own)"
        )
    if fb.unseen_rows:
        out.append(
            f"{fb.unseen_rows:,} rows in {fb.unseen_groups:,} group(s) unseen at fit used the"
            " global statistics; refit on data that holds these keys if they matter"
        )
    if fb.rare_rows and not fitting:
        out.append(
            f"{fb.rare_rows:,} rows of rare groups (fewer than --min-count {min_count} values)"
            " used the global statistics"
        )
    return out


def _strict(notes: list[str], strict: bool) -> None:
    if strict and notes:
        from ..core.errors import DataError

        more = f" (and {len(notes) - 1} more)" if len(notes) > 1 else ""
        raise DataError(f"--strict: {notes[0]}{more}")


def fit(
    model: BatchNorm,
    keys: list[str],
    min_count: int,
    inputs: list[str],
    stats: str,
    input_format: str | None,
    encoding: str,
    text: TextOptions,
    quiet: bool,
    strict: bool,
    report_path: str | None,
    as_json: bool,
) -> None:
    from ..engines import grouped
    from ..io import groups_file
    from .app import _check_paths, _columns, _finish, _progress, _warnings, reading_record

    if report.is_html(report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    groups_file.check_target(stats)
    _check_paths(inputs, s=stats, sidecar=str(groups_file.sidecar_path(stats)), report=report_path)
    if report_path:
        report.check_report_path(report_path)
    if as_json:
        streams.stdout()
    source = _open(model, keys, inputs, input_format, model, False, encoding, False, text=text)
    with _progress("fit --by", source.total_rows, quiet) as advance:
        fb = grouped.fit(model, source, keys, min_count, advance)
    warnings = [
        *_warnings(model, strict, source.warnings, fitting=True),
        *_notes(fb, min_count, True),
    ]
    model.reading_ = reading_record(text, encoding)
    stats_file.save(model, stats)
    rep = report.build("fit", source.name, model, model.rows_, warnings=warnings)
    wrote = (
        f"{stats} ({_columns(len(model.columns_))}, {fb.groups:,} groups in"
        f" {groups_file.sidecar_path(stats).name})",
    )
    _finish(rep, report_path, quiet, model, None, wrote)
    if as_json:
        doc: dict[str, Any] = {"stats": stats, **json.loads(report.to_json(rep))}
        doc["groups"] = {"count": fb.groups, "rare": fb.rare_groups}
        streams.write_stdout(json.dumps(doc, indent=2) + "\n")


def transform(
    model: BatchNorm,
    keys: list[str],
    min_count: int | None,
    inputs: list[str],
    stats: str,
    output: str,
    out_fmt: str,
    use: Use,
    dtype: type[pl.DataType],
    inverse: bool,
    input_format: str | None,
    encoding: str,
    text: TextOptions,
    quiet: bool,
    strict: bool,
    report_path: str | None,
) -> None:
    from ..engines import grouped
    from ..io import groups_file
    from ..io.writers import write_batches
    from .app import _check_paths, _checked, _finish, _output_name, _progress, _rows, _warnings

    state = model.state_
    assert state is not None
    _check_paths([*inputs, stats, str(groups_file.sidecar_path(stats))], o=output)
    if state.groups is None:
        raise UsageError(
            f"--by: {stats} holds global statistics only; fit with --by {','.join(keys)} first"
        )
    fold = state.groups
    if keys and keys != fold.keys:
        raise UsageError(
            f"--by {','.join(keys)}: {stats} was fitted with --by {','.join(fold.keys)};"
            " give the same keys, or leave --by out"
        )
    if report.is_html(report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    if min_count is not None:
        from ..core import groups as gr

        fold.min_count = gr.check_by(fold.keys, min_count)[1]
    source = open_inputs(inputs, input_format, model, True, encoding, False, text=text)
    fb = grouped.Fallbacks()
    warnings = _warnings(
        model, strict, source.warnings, uses_running=use == "running", fitting=False
    )
    with _progress("transform --by", source.total_rows, quiet) as advance:
        schema, batches = grouped.transform(model, source, use, dtype, inverse, advance, fb)
        check = lambda: _strict(_notes(fb, fold.min_count, False), strict)  # noqa: E731
        rows = write_batches(output, out_fmt, schema, _checked(batches, check))
    warnings += _notes(fb, fold.min_count, False)
    rep = report.build("transform", source.name, model, rows, warnings=warnings)
    _finish(rep, report_path, quiet, model, None, (f"{_output_name(output)} ({_rows(rows)})",))


def normalize(
    model: BatchNorm,
    keys: list[str],
    min_count: int,
    inputs: list[str],
    output: str,
    out_fmt: str,
    mode: Mode,
    stats: str | None,
    dtype: type[pl.DataType],
    input_format: str | None,
    encoding: str,
    text: TextOptions,
    quiet: bool,
    strict: bool,
    report_path: str | None,
) -> None:
    from ..engines import grouped
    from ..io import groups_file
    from ..io.writers import write_batches
    from .app import (
        _checked,
        _columns,
        _finish,
        _output_name,
        _progress,
        _rows,
        _warnings,
        reading_record,
    )

    if report.is_html(report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    if stats:
        groups_file.check_target(stats)
    sidecar = str(groups_file.sidecar_path(stats)) if stats else None
    from .app import _check_paths

    _check_paths(inputs, o=output, s=stats, sidecar=sidecar, report=report_path)
    source = _open(model, keys, inputs, input_format, model, False, encoding, False, text=text)
    fb = grouped.Fallbacks()
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        put_stats = stack.enter_context(staged(stats)) if stats else None
        put_sidecar = stack.enter_context(staged(sidecar)) if sidecar else None

        def check() -> None:
            running = mode == "running"
            warnings[:] = _warnings(
                model,
                strict,
                source.warnings,
                fitting=True,
                uses_running=running,
                batch_mode=not running,
            )
            _strict(_notes(fb, min_count, False), strict)
            if stats and put_stats is not None and put_sidecar is not None:
                model.reading_ = reading_record(text, encoding)
                groups_file.staged_pair(model, stats, stats_file.dumps)(put_stats, put_sidecar)

        with _progress(f"normalize --by ({mode})", source.total_rows, quiet) as advance:
            schema, batches = grouped.normalize(
                model, source, keys, min_count, mode, dtype, advance, fb
            )
            rows = write_batches(output, out_fmt, schema, _checked(batches, check))
    warnings += _notes(fb, min_count, False)
    wrote = [f"{_output_name(output)} ({_rows(rows)})"]
    if stats:
        wrote.append(f"{stats} ({_columns(len(model.columns_))}, {fb.groups:,} groups)")
    rep = report.build(
        f"normalize --mode {mode} --by", source.name, model, model.rows_, warnings=warnings
    )
    _finish(rep, report_path, quiet, model, None, tuple(wrote))
