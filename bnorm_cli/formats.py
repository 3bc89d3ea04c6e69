"""File formats: names, inference from file names, and the registry seam.

A format is a name plus a reader (in `readers.py`) and a writer (in
`writers.py`); adding one means adding it to both registries and here.
"""

from __future__ import annotations

from pathlib import PurePath

from .errors import UsageError

FORMATS = ("csv", "parquet")

_SUFFIXES = {
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


def infer_format(path: str, explicit: str | None, option: str) -> str:
    """The format named by ``--input-format``/``--output-format``, else by the file name."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise UsageError(
                f"{option}: unknown format {explicit!r}; choose one of {', '.join(FORMATS)}"
            )
        return fmt
    if path == "-":
        return "csv"
    suffix = PurePath(path).suffix.lower()
    if suffix in _SUFFIXES:
        return _SUFFIXES[suffix]
    raise UsageError(
        f"{path}: cannot tell the format from the name; pass {option} ({', '.join(FORMATS)})"
    )
