"""The CLI side of a drift comparison (`bnorm drift`, `transform --drift`): what the
statistics file must hold, the drift report's checks, and the drift table's output."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import drift as dr
from ..core.errors import StatsFileError, UsageError
from ..core.model import BatchNorm
from .reporting import note_wrote

if TYPE_CHECKING:  # imported where it is used
    from ..report import drift as drift_report


def drift_watch(model: BatchNorm, stats: str) -> dr.Watch:
    state = model.state_
    assert state is not None
    if model.weight is not None:
        raise UsageError(
            f"{stats} was fitted with --weight {model.weight}; drift compares unweighted"
            " summaries and does not support weighted fits yet: re-fit without --weight to"
            " compare"
        )
    if model.summary_ is None:
        raise StatsFileError(
            f"{stats}: this statistics file has no distribution summary ("
            + ("it was imported" if model.imported_ else "it was written before bnorm recorded one")
            + "), so there is nothing to compare the input with; re-fit on the"
            f" training data with this bnorm (`bnorm fit TRAINING_DATA -s {stats}`), then run"
            " drift again"
        )
    return dr.Watch(model.columns_, state.population, model.summary_, model.rows_)


def check_drift_report(path: str | None) -> None:
    """Before the pass: a drift report of an unknown kind fails early (collisions
    with inputs and other outputs: `check_paths`)."""
    if path is None:
        return
    from ..report import drift as drift_report

    drift_report.check_path(path)


def finish_drift(
    command: str,
    stats: str,
    source: str,
    watch: dr.Watch,
    thresholds: dr.Thresholds,
    path: str | None,
    quiet: bool,
    warn: bool,
) -> drift_report.DriftReport:
    from ..report import drift as drift_report

    rep = drift_report.build(command, stats, source, watch, thresholds)
    if path:
        drift_report.write(rep, path, watch)
        note_wrote(quiet, path)
    # the gate's error line names them otherwise; shown even with -q
    lines = drift_report.warnings(rep) if warn else []
    if not quiet or lines:  # Rich (~50 ms to import) only for something to show
        from . import console

        if not quiet:
            console.show_drift(rep)
        for line in lines:
            console.warn(line)
    return rep
