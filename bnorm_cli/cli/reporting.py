"""What a command shows and writes besides its data: the progress bar, the report
(stderr, ``--report``, fit's ``--json``), the "wrote ..." lines, the HTML report.

Rich (`console`) is imported only when something is shown.
"""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ..core.model import BatchNorm
from ..io import streams
from ..io.atomic import write_text
from ..report import summary as report

if TYPE_CHECKING:  # imported where it is used: an HTML report
    from ..report.profile import Profile


def html_profile(report_path: str | None) -> Profile | None:
    """What an HTML report needs, gathered during the pass (checked before it starts)."""
    if not report.is_html(report_path):
        return None
    from ..report.profile import Profile

    return Profile()


def progress(
    description: str, total: int | None, quiet: bool
) -> contextlib.AbstractContextManager[Callable[[int], None]]:
    """The progress bar (console.progress), without importing Rich when quiet."""
    if quiet:
        return contextlib.nullcontext(lambda rows: None)
    from . import console

    return console.progress(description, total, quiet)


def finish(
    rep: report.Report,
    report_path: str | None,
    quiet: bool,
    model: BatchNorm | None = None,
    profile: Profile | None = None,
    wrote: tuple[str, ...] = (),
    parameters: tuple[tuple[str, str], ...] = (),
) -> None:
    """The report to --report (HTML with ``profile``) and, unless quiet, to stderr with
    its warnings; then the "wrote ..." lines."""
    if report_path and profile is not None and model is not None:
        _write_html(rep, report_path, model, profile, parameters)
    elif report_path:
        report.write(rep, report_path)
    if not quiet:
        from . import console  # Rich is imported only when something is shown

        console.show_report(rep)
        for message in rep.warnings:
            console.warn(message)
    note_wrote(quiet, *wrote, *([report_path] if report_path else []))


def report_fit(
    model: BatchNorm,
    stats: str,
    source: str,
    warnings: list[str],
    wrote: str,
    report_path: str | None,
    quiet: bool,
    as_json: bool,
    profile: Profile | None = None,
    extra: Mapping[str, object] | None = None,
) -> None:
    """fit's report, once ``stats`` is saved: stderr, --report, and with --json the
    report (and ``extra``) on stdout."""
    rep = report.build("fit", source, model, model.rows_, warnings=warnings)
    parameters = run_parameters(model) if profile is not None else ()
    finish(rep, report_path, quiet, model, profile, (wrote,), parameters)
    if as_json:
        doc = {"stats": stats, **json.loads(report.to_json(rep)), **(extra or {})}
        streams.write_stdout(json.dumps(doc, indent=2) + "\n")


def note_wrote(quiet: bool, *what: str) -> None:
    """Say on stderr what the command wrote ("wrote stats.json (7 columns)")."""
    if quiet or not what:
        return
    from . import console

    for line in what:
        console.note(f"wrote {line}")


def columns_text(n: int) -> str:
    return f"{n:,} column{'' if n == 1 else 's'}"


def rows_text(n: int) -> str:
    return f"{n:,} row{'' if n == 1 else 's'}"


def _command_line(command: str) -> str:
    """The command as typed, when run as `bnorm` (else its name)."""
    import shlex
    from pathlib import Path

    if Path(sys.argv[0]).name in ("bnorm", "__main__.py"):
        return shlex.join(["bnorm", *sys.argv[1:]])
    return f"bnorm {command}"


def run_parameters(model: BatchNorm, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
    """The run's settings, for the HTML report."""
    momentum = "cumulative" if model.momentum is None else f"{model.momentum:g}"
    gammas = sorted({f"{v:g}" for v in model.gamma_.values()})
    betas = sorted({f"{v:g}" for v in model.beta_.values()})
    return (
        *extra,
        ("batch size", f"{model.batch_size:,}"),
        ("momentum", momentum),
        ("eps", f"{model.eps:g}"),
        ("inf", model.inf),
        ("gamma", ", ".join(gammas) if len(gammas) < 2 else "per column"),
        ("beta", ", ".join(betas) if len(betas) < 2 else "per column"),
    )


def _write_html(
    rep: report.Report,
    path: str,
    model: BatchNorm,
    profile: Profile,
    parameters: tuple[tuple[str, str], ...],
) -> None:
    from ..report.html import Run, to_html

    population = {}
    running_only = (model.imported_ or {}).get("statistics") == "running"  # imported: no population
    for c, m in ({} if running_only else model.maps("population")).items():
        pop = model.population_[c]
        population[c] = (pop.mean, pop.var)
        if not profile.after(c).size:  # fit: the sample mapped with the final statistics
            x = profile.before(c)
            profile.set_after(c, ((x - m.center_hi) - m.center_lo) * m.scale + m.beta)
    run = Run(
        _command_line(rep.command.split()[0]),
        (("input", rep.source), *parameters),
        report.passed_through(model),
        list(rep.warnings),
    )
    write_text(path, to_html(rep, profile, population, run))


def _output_name(output: str) -> str:
    return "stdout" if output == "-" else output


def output_line(output: str, rows: int) -> str:
    """What ``wrote`` says of a data output: "out.parquet (7 rows)", "stdout (7 rows)"."""
    return f"{_output_name(output)} ({rows_text(rows)})"
