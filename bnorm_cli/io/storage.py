"""Object storage and other fsspec URLs (``s3://bucket/key.parquet``, ``memory://``...).

Inputs named by a URL are read through fsspec (Parquet and Arrow IPC files,
which need seeking); the Dask engine's dataset output may be a URL prefix. A
URL's credentials and endpoint come from the usual environment of its
filesystem (for S3: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_ENDPOINT_URL``...). fsspec is imported only when a URL is given, so a run
on local files never loads it.
"""

from __future__ import annotations

import re
from typing import Any, BinaryIO

from ..core.errors import DataError

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
#: ``scheme://user:password@`` and a query string (presigned URLs' signatures, SAS tokens)
_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"]*[^\s'\":,;)]")
_SECRET = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/@]*@|\?.*$")
#: The fsspec package and bnorm extra each URL scheme needs.
PACKAGES = {
    "s3": ("s3fs", "cloud"),
    "gs": ("gcsfs", "gcs"),
    "gcs": ("gcsfs", "gcs"),
    "az": ("adlfs", "azure"),
    "abfs": ("adlfs", "azure"),
    "abfss": ("adlfs", "azure"),
    "http": ("aiohttp", "cloud"),
    "https": ("aiohttp", "cloud"),
}


def redact(text: str) -> str:
    """``text`` with any URL's ``user:password@`` part and query string cut out, so a
    message never shows a credential or a presigned URL's signature."""
    return _IN_TEXT.sub(
        lambda url: _SECRET.sub(lambda m: m.group("scheme") or "?...", url.group(0)), text
    )


def is_url(path: str) -> bool:
    """``scheme://...`` (a local path, ``-`` and ``file://`` paths are not URLs here)."""
    return bool(_URL.match(path)) and not path.startswith("file://")


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec filesystem of ``url`` and the path within it."""
    scheme = url.split("://", 1)[0].lower()
    package, extra = PACKAGES.get(scheme, ("its fsspec package", "cloud"))
    try:
        import fsspec.core
    except ImportError:
        raise DataError(
            f"{redact(url)}: reading URLs needs fsspec: pip install 'bnorm[{extra}]'"
        ) from None
    try:
        return fsspec.core.url_to_fs(url)  # type: ignore[no-any-return]
    except ImportError:
        raise DataError(
            f"{redact(url)}: {scheme}:// URLs need {package}: pip install 'bnorm[{extra}]'"
        ) from None
    except ValueError as e:
        raise DataError(
            f"{redact(url)}: no filesystem for this URL ({redact(str(e))}); install its"
            " fsspec package"
        ) from None


def open_binary(url: str) -> BinaryIO:
    """``url`` opened for reading (seekable); a missing object is a one-line error."""
    fs, path = filesystem(url)
    try:
        return fs.open(path, "rb")  # type: ignore[no-any-return]
    except FileNotFoundError:
        raise DataError(f"{redact(url)}: no such object; check the URL") from None
    except OSError as e:
        raise DataError(
            f"{redact(url)}: cannot open ({redact(str(e))}); check the URL and credentials"
        ) from None


def has_glob(url: str) -> bool:
    """``*``, ``?`` or ``[`` in ``url``'s path (an http(s) URL's ``?`` starts its query)."""
    if url.split("://", 1)[0].lower() in ("http", "https"):
        return False  # an HTTP server has no listing to expand a pattern with
    return bool(re.search(r"[*?[]", url))


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
