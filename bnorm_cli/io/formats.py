"""File formats: names, inference from file names, and the registry seam.

A format is a name plus a reader (in `readers.py`) and a writer (in
`writers.py`); adding one means adding it to both registries and here.
"""

from __future__ import annotations

from pathlib import PurePath

from ..core.errors import UsageError

FORMATS = ("csv", "tsv", "parquet", "ipc", "ndjson")

_SUFFIXES = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".arrow": "ipc",  # Arrow IPC file format (Feather v2); a stream in it is read too
    ".ipc": "ipc",
    ".feather": "ipc",
    ".arrows": "ipc",  # Arrow IPC stream format
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}

#: A second suffix names the compression of a text input (``data.csv.gz``).
COMPRESSIONS = {".gz": "gzip", ".zst": "zstd", ".bz2": "bz2"}

#: Formats that can be read compressed: text read as a stream (Parquet and Arrow
#: compress inside the file).
COMPRESSIBLE = ("csv", "tsv", "ndjson")


def compression_of(path: str) -> str | None:
    """The codec a file name's last suffix names (``.gz``, ``.zst``, ``.bz2``), if any."""
    return None if path == "-" else COMPRESSIONS.get(PurePath(path).suffix.lower())


def is_data_file(path: str) -> bool:
    """Whether the name says a format bnorm reads (used to pick files in a directory)."""
    p = PurePath(path)
    if compression_of(path):
        p = PurePath(p.stem)
    return p.suffix.lower() in _SUFFIXES


def infer_format(path: str, explicit: str | None, option: str) -> str:
    """The format named by ``--input-format``/``--output-format``, else by the file name."""
    if explicit:
        fmt = explicit.lower()
        if fmt not in FORMATS:
            raise UsageError(
                f"{option}: unknown format {explicit!r}; choose one of {', '.join(FORMATS)}"
            )
        return _check_compression(path, fmt, option)
    if path == "-":
        return "csv"
    name = PurePath(path)
    if compression_of(path):
        name = PurePath(name.stem)
    suffix = name.suffix.lower()
    if suffix in _SUFFIXES:
        return _check_compression(path, _SUFFIXES[suffix], option)
    raise UsageError(
        f"{path}: cannot tell the format from the name; pass {option} ({', '.join(FORMATS)})"
    )


def _check_compression(path: str, fmt: str, option: str) -> str:
    codec = compression_of(path)
    if codec is None:
        return fmt
    if option == "--output-format":
        raise UsageError(
            f"{path}: bnorm does not write compressed files; write -o - and pipe it"
            f" through a compressor (e.g. | gzip > {path})"
        )
    if fmt not in COMPRESSIBLE:
        raise UsageError(
            f"{path}: a {codec}-compressed {fmt} file cannot be streamed; decompress it"
            f" first ({', '.join(COMPRESSIBLE)} inputs can be read compressed)"
        )
    return fmt
