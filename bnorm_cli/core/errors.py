"""Exception hierarchy; the CLI catches `BnormError` once and prints one line.

Every message should name the file, the column and, where it helps, the row or
batch, and say which flag or action fixes the problem.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


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
