"""The ``--by`` variants of fit, transform and normalize (per-key statistics).

`app` parses the options and hands over here when ``--by`` is given (or, for
transform, when the statistics file holds per-key statistics); the work is
`engines.grouped`'s, the files `io.groups_file`'s (both imported by the commands
below, so a run without ``--by`` does not load them). The checks and the report are
the ones every command uses (`checks`, `reporting`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import polars as pl

from ..core.errors import UsageError
from ..core.model import BatchNorm, Mode, Use
from ..io import stats_file, streams
from ..io.atomic import staged
from ..io.inputs import open_inputs
from ..report import summary as report
from .checks import check_paths, checked, normalize_warnings, refuse_warnings, run_warnings
from .options import RunOptions, names
from .reporting import columns_text, finish, output_line, progress, report_fit

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


def _open(model: BatchNorm, keys: list[str], run: RunOptions) -> Any:
    """open_inputs for fit/normalize: key columns read as they are, not as numbers."""
    given = list(model.exclude)
    _exclude_keys(model, keys)
    try:
        return open_inputs(
            run.inputs, run.input_format, model, False, run.encoding, False, text=run.text
        )
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


def fit(
    model: BatchNorm,
    keys: list[str],
    min_count: int,
    run: RunOptions,
    stats: str,
    as_json: bool,
) -> None:
    from ..engines import grouped
    from ..io import groups_file

    if report.is_html(run.report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    groups_file.check_target(stats)
    sidecar = str(groups_file.sidecar_path(stats))
    check_paths(run.inputs, s=stats, sidecar=sidecar, report=run.report_path)
    if run.report_path:
        report.check_report_path(run.report_path)
    if as_json:
        streams.stdout()
    source = _open(model, keys, run)
    with progress("fit --by", source.total_rows, run.quiet) as advance:
        fb = grouped.fit(model, source, keys, min_count, advance)
    warnings = [
        *run_warnings(model, run.strict, source.warnings, fitting=True),
        *_notes(fb, min_count, True),
    ]
    model.reading_ = run.reading_record()
    stats_file.save(model, stats)
    wrote = (
        f"{stats} ({columns_text(len(model.columns_))}, {fb.groups:,} groups in"
        f" {groups_file.sidecar_path(stats).name})"
    )
    groups = {"groups": {"count": fb.groups, "rare": fb.rare_groups}}
    report_fit(
        model,
        stats,
        source.name,
        warnings,
        wrote,
        run.report_path,
        run.quiet,
        as_json,
        extra=groups,
    )


def transform(
    model: BatchNorm,
    keys: list[str],
    min_count: int | None,
    run: RunOptions,
    stats: str,
    output: str,
    out_fmt: str,
    use: Use,
    dtype: type[pl.DataType],
    inverse: bool,
) -> None:
    from ..engines import grouped
    from ..io import groups_file
    from ..io.writers import write_batches

    state = model.state_
    assert state is not None
    check_paths([*run.inputs, stats, str(groups_file.sidecar_path(stats))], o=output)
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
    if report.is_html(run.report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    if min_count is not None:
        from ..core import groups as gr

        fold.min_count = gr.check_by(fold.keys, min_count)[1]
    source = open_inputs(
        run.inputs, run.input_format, model, True, run.encoding, False, text=run.text
    )
    fb = grouped.Fallbacks()
    warnings = run_warnings(
        model, run.strict, source.warnings, uses_running=use == "running", fitting=False
    )
    with progress("transform --by", source.total_rows, run.quiet) as advance:
        schema, batches = grouped.transform(model, source, use, dtype, inverse, advance, fb)
        check = lambda: refuse_warnings(_notes(fb, fold.min_count, False), run.strict)  # noqa: E731
        rows = write_batches(output, out_fmt, schema, checked(batches, check))
    warnings += _notes(fb, fold.min_count, False)
    rep = report.build("transform", source.name, model, rows, warnings=warnings)
    finish(rep, run.report_path, run.quiet, model, None, (output_line(output, rows),))


def normalize(
    model: BatchNorm,
    keys: list[str],
    min_count: int,
    run: RunOptions,
    output: str,
    out_fmt: str,
    mode: Mode,
    stats: str | None,
    dtype: type[pl.DataType],
) -> None:
    from ..engines import grouped
    from ..io import groups_file
    from ..io.writers import write_batches

    if mode == "renorm":  # grouped.normalize has batch and running modes only
        raise UsageError(
            "--mode renorm cannot be combined with --by yet; use --mode batch or running"
        )
    if report.is_html(run.report_path):
        raise UsageError("--report .html cannot be combined with --by yet; write .md or .json")
    if stats:
        groups_file.check_target(stats)
    sidecar = str(groups_file.sidecar_path(stats)) if stats else None
    check_paths(run.inputs, o=output, s=stats, sidecar=sidecar, report=run.report_path)
    source = _open(model, keys, run)
    fb = grouped.Fallbacks()
    warnings: list[str] = []
    with contextlib.ExitStack() as stack:
        put_stats = stack.enter_context(staged(stats)) if stats else None
        put_sidecar = stack.enter_context(staged(sidecar)) if sidecar else None

        def check() -> None:
            warnings[:] = normalize_warnings(model, run.strict, source.warnings, mode)
            refuse_warnings(_notes(fb, min_count, False), run.strict)
            if stats and put_stats is not None and put_sidecar is not None:
                model.reading_ = run.reading_record()
                groups_file.staged_pair(model, stats, stats_file.dumps)(put_stats, put_sidecar)

        with progress(f"normalize --by ({mode})", source.total_rows, run.quiet) as advance:
            schema, batches = grouped.normalize(
                model, source, keys, min_count, mode, dtype, advance, fb
            )
            rows = write_batches(output, out_fmt, schema, checked(batches, check))
    warnings += _notes(fb, min_count, False)
    wrote = [output_line(output, rows)]
    if stats:
        wrote.append(f"{stats} ({columns_text(len(model.columns_))}, {fb.groups:,} groups)")
    rep = report.build(
        f"normalize --mode {mode} --by", source.name, model, model.rows_, warnings=warnings
    )
    finish(rep, run.report_path, run.quiet, model, None, tuple(wrote))
