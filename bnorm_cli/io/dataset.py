"""Dataset outputs: a directory (or URL prefix) of Parquet parts published whole.

``-o DIR/`` with ``--engine dask`` is ``DIR/part-00000.parquet ...`` (zero-padded,
in row order) and ``DIR/_SUCCESS``, written last. How a run publishes it:

- On a local or shared file system the parts and ``_SUCCESS`` are written to a
  temporary directory beside ``DIR`` (``.DIR.bnorm-XXXX``), renamed onto ``DIR``
  when all are written: a failed or interrupted run publishes nothing and leaves
  nothing. An existing non-empty ``DIR`` is refused unless ``--overwrite``; it is
  then replaced at the end only (the old one stays whole until the rename), and
  only if it holds nothing but a bnorm dataset (parts and ``_SUCCESS``).
- Object stores have no rename: the parts are written under a run-unique prefix
  beside the target (``DIR.bnorm-<run id>/``), then the old ``_SUCCESS`` (if
  any) is deleted first, the old parts next, the new parts copied under ``DIR``,
  and ``_SUCCESS`` written last. ``_SUCCESS`` is the commit marker: while it is
  missing the dataset is incomplete, and bnorm refuses to read a bnorm dataset
  without it (`check_complete`).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..core.errors import DataError, OutputError
from . import storage
from .atomic import pending
from .storage import is_url

SUCCESS = "_SUCCESS"
_PART = re.compile(r"^part-\d{5,}\.parquet$")


def part_name(index: int) -> str:
    return f"part-{index:05d}.parquet"


def _ours(names: Sequence[str]) -> bool:
    """Names a bnorm dataset holds: its parts and its marker."""
    return all(_PART.match(n) or n == SUCCESS for n in names)


def check_target(target: str, overwrite: bool) -> None:
    """Before any work: ``target`` is absent or empty, or (``overwrite``) a bnorm dataset."""
    if is_url(target):
        fs, path = storage.filesystem(target)
        path = path.rstrip("/")
        names = [p.rsplit("/", 1)[-1] for p in fs.find(path)] if fs.exists(path) else []
    else:
        p = Path(target)
        if p.exists() and not p.is_dir():
            raise OutputError(f"{target}: exists and is not a directory; choose another -o path")
        names = sorted(c.name for c in p.iterdir()) if p.is_dir() else []
    shown = storage.redact(target)
    if not names:
        return
    if not overwrite:
        raise OutputError(
            f"{shown}: exists and is not empty; pass --overwrite to replace it when the run"
            " ends, or choose another -o path"
        )
    if not _ours(names):
        other = next(n for n in names if not (_PART.match(n) or n == SUCCESS))
        raise OutputError(
            f"{shown}: holds {other}, which is not part of a bnorm dataset, so --overwrite"
            " will not replace it; choose another -o path"
        )


def output_location(target: str, overwrite: bool = False) -> contextlib.AbstractContextManager[str]:
    """Where the parts go until they are all written (a directory, or a URL prefix)."""
    check_target(target, overwrite)
    return _prefix(target) if is_url(target) else _directory(target)


@contextlib.contextmanager
def _directory(target: str) -> Iterator[str]:
    path = Path(target)
    parent = path.parent if str(path.parent) else Path(".")
    tmp = tempfile.mkdtemp(prefix=f".{path.name}.bnorm-", dir=parent)
    try:
        with pending(tmp):  # Ctrl-C removes it too (until it is renamed into place)
            yield tmp
            Path(tmp, SUCCESS).write_bytes(b"")
            if path.exists():
                old = tempfile.mkdtemp(prefix=f".{path.name}.bnorm-old-", dir=parent)
                os.replace(path, os.path.join(old, "d"))
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def _prefix(target: str) -> Iterator[str]:
    fs, path = storage.filesystem(target)
    path = path.rstrip("/")
    protocol = target.split("://", 1)[0]
    tmp = f"{path}.bnorm-{uuid.uuid4().hex[:12]}"
    try:
        with pending(f"{protocol}://{tmp}"):  # Ctrl-C removes it too
            yield f"{protocol}://{tmp}"
        if fs.exists(f"{path}/{SUCCESS}"):
            fs.rm(f"{path}/{SUCCESS}")  # uncommitted first, then changed
        if fs.exists(path):
            fs.rm(path, recursive=True)
        for part in sorted(fs.find(tmp)):
            fs.mv(part, path + part[len(tmp) :])
        with fs.open(f"{path}/{SUCCESS}", "wb"):
            pass  # the commit marker, last
    finally:
        with contextlib.suppress(OSError, FileNotFoundError):
            if fs.exists(tmp):
                fs.rm(tmp, recursive=True)


def check_complete(paths: Sequence[str]) -> None:
    """Inputs that are a bnorm dataset's parts (a folder of only ``part-NNNNN.parquet``)
    must have its ``_SUCCESS`` beside them, else the dataset is incomplete."""
    folders: dict[str, list[str]] = {}
    for p in paths:
        folder, _, name = p.rpartition("/")
        folders.setdefault(folder, []).append(name)
    for folder, names in folders.items():
        if not folder or not all(_PART.match(n) for n in names):
            continue
        marker = f"{folder}/{SUCCESS}"
        if is_url(folder):
            fs, path = storage.filesystem(marker)
            present = fs.exists(path)
        else:
            present = os.path.exists(marker)
        if not present:
            raise DataError(
                f"{storage.redact(folder)}: a bnorm dataset without its {SUCCESS} marker"
                " (a run still writing it, or one that failed); read it when the run that"
                " writes it has finished, or rerun that run"
            )
