"""Everything that talks to the terminal: the only module that imports Rich.

stdout is for data; this console writes to stderr only.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol

from rich import box
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from ..io.storage import redact
from ..report import drift as drift_report
from ..report.summary import HEADERS, Report, cells, summary

stderr = Console(stderr=True, highlight=False)
if not stderr.is_terminal:  # a log file or a pipe: do not squeeze the table to 80 columns
    stderr.width = max(stderr.width, 132)


class Advance(Protocol):
    def __call__(self, rows: int) -> None: ...


def one_line(message: str) -> str:
    """``message`` with control characters escaped (``\\n``, ``\\x1b``): an error or a
    warning is one line even when it quotes a column name or a value that holds a
    newline, and a name cannot send terminal escape sequences."""
    return message.translate(_CONTROL)


_CONTROL = {c: repr(chr(c))[1:-1] for c in (*range(32), *range(127, 160)) if c != 0x20}


def error(message: str) -> None:
    # escape: a message quotes file names and cell values, which may look like markup ("[/x]")
    stderr.print(
        f"[bold red]error:[/] {escape(one_line(redact(message)))}",
        soft_wrap=True,
        markup=True,
        highlight=False,
    )


def note(message: str) -> None:
    """A plain line on stderr (what a command wrote)."""
    stderr.print(escape(message), soft_wrap=True, highlight=False)


def warn(message: str) -> None:
    stderr.print(f"[yellow]warning:[/] {escape(one_line(redact(message)))}", soft_wrap=True)


def show_report(report: Report) -> None:
    table = Table(
        title=f"bnorm {report.command}: {escape(report.source)}",
        caption=escape(summary(report)),
        title_style="bold",
        box=box.SIMPLE_HEAD,
    )
    for i, h in enumerate(HEADERS):
        # fold, never truncate: a narrow terminal wraps a long number onto a second line
        table.add_column(h, justify="left" if i == 0 else "right", overflow="fold")
    for r in report.columns:
        name, *numbers = cells(r)
        table.add_row(escape(name), *numbers)
    stderr.print(table)


def show_drift(report: drift_report.DriftReport) -> None:
    """The drift table: one row per column, worst first."""
    table = Table(
        title=f"bnorm {report.command}: {escape(report.source)} against {escape(report.stats)}",
        caption=escape(drift_report.caption(report)),
        title_style="bold",
        box=box.SIMPLE_HEAD,
    )
    for i, h in enumerate(drift_report.HEADERS):
        table.add_column(h, justify="left" if i < 2 else "right", no_wrap=True)
    style = {"drift": "bold red", "warn": "yellow"}
    for d in report.columns:
        name, verdict, *numbers = drift_report.cells(d)
        table.add_row(escape(name), f"[{style.get(verdict, 'green')}]{verdict}[/]", *numbers)
    stderr.print(table)


class _RowsPerSecond(TextColumn):
    def __init__(self) -> None:
        super().__init__("")

    def render(self, task):  # type: ignore[no-untyped-def]
        speed = task.finished_speed or task.speed
        return f"{speed:,.0f} rows/s" if speed else ""


@contextmanager
def progress(description: str, total: int | None, quiet: bool) -> Iterator[Advance]:
    """A progress bar on stderr when it is a terminal (rows, rows/s, ETA if total known)."""
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("rows"),
        _RowsPerSecond(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=quiet or not stderr.is_terminal,
    )
    with bar:
        task = bar.add_task(description, total=total)

        def advance(rows: int) -> None:
            bar.advance(task, rows)

        yield advance


def show_shifts(title: str, caption: str, rows: list[list[str]], headers: Sequence[str]) -> None:
    """A per-key fit's groups that differ most from the global statistics."""
    table = Table(
        title=escape(title), caption=escape(caption), title_style="bold", box=box.SIMPLE_HEAD
    )
    for i, h in enumerate(headers):
        table.add_column(h, justify="left" if i < 2 else "right", overflow="fold")
    for r in rows:
        table.add_row(*(escape(c) for c in r))
    stderr.print(table)
