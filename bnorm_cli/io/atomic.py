"""Safe file output: checked before any work, written atomically or written through.

Regular files are written to a temporary file beside the target, then renamed
into place: a failed or interrupted run leaves the target as it was (absent, or
the old file) and removes its temporary file; SIGKILL can leave only a hidden
``.NAME.bnorm-*.tmp`` beside the target, never a partial target. A symlink to a
regular file has its target replaced; the link stays.

Character devices (``/dev/null``), FIFOs, sockets and ``/dev/stdout``-like names
cannot be replaced (renaming a file onto ``/dev/null`` would destroy it): they
are written through, in place, and so are not atomic.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from ..core.errors import OutputError

TMP_SUFFIX = ".tmp"

#: Names of an open file descriptor: written into whatever they point at.
_FD_NAME = re.compile(r"^/(?:dev/(?:stdout|stderr|fd/\d+)|proc/[^/]+/fd/\d+)$")


def check_run_paths(inputs: Sequence[str], outputs: Mapping[str, str | None]) -> None:
    """Refuse, before any work, a run whose outputs clash with an input or each other.

    ``inputs``: every file the run reads ("-" is stdin); ``outputs``: option ->
    path ("-" is stdout, None when not given). Paths are compared as the files they
    name (symlinks, relative paths and hard links resolved), outputs that do not
    exist yet by their resolved path. Character devices may be named twice
    (``/dev/null``, a terminal): writing there destroys nothing.
    """
    named = [(option, path) for option, path in outputs.items() if path]
    for option, path in named:
        if path != "-":
            check_writable_target(path, option)
    seen = [(path, _identity(path, 0), True) for path in inputs]
    for option, path in named:
        me = _identity(path, 1)
        for other, ident, is_input in seen:
            if me is None or me != ident:
                continue
            if is_input:
                raise OutputError(
                    f"{path}: {option} is also an input ({other}); bnorm never overwrites"
                    f" an input, choose another {option} path"
                )
            raise OutputError(
                f"{path}: given as {option} and as {other}; give each output its own path"
            )
        seen.append((option, me, False))


def _identity(path: str, std_fd: int) -> tuple[object, ...] | None:
    """What ``path`` names, for comparison; None for a character device or unknown."""
    try:
        if path == "-":
            st = os.fstat((sys.stdin if std_fd == 0 else sys.stdout).fileno())
        else:
            st = os.stat(path)
    except FileNotFoundError:
        return ("path", os.path.realpath(path))
    except (OSError, ValueError, AttributeError):  # no real stdin/stdout (a test runner)
        return None
    if stat.S_ISCHR(st.st_mode):
        return None
    return ("file", st.st_dev, st.st_ino)


def check_writable_target(target: str | os.PathLike[str], option: str = "-o") -> Path:
    """Fail early (before any work) when ``target`` cannot be written safely."""
    path = Path(target)
    if writes_through(path):
        if not os.access(path, os.W_OK):
            raise OutputError(f"{path}: not writable; choose another {option} path")
        return path
    if path.is_dir():
        raise OutputError(f"{path}: is a directory; give a file name")
    real = Path(os.path.realpath(path))  # a symlink: the file it points to is written
    parent = real.parent
    if not parent.is_dir():
        raise OutputError(f"{path}: directory {parent} does not exist; create it first")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(
            f"{path}: directory {parent} is not writable; choose another {option} path"
        )
    return path


def writes_through(target: str | os.PathLike[str]) -> bool:
    """Whether ``target`` is written in place: a device, FIFO, socket or ``/dev/stdout``.

    Also through a symlink to one; a regular file reached as ``/dev/stdout`` (a shell
    redirection) is written through too, as the shell opened it.
    """
    try:
        mode = os.stat(target).st_mode
    except OSError:
        return False
    if stat.S_ISDIR(mode):
        return False
    return not stat.S_ISREG(mode) or any(_FD_NAME.match(p) for p in _links(str(target)))


def _links(path: str) -> Iterator[str]:
    """``path`` and each path its chain of symlinks leads to, absolute."""
    p = os.path.abspath(path)
    for _ in range(40):
        yield p
        try:
            link = os.readlink(p)
        except OSError:
            return
        p = os.path.normpath(os.path.join(os.path.dirname(p), link))


def open_mode(path: str) -> str:
    """The binary mode to open what `atomic_path` yields: a written-through file is
    appended to (truncating a FIFO or device means nothing; a ``>>`` redirection
    behind ``/dev/stdout`` keeps its content)."""
    return "ab" if writes_through(path) else "wb"


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike[str]) -> Iterator[str]:
    """Yield the path to write: a temporary file beside ``target``, renamed onto it on
    success; or ``target`` itself when it is written through (`writes_through`)."""
    if writes_through(target):
        yield str(target)
        return
    path = Path(os.path.realpath(target))  # a symlink stays; the file it points to is replaced
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.bnorm-", suffix=TMP_SUFFIX, dir=path.parent)
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


#: Temporary files of the `atomic_path` blocks under way (for `remove_pending`), and
#: temporary directories and URL prefixes of `pending` blocks (a dataset's parts,
#: a local cluster's scratch space).
_pending: set[str] = set()


@contextlib.contextmanager
def pending(path: str) -> Iterator[str]:
    """``path`` (a temporary file, directory or URL prefix) is removed if a signal ends
    the process while this block runs (the block removes it otherwise)."""
    _pending.add(path)
    try:
        yield path
    finally:
        _pending.discard(path)


def remove_pending() -> None:
    """Delete every temporary file still being written: a signal is ending the process."""
    import shutil

    from .storage import filesystem, is_url

    for tmp in list(_pending):
        with contextlib.suppress(Exception):
            if is_url(tmp):
                fs, path = filesystem(tmp)
                fs.rm(path, recursive=True)
            elif os.path.isdir(tmp):
                shutil.rmtree(tmp, ignore_errors=True)
            else:
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


@contextlib.contextmanager
def staged(target: str | os.PathLike[str]) -> Iterator[Callable[[bytes], None]]:
    """A small file written in two steps, to publish it with another output: ``put(data)``
    writes it beside ``target`` at once (a full disk fails there), and it is renamed
    into place when the block ends without an error (removed otherwise)."""
    with atomic_path(target) as tmp:

        def put(data: bytes) -> None:
            try:
                with open(tmp, open_mode(tmp)) as f:
                    f.write(data)
            except OSError as e:
                reason = e.strerror or " ".join(str(e).split())
                raise OutputError(
                    f"{target}: cannot write ({reason}); make room on the disk or choose"
                    " another path"
                ) from None

        yield put


def write_bytes(target: str | os.PathLike[str], data: bytes) -> None:
    """Write a small file (statistics, report, export) safely; a failure names ``target``."""
    try:
        with atomic_path(target) as tmp, open(tmp, open_mode(tmp)) as f:
            f.write(data)
    except OSError as e:  # disk full, a closed FIFO, ...: the temporary file is gone
        reason = e.strerror or " ".join(str(e).split())
        raise OutputError(
            f"{target}: cannot write ({reason}); make room on the disk or choose another path"
        ) from None


def write_text(target: str | os.PathLike[str], text: str) -> None:
    """Write a small text file atomically (or through, see `writes_through`), as UTF-8."""
    write_bytes(target, text.encode("utf-8"))
