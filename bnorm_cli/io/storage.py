"""Object storage and other fsspec URLs (``s3://bucket/key.parquet``, ``memory://``...).

Inputs named by a URL are read through fsspec (Parquet and Arrow IPC files,
which need seeking); the Dask engine's dataset output may be a URL prefix. A
URL's credentials and endpoint come from the usual environment of its
filesystem (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``...). fsspec is imported only when a URL is given, so a run
on local files never loads it.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..core.errors import DataError, OutputError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def is_url(path: str) -> bool:
    """``scheme://...`` (a local path, ``-`` and ``file://`` paths are not URLs here)."""
    return bool(_URL.match(path)) and not path.startswith("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    try:
        import fsspec.core
    except ImportError:
        raise DataError(
            f"{url}: reading URLs needs fsspec (and s3fs for s3://): pip install 'bnorm[cloud]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except (ImportError, ValueError) as e:
        raise DataError(
            f"{url}: no filesystem for this URL ({e}); install its fsspec package"
            " (s3fs for s3://: pip install 'bnorm[cloud]')"
        ) from None


def open_binary(url: str) -> BinaryIO:
    """``url`` opened for reading (seekable); a missing object is a one-line error."""
    fs, path = filesystem(url)
    try:
        return fs.open(path, "rb")  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise DataError(f"{url}: no such object; check the URL") from None
    except OSError as e:
        raise DataError(f"{url}: cannot open ({e}); check the URL and credentials") from None


def glob(pattern: str) -> list[str]:
    """The object URLs matching ``pattern``, sorted."""
    fs, path = filesystem(pattern)
    protocol = pattern.split("://", 1)[0]
    return sorted(f"{protocol}://{p}" for p in fs.glob(path) if fs.isfile(p))


def write_bytes(url: str, data: bytes) -> None:
    fs, path = filesystem(url)
    with fs.open(path, "wb") as f:
        f.write(data)


def join(base: str, name: str) -> str:
    return base.rstrip("/") + "/" + name


@contextlib.contextmanager
def dataset_prefix(target: str) -> Iterator[str]:
    """A temporary prefix beside ``target`` for the parts; moved onto ``target`` when
    every part is written (an old bnorm dataset there is replaced), removed on failure.

    Object stores have no atomic rename: until the move ends, a reader of
    ``target`` may see some old and some new parts."""
    fs, path = filesystem(target)
    path = path.rstrip("/")
    if fs.exists(path):
        names = [p.rsplit("/", 1)[-1] for p in fs.find(path)]
        if not all(n.startswith("part-") and n.endswith(".parquet") for n in names):
            raise OutputError(
                f"{target}: exists and is not a bnorm dataset; choose another output URL"
            )
    protocol = target.split("://", 1)[0]
    tmp = f"{path}.bnorm-{uuid.uuid4().hex[:12]}"
    try:
        yield f"{protocol}://{tmp}"
        if fs.exists(path):
            fs.rm(path, recursive=True)
        for part in sorted(fs.find(tmp)):
            fs.mv(part, path + part[len(tmp) :])
    finally:
        with contextlib.suppress(OSError, FileNotFoundError):
            if fs.exists(tmp):
                fs.rm(tmp, recursive=True)
