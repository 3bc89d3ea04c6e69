"""Exception hierarchy; the CLI catches `BnormError` once and prints one line.

Every message should name the file, the column and, where it helps, the row or
batch, and say which flag or action fixes the problem.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

#: How the command line spells each option the core's messages name (alone; with a
#: value, `CLI_SHORT` where there is a short form: "-x col", "--columns: ...").
CLI_SHORT = {"columns": "-c", "exclude": "-x"}
CLI_FLAGS = {
    "batch_size": "--batch-size",
    "columns": "--columns",
    "exclude": "--exclude",
    "eps": "--eps",
    "momentum": "--momentum",
    "inf": "--inf",
    "gamma": "--gamma",
    "beta": "--beta",
    "inverse": "--inverse",
    "feature_range": "--range",
    "by": "--by",
    "min_count": "--min-count",
    "use": "--use",
}
_OPT = re.compile("\x1f([a-z_]+)(?:=([^\x1f]*))?\x1f")


def opt(name: str, value: object = None) -> str:
    """An option named in a core message, phrased later for its reader: ``opt("inf",
    "missing")`` reads ``--inf missing`` on the command line and ``inf="missing"``
    in Python (`phrase`). The core never writes a flag itself."""
    return f"\x1f{name}\x1f" if value is None else f"\x1f{name}={value}\x1f"


def phrase(text: str, cli: bool = False) -> str:
    """``text`` with its `opt` marks spelled as flags (``cli``) or as parameters."""

    def spell(m: re.Match[str]) -> str:
        name, value = m.group(1), m.group(2)
        if cli:
            flag = CLI_FLAGS.get(name, "--" + name.replace("_", "-"))
            return flag if value is None else f"{CLI_SHORT.get(name, flag)} {value}"
        if value is None:
            return name
        if name in ("columns", "exclude"):
            return f"{name}=[{value!r}]"
        number = value.replace(".", "", 1).replace("e-", "", 1).lstrip("-").isdigit()
        return f"{name}={value}" if number else f"{name}={value!r}"

    return _OPT.sub(spell, text)


class BnormError(Exception):
    """Base class: an expected failure with a one-line message and an exit code.

    Structured fields (``file``, ``column``, ``row``, ``batch``) say where, for
    callers that want more than the message (an engine adds ``file`` and
    ``batch`` on the way up).
    """

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        file: str | None = None,
        column: str | None = None,
        row: int | None = None,
        batch: int | None = None,
    ) -> None:
        super().__init__(message)
        self.file, self.column, self.row, self.batch = file, column, row, batch

    def __str__(self) -> str:
        return phrase(str(self.args[0]) if self.args else "")

    @property
    def raw(self) -> str:
        """The message with its option marks, to wrap in another error."""
        return str(self.args[0]) if self.args else ""

    def cli_message(self) -> str:
        """The message with options spelled as command-line flags."""
        return phrase(str(self.args[0]) if self.args else "", cli=True)


class DataError(BnormError):
    """The input data cannot be processed (bad values, bad format, missing column)."""


class StatsFileError(BnormError):
    """The statistics file is missing, malformed or does not fit the input."""


class OutputError(BnormError):
    """The output cannot be written (directory missing, read-only, same as input)."""


class UsageError(BnormError):
    """The command line is wrong (bad option value, unknown column)."""

    exit_code = 2


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """A ' (did you mean "x"?)' hint for an unknown name, or an empty string."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
