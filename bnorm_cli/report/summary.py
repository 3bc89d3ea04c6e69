"""The per-column report: built from statistics, rendered as Markdown or JSON.

The terminal rendering (a Rich table) lives in `console.py`; this module has
no Rich so that reports can be written and tested without a terminal.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.errors import UsageError, phrase
from ..core.model import BatchNorm
from ..core.moments import Moments
from ..io.atomic import write_text
from ..io.storage import redact

HEADERS = ("column", "count", "nulls", "mean", "std", "min", "max", "running mean", "running std")


@dataclass(frozen=True)
class Row:
    column: str
    count: int | None
    nulls: int | None
    mean: float | None
    std: float | None
    min: float | None
    max: float | None
    running_mean: float | None
    running_std: float | None


@dataclass(frozen=True)
class Report:
    command: str
    source: str
    rows: int
    batches: int
    columns: list[Row]
    note: str = ""
    warnings: list[str] = field(default_factory=list)
    #: columns whose running statistics still weigh their 0/1 start (fit marks them)
    not_converged: list[str] = field(default_factory=list)


def build(
    command: str,
    source: str,
    model: BatchNorm,
    rows: int,
    observed: dict[str, Moments] | None = None,
    warnings: list[str] | None = None,
) -> Report:
    """One row per normalized column.

    ``observed`` (transform) holds the statistics of the data just read, shown
    beside the saved running statistics; otherwise the model's own population.
    """
    pops = observed if observed is not None else model.population_
    held = (model.imported_ or {}).get("statistics")  # imported: one kind only
    columns = []
    for c in model.columns_:
        m = pops[c]
        run = model.running_[c]
        pop = held != "running" or observed is not None
        columns.append(
            Row(
                c,
                m.n if m.n >= 0 else None,  # None: imported without counts
                m.missing if m.missing >= 0 else None,
                m.mean if pop else None,
                m.std if pop else None,
                m.min if m.n and pop and not math.isnan(m.min) else None,
                m.max if m.n and pop and not math.isnan(m.max) else None,
                run.mean if held != "population" else None,
                math.sqrt(run.var) if held != "population" else None,
            )
        )
    notes = (
        ["statistics of this input; running mean/std as saved by fit"]
        if observed is not None
        else []
    )
    if model.scaling.record():  # not mean/std: say what the maps use
        notes.append(f"maps: {phrase(model.scaling.describe(), cli=True)}")
    note = "; ".join(notes)
    return Report(
        command,
        redact(source),  # never a URL's credentials or signature
        rows,
        -(-rows // model.batch_size),
        columns,
        note,
        list(warnings or []),
        model.not_converged() if model.is_fitted and command == "fit" else [],
    )


def passed_through(model: BatchNorm) -> list[tuple[str, str]]:
    """The input columns left unchanged, each with the reason."""
    out = []
    for name, dtype in model.input_schema_.items():
        if name in model.columns_:
            continue
        numeric = dtype.startswith(("Int", "UInt", "Float"))
        if name in model.exclude:
            why = "excluded (-x)"
        elif not numeric:
            why = f"not numeric ({dtype})"
        elif model.columns is not None and name not in model.columns:
            why = "numeric, but not named by -c"
        else:
            why = "not normalized (left out with -c/-x, or not in the statistics file)"
        out.append((name, why))
    return out


def summary(report: Report) -> str:
    """The line under the table: size, and what the numbers are."""
    rows = f"{report.rows:,} row{'' if report.rows == 1 else 's'}"
    text = f"{rows} in {report.batches:,} batch{'' if report.batches == 1 else 'es'}"
    text = f"{text}; {report.note}" if report.note else text
    if report.not_converged:
        names = ", ".join(report.not_converged)
        text += f"; running statistics not converged: {names}"
    return text


def fmt(value: float | int | None, resolution: float | None = None) -> str:
    """A number for people: 6 significant digits, more when ``value`` must show
    differences as small as ``resolution`` (a column at 1e6 with std 0.01)."""
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:,}"
    digits = 6
    if resolution and value and math.isfinite(value) and math.isfinite(resolution):
        digits = min(17, max(6, 3 + math.ceil(math.log10(abs(value) / resolution))))
    return f"{value:.{digits}g}"


def cells(row: Row) -> list[str]:
    """The report row as text, in `HEADERS` order (shared by every renderer)."""
    return [
        row.column,
        fmt(row.count),
        fmt(row.nulls),
        fmt(row.mean, row.std),
        fmt(row.std),
        fmt(row.min, row.std),
        fmt(row.max, row.std),
        fmt(row.running_mean, row.running_std),
        fmt(row.running_std),
    ]


def markdown_table(
    headers: Sequence[str], aligns: Sequence[str], rows: Iterable[Sequence[str]]
) -> list[str]:
    """A Markdown table's lines (``aligns``: ``---`` or ``---:`` per column; ``|`` escaped)."""
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(aligns) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in row) + " |")
    return lines


def to_markdown(report: Report) -> str:
    lines = [
        f"# bnorm {report.command}: {report.source}",
        "",
        summary(report) + ".",
        "",
        *markdown_table(
            HEADERS,
            ["---"] + ["---:"] * (len(HEADERS) - 1),
            (cells(r) for r in report.columns),
        ),
    ]
    if report.warnings:
        lines += ["", "## Warnings", "", *(f"- {w}" for w in report.warnings)]
    return "\n".join(lines) + "\n"


def to_json(report: Report) -> str:
    return json.dumps(asdict(report), indent=2, allow_nan=False) + "\n"


RENDERERS = {".md": to_markdown, ".markdown": to_markdown, ".json": to_json}
HTML_SUFFIXES = (".html", ".htm")


def check_report_path(path: str) -> None:
    suffix = Path(path).suffix.lower()
    if suffix not in RENDERERS and suffix not in HTML_SUFFIXES:
        raise UsageError(f"--report {path}: use a .md, .json or .html file name")


def is_html(path: str | None) -> bool:
    return path is not None and Path(path).suffix.lower() in HTML_SUFFIXES


def write(report: Report, path: str) -> None:
    write_text(path, RENDERERS[Path(path).suffix.lower()](report))
