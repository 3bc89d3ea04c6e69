"""The `bnorm` command line: thin Typer commands over `BatchNorm` and the pipeline."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from enum import StrEnum
from typing import Annotated, Any

import polars as pl
import pyarrow as pa
import typer

from . import __version__, pipeline, report, stats_file
from .atomic import check_writable_target
from .errors import BnormError, DataError, UsageError, did_you_mean
from .formats import infer_format
from .inputs import InputFile, expand_inputs, input_paths, with_partitions
from .model import DEFAULT_BATCH_SIZE, BatchNorm, is_numeric, resolve_per_column
from .profile import Profile
from .readers import Selector, Source, count_rows, open_source

app = typer.Typer(
    name="bnorm",
    help="Batch-normalize tabular data (Parquet, CSV) larger than memory, in mini-batches.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)


class UseStats(StrEnum):
    population = "population"
    running = "running"


class ModeOpt(StrEnum):
    batch = "batch"
    running = "running"


class DType(StrEnum):
    float64 = "float64"
    float32 = "float32"


class InfOpt(StrEnum):
    error = "error"
    missing = "missing"


# -- shared options ------------------------------------------------------------
# Help text is Rich markup: a literal "[" is written "\[" or Rich drops the bracketed text.
_FORMAT_HELP = r"csv, tsv, parquet, ipc or ndjson \[default: from the file name; csv for -]"
Inputs = Annotated[
    list[str],
    typer.Argument(
        help="Input files, globs or directories, read as one dataset; - reads stdin.",
        show_default=False,
        metavar="INPUT",
    ),
]
StatsOut = Annotated[
    str, typer.Option("-s", "--stats", help="Statistics file to write (JSON).", metavar="PATH")
]
StatsIn = Annotated[
    str,
    typer.Option("-s", "--stats", help="Statistics file written by `bnorm fit`.", metavar="PATH"),
]
Output = Annotated[
    str, typer.Option("-o", "--output", help="Output file; - writes stdout.", metavar="PATH")
]
BatchSize = Annotated[
    int, typer.Option("-b", "--batch-size", help="Rows per mini-batch.", metavar="N")
]
MomentumOpt = Annotated[
    str,
    typer.Option(
        "--momentum",
        help='Running-statistics momentum in [0, 1], or "cumulative".',
        metavar="M",
    ),
]
Eps = Annotated[
    float,
    typer.Option("--eps", help="Added to the variance before the square root.", metavar="EPS"),
]
Columns = Annotated[
    list[str] | None,
    typer.Option(
        "-c",
        "--columns",
        help=r"Columns to normalize, comma-separated \[default: every numeric column].",
        metavar="COLS",
    ),
]
Exclude = Annotated[
    list[str] | None,
    typer.Option(
        "-x", "--exclude", help="Columns to leave untouched, comma-separated.", metavar="COLS"
    ),
]
Gamma = Annotated[
    list[str] | None,
    typer.Option(
        "--gamma",
        help=r"Scale: a number for every column, or col=value (repeatable) \[default: 1]",
        metavar="[COL=]X",
    ),
]
Beta = Annotated[
    list[str] | None,
    typer.Option(
        "--beta",
        help=r"Shift: a number for every column, or col=value (repeatable) \[default: 0]",
        metavar="[COL=]X",
    ),
]
InputFormat = Annotated[
    str | None,
    typer.Option("--input-format", help=_FORMAT_HELP, metavar="FORMAT"),
]
Encoding = Annotated[
    str,
    typer.Option(
        "--encoding",
        help="Text encoding of CSV input, e.g. latin-1, cp1252, utf-16.",
        metavar="ENCODING",
    ),
]
OutputFormat = Annotated[
    str | None,
    typer.Option("--output-format", help=_FORMAT_HELP, metavar="FORMAT"),
]
DTypeOpt = Annotated[DType, typer.Option("--dtype", help="Type of the normalized columns.")]
ReportPath = Annotated[
    str | None,
    typer.Option("--report", help="Also write the report to a .md or .json file.", metavar="PATH"),
]
Quiet = Annotated[
    bool,
    typer.Option("-q", "--quiet", help="No progress bar and no report on stderr; errors only."),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.")]
Inf = Annotated[
    InfOpt,
    typer.Option(
        "--inf", help="+/-inf in a normalized column: stop with an error, or treat as missing."
    ),
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bnorm {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Show the version and exit."
        ),
    ] = False,
) -> None:
    """Batch Normalization for tabular data: fit, transform, normalize, inspect."""


# -- error handling ------------------------------------------------------------
class Terminated(BaseException):
    """A termination request raised as an exception (exit 143).

    The `bnorm` process itself handles SIGTERM/SIGINT in `_on_signal`, which exits at once.
    """


def _on_signal(signum: int, frame: object) -> None:
    """The Python-level SIGINT/SIGTERM handler (runs in the main thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop(signum)


def _watch_signals() -> None:
    """Act on SIGINT/SIGTERM even while the main thread is blocked in native code.

    Python runs signal handlers in the main thread only, between bytecodes: blocked
    inside pyarrow (waiting for input on a pipe, say) it would not see a signal until
    the call returns. The C-level handler writes the signal number to the wakeup fd
    at once; this thread reads it and stops the process.
    """
    import os
    import threading

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            for signum in os.read(read_end, 16):
                if signum in (signal.SIGINT, signal.SIGTERM):
                    _stop(signum)

    threading.Thread(target=watch, name="bnorm-signals", daemon=True).start()


def _stop(signum: int) -> None:
    """Remove the temporary outputs and exit at once, quietly: 130 (SIGINT), 143 (SIGTERM).

    Exiting here rather than raising an exception to unwind is deterministic: an
    exception raised by a signal handler inside a library callback (polars calls
    back into Python) can come out as another error, with a traceback, and a second
    signal could interrupt the cleanup. A partial target never exists: outputs are
    renamed into place only when complete.
    """
    import os

    from .atomic import remove_pending

    remove_pending()
    with contextlib.suppress(Exception):
        if sys.stderr.isatty():  # a progress bar may have hidden the cursor
            sys.stderr.write("\x1b[?25h\n")
            sys.stderr.flush()
    os._exit(128 + signum)


@contextlib.contextmanager
def _handled(debug: bool) -> Iterator[None]:
    """One line on stderr and the right exit code for every expected failure."""
    from . import console

    try:
        yield
    except BnormError as e:
        if debug:
            raise
        console.error(str(e))
        if e.exit_code == 2:
            console.stderr.print("Try 'bnorm --help' for help.", highlight=False)
        raise typer.Exit(e.exit_code) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as e:
        if "Broken pipe" in str(e):
            _quiet_broken_pipe()
        if debug:
            raise
        console.error(f"{e.filename or 'I/O'}: {e.strerror or e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Terminated:
        raise typer.Exit(143) from None


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (`| head`): stop quietly, like other Unix tools."""
    import os

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


# -- option parsing ------------------------------------------------------------
def _names(values: list[str] | None) -> list[str] | None:
    if values is None:
        return None
    return [n.strip() for v in values for n in v.split(",") if n.strip()]


def _per_column(values: list[str] | None, option: str) -> float | dict[str, float] | None:
    """``--gamma 2`` -> 2.0; ``--gamma a=2 --gamma b=3`` -> {a: 2, b: 3} (``*`` = default)."""
    if not values:
        return None
    out: dict[str, float] = {}
    for v in values:
        name, sep, num = v.rpartition("=")
        key = name.strip() if sep else "*"
        try:
            out[key] = float(num)
        except ValueError:
            raise UsageError(f"{option} {v!r}: expected a number or col=number") from None
    return out["*"] if list(out) == ["*"] else out


def _inputs(
    paths: list[str],
    fmt: str | None,
    model: BatchNorm,
    fitted: bool = False,
    encoding: str = "utf-8",
    project: bool = False,
) -> Source:
    """Open every input; CSV columns to normalize are read as float64, the rest as text."""
    import codecs

    if paths.count("-") > 1:
        raise UsageError("stdin (-) can be given only once")
    try:
        codecs.lookup(encoding)
    except LookupError:
        raise UsageError(
            f"--encoding {encoding!r}: unknown encoding; use a name such as utf-8, latin-1,"
            " cp1252 or utf-16"
        ) from None

    def numeric(schema: pa.Schema) -> list[str]:
        found = pipeline.polars_schema(schema)
        if fitted:  # transform: the fitted columns the reader found numeric
            return [c for c in model.columns_ if c in found and is_numeric(found[c])]
        if model.columns is not None:  # named columns are read as numbers, whatever was guessed
            return [c for c in found.names() if c in model.columns and c not in model.exclude]
        return model.select_columns(found)

    files = expand_inputs(paths, fmt)

    def open_file(f: InputFile, select: Selector) -> Source:
        source = open_source(f.path, f.fmt, model.batch_size, select, encoding, project)
        return with_partitions(source, f.partitions)

    chosen: list[str] = []

    def numeric_first(schema: pa.Schema) -> list[str]:
        chosen[:] = numeric(schema)
        return chosen

    first = open_file(files[0], numeric_first)
    # Later files read as numbers the columns the first one does, even one that is
    # empty throughout a later CSV's first block (and fit reads just those).

    def like_first(schema: pa.Schema) -> list[str]:
        return [c for c in chosen if c in schema.names]

    later = [functools.partial(open_file, f, like_first) for f in files[1:]]
    return _chain(first, later, _total_rows(first, files[1:]))


def _total_rows(first: Source, later: Sequence[InputFile]) -> int | None:
    """The row count of every input together, when metadata tells it (for the progress bar)."""
    total = first.total_rows
    for f in later:
        if total is None or f.path == "-":
            return None
        rows = count_rows(f.path, f.fmt)
        total = None if rows is None else total + rows
    return total


def _chain(first: Source, later: Sequence[Callable[[], Source]], total: int | None) -> Source:
    """Several inputs read as one dataset; batches run across file boundaries.

    Later inputs are opened one at a time, when the batches reach them, so memory
    and open files stay bounded however many files a directory or glob holds.
    """
    if not later:
        return first

    def pieces() -> Iterator[pa.RecordBatch]:
        yield from first.pieces
        for open_next in later:
            s = open_next()
            if not s.schema.equals(first.schema):
                raise DataError(
                    f"{s.name}: its columns or types differ from {first.name}'s; inputs read as"
                    " one dataset must have the same schema"
                )
            yield from s.pieces

    name = f"{first.name} (+{len(later)} more)"
    return Source(name, first.schema, total, pieces())


def _dtype(d: DType) -> type[pl.DataType]:
    return pl.Float32 if d is DType.float32 else pl.Float64


def _profile(report_path: str | None) -> Profile | None:
    """What an HTML report needs, gathered during the pass (checked before it starts)."""
    if not report.is_html(report_path):
        return None
    from .report_html import _pyplot

    _pyplot()
    return Profile()


def _finish(
    rep: report.Report,
    report_path: str | None,
    quiet: bool,
    model: BatchNorm | None = None,
    profile: Profile | None = None,
) -> None:
    from . import console

    if report_path and profile is not None and model is not None:
        _write_html(rep, report_path, model, profile)
    elif report_path:
        report.write(rep, report_path)
    if not quiet:
        console.show_report(rep)
        for message in model.warnings_ if model is not None else []:
            console.warn(message)


def _write_html(rep: report.Report, path: str, model: BatchNorm, profile: Profile) -> None:
    from .atomic import atomic_path
    from .report_html import to_html

    population = {}
    for c, m in model.maps("population").items():
        pop = model.population_[c]
        population[c] = (pop.mean, pop.var)
        if not profile.after(c).size:  # fit: the sample mapped with the final statistics
            x = profile.before(c)
            profile.set_after(c, ((x - m.center_hi) - m.center_lo) * m.scale + m.beta)
    text = to_html(rep, profile, population)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)


def _prepare_output(output: str, inputs: list[str], fmt: str | None) -> str:
    out_fmt = infer_format(output, fmt, "--output-format")
    if output != "-":
        check_writable_target(output, input_paths(inputs))
    return out_fmt


# -- commands ------------------------------------------------------------------
@app.command()
def fit(
    inputs: Inputs,
    stats: StatsOut,
    batch_size: BatchSize = DEFAULT_BATCH_SIZE,
    momentum: MomentumOpt = "0.1",
    eps: Eps = 1e-5,
    columns: Columns = None,
    exclude: Exclude = None,
    gamma: Gamma = None,
    beta: Beta = None,
    input_format: InputFormat = None,
    encoding: Encoding = "utf-8",
    inf: Inf = InfOpt.error,
    report_path: ReportPath = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON on stdout (for scripts).")
    ] = False,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Stream the input once and write its statistics file.

    Records the exact population mean/variance and PyTorch-style running
    statistics of every normalized column, plus gamma and beta.
    """
    from . import console

    with _handled(debug):
        model = _model(batch_size, momentum, eps, columns, exclude, gamma, beta, inf)
        if report_path:
            report.check_report_path(report_path)
        profile = _profile(report_path)
        check_writable_target(stats, input_paths(inputs))
        source = _inputs(inputs, input_format, model, encoding=encoding, project=True)
        with console.progress("fit", source.total_rows, quiet) as advance:
            pipeline.fit(model, source, advance, profile)
        model.save(stats)
        rep = report.build("fit", source.name, model, model.rows_)
        _finish(rep, report_path, quiet, model, profile)
        if as_json:
            summary = {"stats": stats, **json.loads(report.to_json(rep))}
            sys.stdout.write(json.dumps(summary, indent=2) + "\n")


@app.command()
def transform(
    inputs: Inputs,
    stats: StatsIn,
    output: Output,
    use: Annotated[
        UseStats, typer.Option("--use", help="Population statistics, or the running ones.")
    ] = UseStats.population,
    inverse: Annotated[
        bool, typer.Option("--inverse", help="Map normalized data back to the original units.")
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
    encoding: Encoding = "utf-8",
    output_format: OutputFormat = None,
    dtype: DTypeOpt = DType.float64,
    inf: Annotated[
        InfOpt | None,
        typer.Option(
            "--inf",
            help="+/-inf in a normalized column: stop with an error, or treat as missing."
            r" \[default: as fitted]",
        ),
    ] = None,
    report_path: ReportPath = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """Normalize with saved statistics (Batch Normalization inference mode)."""
    from . import console
    from .writers import write_batches

    with _handled(debug):
        model = stats_file.load(stats)
        model.batch_size = BatchNorm(batch_size=batch_size).batch_size
        if inf is not None:
            model.inf = inf.value
        if eps is not None:
            model.eps = BatchNorm(eps=eps).eps
        _subset(model, _names(columns), _names(exclude))
        _override(model, gamma, beta)
        if report_path:
            report.check_report_path(report_path)
        profile = _profile(report_path)
        out_fmt = _prepare_output(output, [*inputs, stats], output_format)
        source = _inputs(inputs, input_format, model, fitted=True, encoding=encoding)
        if inverse:
            for c, m in model.maps(use.value).items():
                if m.scale == 0.0:
                    raise UsageError(f'--inverse: column "{c}" has gamma 0; it cannot be inverted')
        wanted = report_path is not None or not quiet
        observed: dict[str, Any] | None = {} if wanted else None
        with console.progress("transform", source.total_rows, quiet) as advance:
            schema, batches = pipeline.transform(
                model, source, use.value, _dtype(dtype), inverse, observed, advance, profile
            )
            rows = write_batches(output, out_fmt, schema, batches)
        if observed is not None:
            rep = report.build("transform", source.name, model, rows, observed)
            _finish(rep, report_path, quiet, model, profile)


@app.command()
def normalize(
    inputs: Inputs,
    output: Output,
    mode: Annotated[
        ModeOpt,
        typer.Option(
            "--mode",
            help="batch: each batch's own statistics (BN training); running: the running"
            " statistics, updated by each batch and then applied to it.",
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
    eps: Eps = 1e-5,
    columns: Columns = None,
    exclude: Exclude = None,
    gamma: Gamma = None,
    beta: Beta = None,
    input_format: InputFormat = None,
    encoding: Encoding = "utf-8",
    output_format: OutputFormat = None,
    dtype: DTypeOpt = DType.float64,
    inf: Inf = InfOpt.error,
    report_path: ReportPath = None,
    quiet: Quiet = False,
    debug: Debug = False,
) -> None:
    """One training-mode pass: normalize each batch as Batch Normalization does while training."""
    from . import console
    from .writers import write_batches

    with _handled(debug):
        model = _model(batch_size, momentum, eps, columns, exclude, gamma, beta, inf)
        if report_path:
            report.check_report_path(report_path)
        profile = _profile(report_path)
        out_fmt = _prepare_output(output, inputs, output_format)
        if stats:
            check_writable_target(stats, input_paths(inputs))
        source = _inputs(inputs, input_format, model, encoding=encoding)
        with console.progress(f"normalize ({mode.value})", source.total_rows, quiet) as advance:
            schema, batches = pipeline.normalize(
                model, source, mode.value, _dtype(dtype), advance, profile
            )
            write_batches(output, out_fmt, schema, batches)
        if stats:
            model.save(stats)
        rep = report.build(f"normalize --mode {mode.value}", source.name, model, model.rows_)
        _finish(rep, report_path, quiet, model, profile)


@app.command()
def inspect(
    stats: Annotated[str, typer.Argument(help="Statistics file.", show_default=False)],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the validated file as JSON on stdout.")
    ] = False,
    debug: Debug = False,
) -> None:
    """Show a statistics file as a table (or JSON for scripts)."""
    from . import console

    with _handled(debug):
        model = stats_file.load(stats)
        if as_json:
            with open(stats, encoding="utf-8") as f:
                doc = json.load(f)
            sys.stdout.write(json.dumps(doc, indent=2) + "\n")
            return
        rep = report.build("inspect", stats, model, model.rows_)
        console.show_report(rep)
        momentum = "cumulative" if model.momentum is None else f"{model.momentum:g}"
        console.stderr.print(
            f"batch size {model.batch_size:,}, momentum {momentum}, eps {model.eps:g}, "
            f"num_batches_tracked {model.num_batches_tracked_:,}",
            highlight=False,
        )


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
            help="torch: BatchNorm1d state_dict (safetensors); sklearn: StandardScaler (JSON).",
        ),
    ],
    output: Output,
    columns: Columns = None,
    debug: Debug = False,
) -> None:
    """Write the statistics as a PyTorch BatchNorm1d state_dict or a StandardScaler.

    torch: load with `bn = torch.nn.BatchNorm1d(C, eps=EPS)` then
    `bn.load_state_dict(safetensors.torch.load_file(PATH))`; in eval mode it
    reproduces `transform --use running`. sklearn: see `bnorm_cli.export`.
    """
    from . import export as ex

    with _handled(debug):
        model = stats_file.load(stats)
        chosen = ex.pick_columns(model, _names(columns))
        if to is ExportTo.torch:
            if output == "-":
                raise UsageError("--to torch writes a binary file; give -o PATH, not -")
            check_writable_target(output, [stats])
            ex.save_torch(model, chosen, output)
        else:
            text = ex.sklearn_json(model, chosen)
            if output == "-":
                sys.stdout.write(text)
            else:
                check_writable_target(output, [stats])
                from .atomic import atomic_path

                with atomic_path(output) as tmp, open(tmp, "w", encoding="utf-8") as f:
                    f.write(text)


# -- helpers -------------------------------------------------------------------
def _model(
    batch_size: int,
    momentum: str,
    eps: float,
    columns: list[str] | None,
    exclude: list[str] | None,
    gamma: list[str] | None,
    beta: list[str] | None,
    inf: InfOpt,
) -> BatchNorm:
    g = _per_column(gamma, "--gamma")
    b = _per_column(beta, "--beta")
    return BatchNorm(
        batch_size=batch_size,
        momentum=momentum,
        eps=eps,
        columns=_names(columns),
        exclude=_names(exclude) or [],
        gamma=1.0 if g is None else g,
        beta=0.0 if b is None else b,
        inf=inf.value,  # type: ignore[arg-type]
    )


def _subset(model: BatchNorm, columns: list[str] | None, exclude: list[str] | None) -> None:
    """Restrict a loaded model to some of its fitted columns (transform -c/-x)."""
    fitted = model.columns_
    for name in [*(columns or []), *(exclude or [])]:
        if name not in fitted:
            raise UsageError(
                f'-c/-x: "{name}" is not a column of the statistics file'
                f"{did_you_mean(name, fitted)}"
            )
    keep = [c for c in fitted if (columns is None or c in columns) and c not in (exclude or [])]
    model.columns_ = keep


def _override(model: BatchNorm, gamma: list[str] | None, beta: list[str] | None) -> None:
    """--gamma/--beta at transform time replace the saved values they name."""
    for values, option, target in ((gamma, "gamma", model.gamma_), (beta, "beta", model.beta_)):
        spec = _per_column(values, "--" + option)
        if spec is None:
            continue
        for c, v in resolve_per_column(spec, model.columns_, option, math.nan).items():
            if not math.isnan(v):
                target[c] = v


def main() -> None:
    """Console-script entry point."""
    pa.enable_signal_handlers(False)  # pyarrow's own handler would keep signals from ours
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _watch_signals()
    try:
        app()
        code: object = 0
    except SystemExit as e:
        code = e.code
    _exit_now(code)


def _exit_now(code: object) -> None:
    """Flush stdout/stderr and leave without finalizing the interpreter.

    After a failed or interrupted CSV read, a pyarrow I/O thread can still hold
    the Python file object; finalizing the interpreter under it aborts the
    process ("terminate called without an active exception", exit 134) instead
    of exiting with bnorm's code. Every output file is closed by then.
    """
    import os

    if isinstance(code, str):  # sys.exit("message")
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a closed pipe: stop quietly
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
