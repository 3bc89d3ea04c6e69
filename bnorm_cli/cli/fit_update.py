"""``fit --update``: its optional argument, and the check that the options given
agree with the fit it continues."""

from __future__ import annotations

from typing import Any

import typer

from ..core.errors import UsageError
from ..core.model import BatchNorm

#: fit's options that --update takes from the statistics file instead.
_FIT_OPTIONS = {
    "batch_size": "--batch-size",
    "momentum": "--momentum",
    "eps": "--eps",
    "columns": "--columns",
    "exclude": "--exclude",
    "gamma": "--gamma",
    "beta": "--beta",
    "inf": "--inf",
    "weight": "--weight",
    "center": "--center",
    "scale": "--scale",
    "feature_range": "--range",
    "quantile_range": "--quantile-range",
}


def given_options(ctx: typer.Context) -> list[str]:
    """fit's statistics options given on the command line (not left at their defaults)."""
    sources = {name: ctx.get_parameter_source(name) for name in _FIT_OPTIONS}
    return [
        flag
        for name, flag in _FIT_OPTIONS.items()
        if getattr(sources[name], "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")
    ]


class FitCommand(typer.core.TyperCommand):
    """``--update`` takes a value only when a ``.json`` path follows it: ``fit NEW
    --update OLD.json -s OUT.json``, and ``fit NEW -s STATS --update`` as before."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        out: list[str] = []
        for i, arg in enumerate(args):
            out.append(arg)
            following = args[i + 1] if i + 1 < len(args) else ""
            if arg == "--update" and not following.lower().endswith(".json"):
                out.append("")  # the flag form: continue STATS itself
        return super().parse_args(ctx, out)


def check_same_options(given: list[str], fresh: BatchNorm, saved: BatchNorm, old: str) -> None:
    """fit --update: an option given must say what ``old`` already holds."""
    from ..core.model import resolve_per_column

    columns = saved.columns_
    for name, flag in _FIT_OPTIONS.items():
        if flag not in given:
            continue
        if name == "columns":  # the names given, less those excluded
            named = [c for c in fresh.columns or [] if c not in fresh.exclude]
            mine: object = columns if sorted(named) == sorted(columns) else named
            theirs: object = columns
        elif name == "exclude":  # none of them was fitted
            mine, theirs = [c for c in columns if c not in fresh.exclude], columns
        elif name in ("gamma", "beta"):
            mine = resolve_per_column(getattr(fresh, name), columns, name, float(name == "gamma"))
            theirs = getattr(saved, f"{name}_")
        else:
            mine, theirs = getattr(fresh, name), getattr(saved, name)
        if mine != theirs:
            raise UsageError(
                f"{flag}: differs from the fit saved in {old} ({name.replace('_', ' ')}"
                f" {theirs}); --update continues it with its own options: drop {flag}"
            )
