"""Atomic file output: write beside the target, then rename into place.

A failed or interrupted run leaves the target as it was (absent, or the old
file) and removes its temporary file; SIGKILL can leave only a hidden
``.NAME.bnorm-*.tmp`` beside the target, never a partial target.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..core.errors import OutputError

TMP_SUFFIX = ".tmp"


def check_writable_target(target: str | os.PathLike[str], inputs: Sequence[str] = ()) -> Path:
    """Fail early (before any work) when ``target`` cannot be written safely."""
    path = Path(target)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist; create it first")
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{path}: directory {parent} is not writable; choose another output path")
    for inp in inputs:
        if inp != "-" and _same_file(path, Path(inp)):
            raise OutputError(
                f"{path}: is also an input; bnorm never overwrites an input,"
                " choose another output path"
            )
    return path


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` on success."""
    path = Path(target)
    parent = path.parent if str(path.parent) else Path(".")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.bnorm-", suffix=TMP_SUFFIX, dir=parent)
    os.close(fd)
    _pending.add(tmp)
    try:
        yield tmp
        _keep_mode(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        _pending.discard(tmp)


#: Temporary files of the `atomic_path` blocks under way (for `remove_pending`).
_pending: set[str] = set()


def remove_pending() -> None:
    """Delete every temporary file still being written: a signal is ending the process."""
    for tmp in list(_pending):
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def _keep_mode(path: Path, tmp: str) -> None:
    """Give the new file the old file's mode, or the umask default for a new one."""
    try:
        mode = path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write a small text file (statistics, report, export) atomically, as UTF-8."""
    with atomic_path(target) as tmp, open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
