"""The `bnorm` command line: thin Typer commands over `BatchNorm` and the pipeline."""

from __future__ import annotations

import contextlib
import json
import os
import sys
from enum import StrEnum
from typing import Annotated, Any

import typer

from ..core import drift as dr
from ..core.errors import DataError, UsageError, phrase
from ..core.model import DEFAULT_BATCH_SIZE
from ..core.model import merge as merge_models
from ..core.scalers import check_running
from ..engines import serial
from ..io import stats_file, streams
from ..io.atomic import staged, write_text
from ..io.inputs import expand_inputs, open_inputs
from ..io.readers import Source
from ..io.storage import is_url
from ..report import summary as report
from ..version import __version__
from . import by as by_cli
from .checks import (
    check_dataset_output,
    check_paths,
    checked,
    dask_units,
    normalize_warnings,
    out_format,
    run_warnings,
    withholdable,
)
from .drift_run import check_drift_report, drift_watch, finish_drift
from .exits import OneLineErrors, handled, run
from .fit_update import FitCommand, check_same_options, given_options
from .model_options import build_model, engine_dtype, renorm_options, renorm_parameters
from .options import (
    BatchSize,
    Beta,
    By,
    Center,
    Columns,
    Debug,
    DecimalComma,
    Delimiter,
    DMax,
    DriftReport,
    DriftThreshold,
    DType,
    DTypeOpt,
    Encoding,
    Engine,
    EngineOpt,
    Eps,
    Exclude,
    FailOnDrift,
    FeatureRange,
    Gamma,
    Inf,
    InfOpt,
    InputFormat,
    Inputs,
    MinCount,
    ModeOpt,
    MomentumOpt,
    NoDefaultNulls,
    NullValues,
    Output,
    OutputFormat,
    Overwrite,
    QuantileRange,
    Quiet,
    Ramp,
    RenormMomentum,
    ReportPath,
    RMax,
    RunOptions,
    Scale,
    ScaleOpt,
    Scheduler,
    StatsIn,
    StatsOut,
    Strict,
    UseStats,
    Warmup,
    Weight,
    Workers,
    names,
    per_column,
    reading_record,
    text_options,
)
from .reporting import (
    columns_text,
    finish,
    html_profile,
    note_wrote,
    output_line,
    progress,
    report_fit,
    rows_text,
    run_parameters,
)

app = typer.Typer(
    name="bnorm",
    cls=OneLineErrors,
    help="Batch-normalize tabular data larger than memory, in mini-batches"
    " (CSV, TSV, Parquet, Arrow IPC, NDJSON; files or pipes).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bnorm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "-V",
            "--version",
            callback=_version,
            is_eager=True,
            help="Show the version and exit.",
            metavar="",
        ),
    ] = False,
) -> None:
    """Batch Normalization for tabular data: fit, transform, normalize, inspect."""


# -- commands ------------------------------------------------------------------
@app.command(cls=FitCommand)
def fit(
    ctx: typer.Context,
    inputs: Inputs,
    stats: StatsOut,
    update: Annotated[
        str | None,
        typer.Option(
            "--update",
            help="Continue the fit saved in OLD.json (default: STATS) with the input (its"
            " batches follow the saved ones) and write it to STATS (may be OLD.json itself);"
            " the options come from OLD.json.",
            metavar="[OLD.json]",
        ),
    ] = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    momentum: MomentumOpt = "0.1",
    eps: Eps = 1e-5,
    columns: Columns = None,
    exclude: Exclude = None,
    gamma: Gamma = None,
    beta: Beta = None,
    center: Center = None,
    scale: Scale = ScaleOpt.std,
    feature_range: FeatureRange = None,
    quantile_range: QuantileRange = None,
    input_format: InputFormat = None,
    encoding: Encoding = "utf-8",
    delimiter: Delimiter = None,
    null_values: NullValues = None,
    no_default_nulls: NoDefaultNulls = False,
    decimal_comma: DecimalComma = False,
    inf: Inf = InfOpt.error,
    weight: Weight = None,
    report_path: ReportPath = None,
    sketch: Annotated[
        bool,
        typer.Option(
            "--sketch/--no-sketch",
            help="Record each column's distribution summary (what `bnorm drift` compares with).",
        ),
    ] = True,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print the report as JSON on stdout (for scripts).", metavar=""
        ),
    ] = False,
    engine: Engine = EngineOpt.serial,
    scheduler: Scheduler = None,
    workers: Workers = None,
    by: By = None,
    min_count: MinCount = None,
    quiet: Quiet = False,
    strict: Strict = False,
    debug: Debug = False,
) -> None:
    """Stream the input once and write its statistics file.

    Records the exact population mean/variance and PyTorch-style running
    statistics of every normalized column, plus gamma and beta, and (unless
    --no-sketch) each column's distribution summary for `bnorm drift`.
    """
    with handled(debug, "bnorm fit"):
        keys, count = by_cli.keys_of(by, min_count)
        if keys:
            by_cli.refuse(update=update is not None, weight=weight,
                          engine_dask=engine is not EngineOpt.serial)  # fmt: skip
        if update is not None:
            old = update or stats
            model = by_cli.no_groups(stats_file.load(old), old, "fit --update")
            if model.imported_ is not None:
                raise UsageError(
                    f"--update: {old} holds statistics imported from"
                    f" {model.imported_['file']}, without the counts a fit continues from;"
                    " fit without --update"
                )
            fresh = build_model(
                batch_size, momentum, eps, columns, exclude, gamma, beta, inf, sketch
            )
            check_same_options(given_options(ctx), fresh, model, old)
        else:
            model = build_model(
                batch_size,
                momentum,
                eps,
                columns,
                exclude,
                gamma,
                beta,
                inf,
                sketch,
                weight,
                (center, scale, feature_range, quantile_range),
            )
        if keys:
            by_cli.refuse_scaling(model)
            text = text_options(delimiter, null_values, no_default_nulls, decimal_comma)
            run = RunOptions(inputs, input_format, encoding, text, quiet, strict, report_path)
            by_cli.fit(model, keys, count, run, stats, as_json)
            return
        if report_path:
            report.check_report_path(report_path)
        profile = html_profile(report_path)
        check_paths(inputs, s=stats, report=report_path)
        if as_json:
            streams.stdout()  # closed (>&-): say so before the pass
        text = text_options(delimiter, null_values, no_default_nulls, decimal_comma)
        resume = update is not None
        source = open_inputs(inputs, input_format, model, resume, encoding, True, text=text)

        def reopen(columns: list[str]) -> Source:
            return open_inputs(
                inputs, input_format, model, False, encoding, True, only=columns, text=text
            )

        # columnar regular files (not stdin, not a FIFO) can be read again, column by column
        columnar = all(
            f.fmt in ("parquet", "ipc") and f.path != "-" and os.path.isfile(f.path)
            for f in expand_inputs(inputs, input_format)
        )
        units = dask_units(engine, scheduler, workers, inputs, input_format, report_path)
        if units is not None and model.scaling.needs_quantiles:
            from ..engines.dask_engine import DASK_QUANTILES

            raise UsageError(DASK_QUANTILES)

        def again() -> Source:  # the whole input anew, for exact quantiles
            return open_inputs(
                inputs, input_format, model, True, encoding, True, only=model.columns_, text=text
            )

        with progress("fit", source.total_rows, quiet) as advance:
            if units is None:
                serial.fit(
                    model,
                    source,
                    advance,
                    profile,
                    reopen if columnar else None,
                    resume=resume,
                    again=again if _rereadable(inputs, input_format) else None,
                )
            else:
                from ..engines import dask_engine

                serial.start(model, source, resume=resume)
                with dask_engine.connect(scheduler, workers) as client:
                    dask_engine.fit(model, units, client, source.name, advance)
        warnings = run_warnings(model, strict, source.warnings, fitting=True)
        model.reading_ = reading_record(text, encoding)
        stats_file.save(model, stats)
        wrote = f"{stats} ({columns_text(len(model.columns_))})"
        report_fit(model, stats, source.name, warnings, wrote, report_path, quiet, as_json, profile)


@app.command()
def transform(
    inputs: Inputs,
    stats: StatsIn,
    output: Output,
    use: Annotated[
        UseStats, typer.Option("--use", help="Population statistics, or the running ones.")
    ] = UseStats.population,
    inverse: Annotated[
        bool,
        typer.Option(
            "--inverse", help="Map normalized data back to the original units.", metavar=""
        ),
    ] = False,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    eps: Annotated[
        float | None, typer.Option("--eps", help="Override the saved eps.", metavar="EPS")
    ] = None,
    columns: Columns = None,
    exclude: Exclude = None,
    gamma: Gamma = None,
    beta: Beta = None,
    input_format: InputFormat = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help=r"Text encoding of CSV input \[default: as fitted]",
            metavar="ENCODING",
            show_default=False,
        ),
    ] = None,
    delimiter: Delimiter = None,
    null_values: NullValues = None,
    no_default_nulls: NoDefaultNulls = False,
    decimal_comma: DecimalComma = False,
    output_format: OutputFormat = None,
    dtype: Annotated[
        DType | None,
        typer.Option(
            "--dtype",
            help="Type of the normalized columns; same: float32 columns stay float32."
            r" With --inverse: the fitted types (integers rounded back) \[default: float64;"
            " same with --inverse]",
            show_default=False,
        ),
    ] = None,
    inf: Annotated[
        InfOpt | None,
        typer.Option(
            "--inf",
            help="+/-inf in a normalized column: stop with an error, or treat as missing."
            r" \[default: as fitted]",
        ),
    ] = None,
    weight: Annotated[
        str | None,
        typer.Option(
            "--weight",
            help="Weigh the input statistics of the report by this column (the maps are"
            r" the saved ones) \[default: the fitted weight column, if the input has it]",
            metavar="COL",
        ),
    ] = None,
    report_path: ReportPath = None,
    drift: Annotated[
        bool,
        typer.Option(
            "--drift",
            help="Also compare the input with the fitted data (drift table; one warning line"
            " per drifted column), in the same pass.",
        ),
    ] = False,
    fail_on_drift: FailOnDrift = False,
    drift_threshold: DriftThreshold = None,
    drift_report_path: DriftReport = None,
    engine: Engine = EngineOpt.serial,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    by: By = None,
    min_count: MinCount = None,
    quiet: Quiet = False,
    strict: Strict = False,
    debug: Debug = False,
) -> None:
    """Normalize with saved statistics (Batch Normalization inference mode)."""
    from ..io.writers import write_batches

    with handled(debug, "bnorm transform"):
        drift = drift or fail_on_drift or drift_report_path is not None
        thresholds = dr.Thresholds.parse(drift_threshold)
        if drift_threshold and not drift:
            raise UsageError("--drift-threshold needs --drift (or --fail-on-drift)")
        if fail_on_drift and not withholdable(output):
            raise UsageError(
                f"--fail-on-drift: drift is known only after the last row, and the output"
                f" {'stdout' if output == '-' else output} cannot be withheld; run"
                " `bnorm drift STATS INPUT` first, or write to a file (-o out.parquet)"
            )
        loaded = stats_file.load(stats)
        model = loaded.adjusted(
            columns=names(columns),
            exclude=names(exclude),
            gamma=per_column(gamma, "--gamma"),
            beta=per_column(beta, "--beta"),
            eps=eps,
            inf=None if inf is None else inf.value,  # type: ignore[arg-type]
            batch_size=batch_size,
            weight=weight,
        )
        if not model.columns_:
            raise DataError(
                "-c/-x leave none of the fitted columns to normalize; name at least one with -c"
            )
        if report_path:
            report.check_report_path(report_path)
        profile = html_profile(report_path)
        units = dask_units(engine, scheduler, workers, inputs, input_format, report_path)
        if weight is not None and units is not None:
            raise UsageError(
                "transform --weight weighs the report's input statistics, which --engine dask"
                " does not compute; leave --weight out (the maps are the same) or use --engine"
                " serial"
            )
        if units is not None:
            if drift or fail_on_drift or drift_report_path:
                raise UsageError(
                    "--drift gathers its table while streaming; use it with --engine serial"
                )
            check_dataset_output(output, [*inputs, stats], output_format, overwrite)
            check_paths([*inputs, stats], report=report_path)
        else:
            out_fmt = out_format(output, output_format)
            check_paths(
                [*inputs, stats], o=output, report=report_path, drift_report=drift_report_path
            )
        check_drift_report(drift_report_path)
        watch = drift_watch(model, stats) if drift else None
        # CSV is read as fit read it, unless told otherwise
        recorded = loaded.reading_
        saved = recorded.get("encoding")
        encoding = encoding or (saved if isinstance(saved, str) else "utf-8")
        text = text_options(delimiter, null_values, no_default_nulls, decimal_comma, recorded)
        keys = names(by) or []
        if keys or min_count is not None or loaded.state_.groups is not None:  # type: ignore[union-attr]
            by_cli.refuse(drift=drift, weight=weight, engine_dask=units is not None)
            run = RunOptions(inputs, input_format, encoding, text, quiet, strict, report_path)
            by_cli.transform(model, keys, min_count, run, stats, output, out_fmt, use.value,
                             by_cli.float_type(engine_dtype(dtype)), inverse)  # fmt: skip
            return
        source = open_inputs(inputs, input_format, model, True, encoding, False, text=text)
        if weight is not None and weight not in source.schema.names:
            raise UsageError(f'--weight: no column "{weight}" in the input')
        if inverse:
            model.check_invertible(model.maps(use.value))
        warnings = run_warnings(
            model, strict, source.warnings, uses_running=use.value == "running", fitting=False
        )
        if units is not None:
            serial.check_fitted(model, source)
            from ..engines import dask_engine

            with (
                progress("transform", source.total_rows, quiet) as advance,
                dask_engine.connect(scheduler, workers) as client,
            ):
                rows = dask_engine.transform(
                    model,
                    units,
                    source.schema,
                    client,
                    source.name,
                    output,
                    use.value,
                    engine_dtype(dtype),
                    inverse,
                    advance,
                    overwrite=overwrite,
                )
            if not quiet or report_path:
                rep = report.build("transform", source.name, model, rows, warnings=warnings)
                wrote = (f"{output} ({rows_text(rows)} in Parquet parts)",)
                finish(rep, report_path, quiet, model, None, wrote)
            return
        wanted = report_path is not None or not quiet
        observed: dict[str, Any] | None = {} if wanted else None

        def gate() -> None:  # after the last row, before the output is complete
            assert watch is not None
            found = dr.drifted(watch.results(thresholds))
            if found and fail_on_drift:
                names = ", ".join(d.column for d in found)
                raise dr.DriftFound(
                    f"{source.name}: {len(found)} column(s) drifted from {stats} ({names});"
                    " the output was not written (--fail-on-drift)",
                    found,
                )
            if found:  # --strict: a drift warning is an error like the others (exit 1)
                more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
                raise dr.DriftWarned(
                    f"--strict: {source.name}: {dr.warning_line(found[0])}{more}", found
                )

        with progress("transform", source.total_rows, quiet) as advance:
            schema, batches = serial.transform(
                model,
                source,
                use.value,
                engine_dtype(dtype),
                inverse,
                observed,
                advance,
                profile,
                watch=watch,
                gate=gate if fail_on_drift or (strict and watch is not None) else None,
            )
            try:
                rows = write_batches(output, out_fmt, schema, batches)
            except (dr.DriftFound, dr.DriftWarned):
                assert watch is not None
                finish_drift(
                    "transform",
                    stats,
                    source.name,
                    watch,
                    thresholds,
                    drift_report_path,
                    quiet,
                    warn=False,
                )
                raise
        wrote = (output_line(output, rows),)
        if observed is not None:
            rep = report.build("transform", source.name, model, rows, observed, warnings)
            params = run_parameters(model, ("statistics", f"{stats} (--use {use.value})"))
            finish(rep, report_path, quiet, model, profile, wrote, params)
        if watch is not None:
            finish_drift(
                "transform",
                stats,
                source.name,
                watch,
                thresholds,
                drift_report_path,
                quiet,
                warn=True,
            )


@app.command("drift")
def drift_command(
    stats: Annotated[
        str, typer.Argument(help="Statistics file written by `bnorm fit`.", show_default=False)
    ],
    inputs: Inputs,
    columns: Columns = None,
    exclude: Exclude = None,
    input_format: InputFormat = None,
    encoding: Annotated[
        str | None,
        typer.Option(
            "--encoding",
            help="Text encoding of CSV input." r" \[default: as fitted]",
            metavar="ENCODING",
        ),
    ] = None,
    inf: Annotated[
        InfOpt | None,
        typer.Option(
            "--inf",
            help="+/-inf in a compared column: stop with an error, or treat as missing."
            r" \[default: as fitted]",
        ),
    ] = None,
    drift_threshold: DriftThreshold = None,
    fail_on_drift: FailOnDrift = False,
    drift_report_path: DriftReport = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the drift report as JSON on stdout.")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Compare new data with the fitted data, per column (reads only those columns).

    Metrics: PSI on the fit's deciles, standardized mean difference, variance
    ratio, binned KS, Wasserstein-1 / fitted std, null-rate change, share
    outside the fitted [min, max]. PSI and |SMD| decide the verdict by default.
    """
    with handled(debug, "bnorm drift"):
        thresholds = dr.Thresholds.parse(drift_threshold)
        loaded = stats_file.load(stats)
        model = loaded.adjusted(
            columns=names(columns),
            exclude=names(exclude),
            inf=None if inf is None else inf.value,  # type: ignore[arg-type]
        )
        if not model.columns_:
            raise DataError("-c/-x leave none of the fitted columns to compare; name one with -c")
        check_paths([*inputs, stats], drift_report=drift_report_path)
        check_drift_report(drift_report_path)
        watch = drift_watch(model, stats)
        # CSV is read as fit read it (delimiter, null tokens, decimal commas, encoding)
        recorded = loaded.reading_
        saved = recorded.get("encoding")
        encoding = encoding or (saved if isinstance(saved, str) else "utf-8")
        text = text_options(None, None, False, False, recorded)
        source = open_inputs(inputs, input_format, model, True, encoding, True, text=text)
        with progress("drift", source.total_rows, quiet) as advance:
            serial.drift(model, source, watch, advance)
        rep = finish_drift(
            "drift",
            stats,
            source.name,
            watch,
            thresholds,
            drift_report_path,
            quiet,
            warn=not fail_on_drift,
        )
        if as_json:
            from ..report import drift as drift_report

            sys.stdout.write(drift_report.to_json(rep))
        found = [d for d in rep.columns if d.verdict == "drift"]
        if fail_on_drift and found:
            raise dr.DriftFound(
                f"{source.name}: {len(found)} column(s) drifted from {stats}"
                f" ({', '.join(d.column for d in found)})",
                found,
            )


@app.command()
def normalize(
    inputs: Inputs,
    output: Output,
    mode: Annotated[
        ModeOpt,
        typer.Option(
            "--mode",
            help="batch: each batch's own statistics (BN training); running: the running"
            " statistics, updated by each batch and then applied to it; renorm: batch"
            " renormalization (each batch's statistics corrected toward the moving ones by"
            " clipped r and d).",
        ),
    ] = ModeOpt.batch,
    stats: Annotated[
        str | None,
        typer.Option(
            "-s", "--stats", help="Also save the tracked statistics here.", metavar="PATH"
        ),
    ] = None,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    momentum: MomentumOpt = "0.1",
    renorm_momentum: RenormMomentum = None,
    rmax: RMax = None,
    dmax: DMax = None,
    warmup: Warmup = None,
    ramp: Ramp = None,
    eps: Eps = 1e-5,
    columns: Columns = None,
    exclude: Exclude = None,
    gamma: Gamma = None,
    beta: Beta = None,
    center: Center = None,
    scale: Scale = ScaleOpt.std,
    feature_range: FeatureRange = None,
    quantile_range: QuantileRange = None,
    input_format: InputFormat = None,
    encoding: Encoding = "utf-8",
    delimiter: Delimiter = None,
    null_values: NullValues = None,
    no_default_nulls: NoDefaultNulls = False,
    decimal_comma: DecimalComma = False,
    output_format: OutputFormat = None,
    dtype: DTypeOpt = DType.float64,
    inf: Inf = InfOpt.error,
    weight: Weight = None,
    report_path: ReportPath = None,
    engine: Engine = EngineOpt.serial,
    scheduler: Scheduler = None,
    workers: Workers = None,
    overwrite: Overwrite = False,
    by: By = None,
    min_count: MinCount = None,
    quiet: Quiet = False,
    strict: Strict = False,
    debug: Debug = False,
) -> None:
    """One training-mode pass: normalize each batch as Batch Normalization does while training."""
    from ..io.writers import write_batches

    with handled(debug, "bnorm normalize"):
        renorm = renorm_options(
            mode, momentum=renorm_momentum, rmax=rmax, dmax=dmax, warmup=warmup, ramp=ramp
        )
        model = build_model(
            batch_size,
            momentum,
            eps,
            columns,
            exclude,
            gamma,
            beta,
            inf,
            True,
            weight,
            scaling=(center, scale, feature_range, quantile_range),
            renorm=renorm,
        )
        if mode in (ModeOpt.running, ModeOpt.renorm):
            check_running(model.scaling, f"--mode {mode.value}")
        if stats and model.scaling.needs_quantiles:
            raise UsageError(
                "-s: a statistics file with a median or IQR needs the quantiles of all the"
                " data, which normalize (one pass, per-batch statistics) does not compute;"
                " write it with `bnorm fit`"
            )
        keys, count = by_cli.keys_of(by, min_count)
        if keys:
            by_cli.refuse(weight=weight, engine_dask=engine is not EngineOpt.serial)
            by_cli.refuse_scaling(model)
            text = text_options(delimiter, null_values, no_default_nulls, decimal_comma)
            out_fmt = out_format(output, output_format)
            run = RunOptions(inputs, input_format, encoding, text, quiet, strict, report_path)
            by_cli.normalize(model, keys, count, run, output, out_fmt, mode.value, stats,
                             by_cli.float_type(engine_dtype(dtype)))  # fmt: skip
            return
        if report_path:
            report.check_report_path(report_path)
        profile = html_profile(report_path)
        units = dask_units(engine, scheduler, workers, inputs, input_format, report_path)
        if units is not None:
            check_dataset_output(output, inputs, output_format, overwrite)
            check_paths(inputs, s=stats, report=report_path)
        else:
            out_fmt = out_format(output, output_format)
            check_paths(inputs, o=output, s=stats, report=report_path)
        text = text_options(delimiter, null_values, no_default_nulls, decimal_comma)
        source = open_inputs(inputs, input_format, model, False, encoding, False, text=text)
        with progress(f"normalize ({mode.value})", source.total_rows, quiet) as advance:
            warnings: list[str] = []

            def check() -> None:
                warnings[:] = normalize_warnings(model, strict, source.warnings, mode.value)
                if put_stats is not None:  # written before the data output is renamed
                    # into place (a full disk there publishes nothing), renamed after it
                    model.reading_ = reading_record(text, encoding)
                    put_stats(stats_file.dumps(model).encode("utf-8"))

            with contextlib.ExitStack() as stack:
                put_stats = stack.enter_context(staged(stats)) if stats else None
                if units is not None:
                    from ..engines import dask_engine

                    serial.start(model, source)
                    with dask_engine.connect(scheduler, workers) as client:
                        rows = dask_engine.normalize(
                            model,
                            units,
                            source.schema,
                            client,
                            source.name,
                            output,
                            mode.value,
                            engine_dtype(dtype),
                            advance,
                            check=check,
                            overwrite=overwrite,
                        )
                else:
                    schema, batches = serial.normalize(
                        model, source, mode.value, engine_dtype(dtype), advance, profile
                    )
                    rows = write_batches(output, out_fmt, schema, checked(batches, check))
        wrote = [output_line(output, rows)]
        if stats:
            wrote.append(f"{stats} ({columns_text(len(model.columns_))})")
        rep = report.build(
            f"normalize --mode {mode.value}", source.name, model, model.rows_, warnings=warnings
        )
        params = run_parameters(model, ("mode", mode.value), *renorm_parameters(model, mode))
        finish(rep, report_path, quiet, model, profile, tuple(wrote), params)


@app.command()
def merge(
    stats: Annotated[
        list[str],
        typer.Argument(
            help="Statistics files, in the order of their data.",
            show_default=False,
            metavar="STATS",
        ),
    ],
    output: Output,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Merge statistics files of consecutive parts of a dataset into one.

    Population statistics merge exactly (Chan); running statistics compose as
    if the parts' batches had run one after the other. The fits must share
    their options (batch size, momentum, eps, columns, gamma, beta).
    """
    with handled(debug, "bnorm merge"):
        if output != "-":
            check_paths(stats, o=output)
        model = merge_models(
            [by_cli.no_groups(stats_file.load(s), s, "merge") for s in stats], stats
        )
        if output == "-":
            sys.stdout.write(stats_file.dumps(model))
        else:
            stats_file.save(model, output)
        rep = report.build("merge", ", ".join(stats), model, model.rows_)
        wrote = () if output == "-" else (f"{output} ({columns_text(len(model.columns_))})",)
        finish(rep, None, quiet, model, None, wrote)


@app.command()
def inspect(
    stats: Annotated[str, typer.Argument(help="Statistics file.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the validated file as JSON on stdout.", metavar="")
    ] = False,
    debug: Debug = False,
) -> None:
    """Show a statistics file as a table (or JSON for scripts)."""
    with handled(debug, "bnorm inspect"):
        model = stats_file.load(stats)
        if as_json:
            with open(stats, encoding="utf-8") as f:
                doc = json.load(f)
            streams.write_stdout(json.dumps(doc, indent=2) + "\n")
            return
        from . import console

        rep = report.build("inspect", stats, model, model.rows_)
        console.show_report(rep)
        imported = model.imported_
        if imported is not None:
            console.stderr.print(
                f"imported from {imported['file']} ({imported['from']}): {imported['statistics']}"
                f" statistics only, eps {model.eps:g}",
                highlight=False,
            )
            return
        momentum = "cumulative" if model.momentum is None else f"{model.momentum:g}"
        console.stderr.print(
            f"batch size {model.batch_size:,}, momentum {momentum}, eps {model.eps:g}, "
            f"num_batches_tracked {model.num_batches_tracked_:,}",
            highlight=False,
        )
        if not model.scaling.is_default:
            q = model.state_.quantiles if model.state_ is not None else None
            how = (
                ""
                if q is None
                else (" (exact quantiles)" if q.exact else " (approximate quantiles)")
            )
            console.stderr.print(
                f"{phrase(model.scaling.describe(), cli=True)}{how}", highlight=False
            )
        if model.state_ is not None and model.state_.groups is not None:
            from ..report import groups as groups_report

            shifts = groups_report.largest_shifts(model)
            rows = [groups_report.cells(x) for x in shifts]
            title = f"largest shifts from the global statistics ({len(rows)} shown)"
            caption = groups_report.caption(model)
            console.show_shifts(title, caption, rows, groups_report.HEADERS)


class ExportTo(StrEnum):
    torch = "torch"
    sklearn = "sklearn"


@app.command()
def export(
    stats: Annotated[str, typer.Argument(help="Statistics file.", show_default=False)],
    to: Annotated[
        ExportTo,
        typer.Option(
            "--to",
            help="torch: BatchNorm1d state_dict (safetensors); sklearn: the matching scaler"
            " (StandardScaler, MinMaxScaler, RobustScaler, MaxAbsScaler; JSON).",
        ),
    ],
    output: Output,
    columns: Columns = None,
    strict: Strict = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write the statistics as a PyTorch BatchNorm1d state_dict or a scikit-learn scaler.

    torch: load with `bn = torch.nn.BatchNorm1d(C, eps=EPS)` then
    `bn.load_state_dict(safetensors.torch.load_file(PATH))`; in eval mode it
    reproduces `transform --use running` (mean/std fits only). sklearn: the matching
    scaler's fitted attributes; see `bnorm_cli.io.export`.
    """
    from ..io import export as ex

    with handled(debug, "bnorm export"):
        model = by_cli.no_groups(stats_file.load(stats), stats, "export")
        chosen = ex.pick_columns(model, names(columns))
        if to is ExportTo.torch and output == "-":
            raise UsageError("--to torch writes a binary file; give -o PATH, not -")
        check_paths([stats], o=output)
        if to is ExportTo.torch:
            warnings = run_warnings(model.adjusted(columns=chosen), strict, uses_running=True)
            ex.save_torch(model, chosen, output)
            if warnings:
                from . import console

                for message in warnings:
                    console.warn(message)
            note_wrote(quiet, f"{output} ({columns_text(len(chosen))})")
        else:
            if output == "-":
                streams.stdout()  # closed (>&-): one line
            text = ex.sklearn_json(model, chosen)
            if output == "-":
                streams.write_stdout(text)
            else:
                write_text(output, text)
                note_wrote(quiet, f"{output} ({columns_text(len(chosen))})")


@app.command("import")
def import_command(
    source: Annotated[
        str,
        typer.Argument(
            help="bn.safetensors (BatchNorm1d state_dict), scaler.json (StandardScaler"
            " attributes) or keras.json (Normalization mean/variance).",
            show_default=False,
            metavar="FILE",
        ),
    ],
    output: Output,
    columns: Annotated[
        list[str] | None,
        typer.Option(
            "-c",
            "--columns",
            help="Names of the file's features, in order, comma-separated (required when the"
            " file has none).",
            metavar="COLS",
            show_default=False,
        ),
    ] = None,
    eps: Annotated[
        float | None,
        typer.Option(
            "--eps",
            help=r"The eps the statistics were made with (required for a state_dict without"
            r" it) \[default: the file's; 0 for sklearn and keras].",
            metavar="EPS",
            show_default=False,
        ),
    ] = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Write a statistics file from statistics fitted elsewhere, for `transform`.

    A PyTorch BatchNorm1d state_dict gives running statistics (transform --use
    running); a StandardScaler or a Keras Normalization gives population
    statistics. Counts the source does not know stay null, and the file is
    marked as imported.
    """
    from ..core.model import check_eps
    from ..io import importers

    with handled(debug, "bnorm import"):
        if eps is not None:
            check_eps(eps)
        if output != "-":
            check_paths([source], o=output)
        doc = importers.import_document(source, names(columns), eps)
        model = stats_file.from_dict(doc, source)
        text = json.dumps(doc, indent=2, allow_nan=False) + "\n"
        if output == "-":
            streams.write_stdout(text)
        else:
            write_text(output, text)
            held = doc["imported"]["statistics"]
            note_wrote(quiet, f"{output} ({columns_text(len(model.columns_))}, {held} statistics)")


# -- helpers -------------------------------------------------------------------


def _rereadable(inputs: list[str], input_format: str | None) -> bool:
    """Whether every input can be read again from the start (not stdin or a FIFO)."""
    return all(
        f.path != "-" and (is_url(f.path) or os.path.isfile(f.path))
        for f in expand_inputs(inputs, input_format)
    )


def main() -> None:
    """Console-script entry point."""
    run(app)
