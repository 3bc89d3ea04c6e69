"""The command line's shared options (types, help, metavars) and their parsing.

One definition per option, so every command spells and explains it the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

import typer

from ..core.errors import UsageError
from ..io.readers import DEFAULT_NULL_VALUES, TextOptions


class UseStats(StrEnum):
    population = "population"
    running = "running"


class ModeOpt(StrEnum):
    batch = "batch"
    running = "running"
    renorm = "renorm"


class DType(StrEnum):
    float64 = "float64"
    float32 = "float32"
    same = "same"


class CenterOpt(StrEnum):
    mean = "mean"
    median = "median"
    none = "none"


class ScaleOpt(StrEnum):
    std = "std"
    iqr = "iqr"
    range = "range"
    maxabs = "maxabs"
    none = "none"


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
        metavar="INPUT...",  # typer < 0.29 does not mark a list argument's metavar
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
        help="Columns to normalize, comma-separated (quote a name that holds a comma:"
        r""" '"a,b",c') \[default: every numeric column].""",
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
        help=r"Multiplier of the normalized values: a number for every column, or col=value"
        r" (repeatable) \[default: 1]",
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
DTypeOpt = Annotated[
    DType,
    typer.Option(
        "--dtype",
        help="Type of the normalized columns; same: float32 columns stay float32 (the others"
        " become float64).",
    ),
]
Center = Annotated[
    CenterOpt | None,
    typer.Option(
        "--center",
        help=r"Subtract the mean, the median, or nothing \[default: the scale's own: mean for"
        " std and none, median for iqr, none for maxabs; range always starts at the minimum]",
        show_default=False,
    ),
]
Scale = Annotated[
    ScaleOpt,
    typer.Option(
        "--scale",
        help="Divide by the std (with --eps), the interquartile range (--quantile-range),"
        " the range max-min (mapped onto --range), the largest |x - centre|, or nothing."
        " A zero spread counts as 1.",
    ),
]
FeatureRange = Annotated[
    str | None,
    typer.Option(
        "--range",
        help=r"With --scale range: the output range A,B (min maps to A, max to B) \[default: 0,1]",
        metavar="A,B",
        show_default=False,
    ),
]
QuantileRange = Annotated[
    str | None,
    typer.Option(
        "--quantile-range",
        help=r"With --scale iqr: the percentiles LO,HI whose spread divides \[default: 25,75]",
        metavar="LO,HI",
        show_default=False,
    ),
]
ReportPath = Annotated[
    str | None,
    typer.Option(
        "--report",
        help="Also write the report to a file: .md, .json, or .html (with charts).",
        metavar="PATH",
    ),
]
Quiet = Annotated[
    bool,
    typer.Option(
        "-q", "--quiet", help="No progress bar and no report on stderr; errors only.", metavar=""
    ),
]
Debug = Annotated[bool, typer.Option("--debug", help="Show the traceback of an error.", metavar="")]
Delimiter = Annotated[
    str | None,
    typer.Option(
        "--delimiter",
        help=r"Field separator of CSV/TSV input, e.g. ';', '|' or tab \[default: , for csv,"
        " tab for tsv]",
        metavar="CHAR",
        show_default=False,
    ),
]
NullValues = Annotated[
    list[str] | None,
    typer.Option(
        "--null-values",
        help="A CSV/TSV field that means missing in a number column, besides the default"
        " ones (NA, N/A, NULL, null, None, #N/A, -, ...); repeatable.",
        metavar="TOKEN",
    ),
]
NoDefaultNulls = Annotated[
    bool,
    typer.Option(
        "--no-default-null-values",
        help="Only empty fields and --null-values are missing, not NA, NULL, ...",
        metavar="",
    ),
]
DecimalComma = Annotated[
    bool,
    typer.Option(
        "--decimal-comma",
        help="Numbers in CSV/TSV input are written 1,5 (with --delimiter ';', say).",
        metavar="",
    ),
]
By = Annotated[
    list[str] | None,
    typer.Option(
        "--by",
        help="Key columns, comma-separated: statistics per group of key values (a null key"
        " is a group of its own); key columns are never normalized.",
        metavar="KEY[,KEY...]",
    ),
]
MinCount = Annotated[
    int | None,
    typer.Option(
        "--min-count",
        help="With --by: groups with fewer valid values than N in a column use the global"
        r" statistics there (so do groups unseen at fit) \[default: 1; transform: as fitted].",
        metavar="N",
        show_default=False,
    ),
]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="Make warnings errors (exit 1, nothing written): unconverged running"
        " statistics, eps above the variance, ordered data, row ids, drifted columns"
        " (transform --drift).",
        metavar="",
    ),
]
Weight = Annotated[
    str | None,
    typer.Option(
        "--weight",
        help="Column of per-row weights (frequency weights, as scikit-learn's sample_weight;"
        " >= 0, never normalized): weighted mean and variance.",
        metavar="COL",
    ),
]
# -- normalize --mode renorm (batch renormalization, core/renorm.py) -------------
RenormMomentum = Annotated[
    float | None,
    typer.Option(
        "--renorm-momentum",
        help="--mode renorm: the moving mean and std move this share toward each batch's"
        r" (0 < A <= 1; Keras' renorm_momentum=0.99 is 0.01) \[default: 0.01]",
        metavar="A",
    ),
]
RMax = Annotated[
    float | None,
    typer.Option(
        "--rmax",
        help=r"--mode renorm: r = sigma_B/sigma is clipped to \[1/RMAX, RMAX] (>= 1; inf: no"
        r" clip) \[default: 3]",
        metavar="RMAX",
    ),
]
DMax = Annotated[
    float | None,
    typer.Option(
        "--dmax",
        help=r"--mode renorm: d = (mu_B - mu)/sigma is clipped to \[-DMAX, DMAX] (>= 0; inf: no"
        r" clip) \[default: 5]",
        metavar="DMAX",
    ),
]
Warmup = Annotated[
    int | None,
    typer.Option(
        "--warmup",
        help="--mode renorm: the first N batches are plain batch normalization (r=1, d=0)"
        r" \[default: 0]",
        metavar="N",
    ),
]
Ramp = Annotated[
    int | None,
    typer.Option(
        "--ramp",
        help="--mode renorm: after the warm-up, rmax and dmax grow linearly to --rmax/--dmax"
        r" over N batches (0: at once) \[default: 0]",
        metavar="N",
    ),
]
Inf = Annotated[
    InfOpt,
    typer.Option(
        "--inf", help="+/-inf in a normalized column: stop with an error, or treat as missing."
    ),
]


def text_options(
    delimiter: str | None,
    null_values: list[str] | None,
    no_default_nulls: bool,
    decimal_comma: bool,
    recorded: Mapping[str, object] | None = None,
) -> TextOptions:
    """How to read CSV/TSV fields; ``recorded`` (transform: as fit read them) fills in
    what the command line leaves unsaid."""
    recorded = recorded or {}
    if delimiter is None and isinstance(recorded.get("delimiter"), str):
        delimiter = str(recorded["delimiter"])
    elif delimiter is not None:
        delimiter = _delimiter(delimiter)
    saved = recorded.get("null_values")
    if null_values is None and not no_default_nulls and isinstance(saved, list):
        nulls = tuple(str(v) for v in saved)
    else:
        nulls = (*(() if no_default_nulls else DEFAULT_NULL_VALUES), *(null_values or ()))
    comma = decimal_comma or recorded.get("decimal_comma") is True
    return TextOptions(delimiter, tuple(dict.fromkeys(nulls)), comma)


def reading_record(text: TextOptions, encoding: str) -> dict[str, object]:
    """What the statistics file records of how the input was read (informational)."""
    return {
        "delimiter": text.delimiter,
        "null_values": list(text.null_values),
        "decimal_comma": text.decimal_comma,
        "encoding": encoding,
    }


@dataclass(frozen=True)
class RunOptions:
    """What a data command hands on as one (to its ``--by`` variant): the inputs, how
    they are read, and what the run shows."""

    inputs: list[str]
    input_format: str | None
    encoding: str
    text: TextOptions
    quiet: bool
    strict: bool
    report_path: str | None

    def reading_record(self) -> dict[str, object]:
        return reading_record(self.text, self.encoding)


def _delimiter(value: str) -> str:
    sep = {"\\t": "\t", "tab": "\t", "TAB": "\t"}.get(value, value)
    if len(sep) != 1 or sep in '"\r\n':
        raise UsageError(
            f"--delimiter {value!r}: expected one character other than a quote or a line end,"
            " e.g. --delimiter ';' or --delimiter tab"
        )
    return sep


def names(values: list[str] | None) -> list[str] | None:
    """``-c a,b -c c`` -> [a, b, c]: comma lists, read as a CSV line.

    A name is stripped of surrounding spaces unless quoted: ``-c '"a,b", " c "'``
    names the columns ``a,b`` and `` c ``, ``-c '""'`` the column named ``""``
    (``""`` inside quotes is one ``"``).
    """
    if values is None:
        return None
    return [n for v in values for n, quoted in _csv_fields(v) if n or quoted]


def _csv_fields(text: str) -> list[tuple[str, bool]]:
    """The fields of one comma list, each with whether it was quoted."""
    fields: list[tuple[str, bool]] = []
    i, n = 0, len(text)
    while i <= n:
        while i < n and text[i] == " ":
            i += 1
        if i < n and text[i] == '"':
            value, i = _quoted(text, i + 1)
            quoted = True
            while i < n and text[i] == " ":
                i += 1
            if i < n and text[i] != ",":
                raise UsageError(
                    f"-c/-x {text!r}: text after a closing quote; quote a whole name,"
                    " e.g. -c '\"a,b\",c'"
                )
        else:
            end = text.find(",", i)
            end = n if end < 0 else end
            value, i, quoted = text[i:end].strip(), end, False
        fields.append((value, quoted))
        i += 1  # past the comma
    return fields


def _quoted(text: str, i: int) -> tuple[str, int]:
    """The quoted name that starts at ``text[i]`` and the index past its closing quote."""
    out: list[str] = []
    while True:
        end = text.find('"', i)
        if end < 0:
            raise UsageError(f'-c/-x {text!r}: a quote is not closed; end the name with "')
        out.append(text[i:end])
        if text.startswith('""', end):
            out.append('"')
            i = end + 2
            continue
        return "".join(out), end + 1


def pair(value: str | None, option: str) -> tuple[float, float] | None:
    """``--range 0,1`` -> (0.0, 1.0) (checked further by the model)."""
    if value is None:
        return None
    parts = value.split(",")
    try:
        a, b = (float(p) for p in parts)
    except ValueError:
        raise UsageError(
            f"{option} {value!r}: expected two numbers A,B, e.g. {option} 0,1"
        ) from None
    return (a, b)


def per_column(values: list[str] | None, option: str) -> float | dict[str, float] | None:
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


DriftThreshold = Annotated[
    list[str] | None,
    typer.Option(
        "--drift-threshold",
        help="NAME=DRIFT or NAME=WARN,DRIFT for psi, smd, ks, w1, null, outside; vr=LOW,HIGH"
        " (drift outside); NAME=off. Repeatable. Default: psi=0.1,0.25 smd=0.1,0.25.",
        metavar="NAME=V",
    ),
]
FailOnDrift = Annotated[
    bool,
    typer.Option(
        "--fail-on-drift", help="Exit 3 when a column drifted (transform: write no output)."
    ),
]
DriftReport = Annotated[
    str | None,
    typer.Option(
        "--drift-report",
        help="Also write the drift table to a .json, .md or .html file.",
        metavar="PATH",
    ),
]


class EngineOpt(StrEnum):
    serial = "serial"
    dask = "dask"


Engine = Annotated[
    EngineOpt,
    typer.Option(
        "--engine",
        help="serial: one process; dask: moments and apply on a Dask cluster (Parquet or"
        " Arrow IPC files; transform/normalize then write a directory of Parquet parts).",
    ),
]
Scheduler = Annotated[
    str | None,
    typer.Option(
        "--scheduler",
        help="With --engine dask: the scheduler's address (tcp://HOST:PORT); default: start"
        " a local cluster for this run.",
        metavar="ADDRESS",
    ),
]
Workers = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=1,
        help="With --engine dask and no --scheduler: worker processes of the local cluster"
        r" \[default: CPUs, at most 4].",
        metavar="N",
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="With --engine dask: replace an existing -o dataset directory (when the run"
        " ends; only one holding bnorm parts).",
        metavar="",
    ),
]
