"""How a bnorm process ends: one-line errors, exit codes, signals, broken pipes.

Expected failures (`BnormError`) become one line on stderr and exit 1 or 2;
SIGINT/SIGTERM remove the temporary outputs and exit 130/143; a closed stdout
ends quietly.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError
from typer.core import TyperGroup
from typer.exceptions import Abort

from ..core.errors import BnormError


class Terminated(BaseException):
    """A termination request raised as an exception (exit 143).

    The `bnorm` process itself handles SIGTERM/SIGINT in `_on_signal`, which exits at once.
    """


def _on_signal(signum: int, frame: object) -> None:
    """The Python-level SIGINT/SIGTERM handler (runs in the main thread)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _stop(signum)


def _watch_signals() -> None:
    """Act on SIGINT/SIGTERM even while the main thread is blocked in native code.

    Python runs signal handlers in the main thread only, between bytecodes: blocked
    inside pyarrow (waiting for input on a pipe, say) it would not see a signal until
    the call returns. The C-level handler writes the signal number to the wakeup fd
    at once; this thread reads it and stops the process.
    """
    import os
    import threading

    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)
    signal.set_wakeup_fd(write_end, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            for signum in os.read(read_end, 16):
                if signum in (signal.SIGINT, signal.SIGTERM):
                    _stop(signum)

    threading.Thread(target=watch, name="bnorm-signals", daemon=True).start()


def _stop(signum: int) -> None:
    """Remove the temporary outputs and exit at once, quietly: 130 (SIGINT), 143 (SIGTERM).

    Exiting here rather than raising an exception to unwind is deterministic: an
    exception raised by a signal handler inside a library callback (polars calls
    back into Python) can come out as another error, with a traceback, and a second
    signal could interrupt the cleanup. A partial target never exists: outputs are
    renamed into place only when complete.
    """
    import os

    from ..io.atomic import remove_pending

    remove_pending()
    with contextlib.suppress(Exception):
        if sys.stderr.isatty():  # a progress bar may have hidden the cursor
            sys.stderr.write("\x1b[?25h\n")
            sys.stderr.flush()
    os._exit(128 + signum)


def help_hint(command: str | None) -> str:
    """Where a usage error points: the subcommand's help (``bnorm fit --help``)."""
    return f"Try '{command or 'bnorm'} --help' for help."


def _usage_error(message: str, command: str | None) -> None:
    from . import console  # Rich only when there is something to say

    console.error(message)
    console.stderr.print(help_hint(command), highlight=False, soft_wrap=True)


@contextlib.contextmanager
def handled(debug: bool, command: str | None = None) -> Iterator[None]:
    """One line on stderr and the right exit code for every expected failure.

    ``command`` ("bnorm fit") is the one whose help a usage error points at.
    numpy's floating-point RuntimeWarnings (an overflow in a sum) are not shown
    without --debug: bnorm checks its results and says what went wrong itself.
    """
    try:
        with warnings.catch_warnings():
            if not debug:
                warnings.simplefilter("ignore", RuntimeWarning)
            yield
    except BnormError as e:
        if debug:
            raise
        if e.exit_code == 2:
            _usage_error(e.cli_message(), command)
        else:
            from . import console

            console.error(e.cli_message())
        raise typer.Exit(e.exit_code) from None
    except BrokenPipeError:
        _quiet_broken_pipe()
    except OSError as e:
        if "Broken pipe" in str(e):
            _quiet_broken_pipe()
        if debug:
            raise
        from . import console

        console.error(f"{e.filename or 'I/O'}: {e.strerror or e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Terminated:
        raise typer.Exit(143) from None


def _quiet_broken_pipe() -> None:
    """The reader of stdout went away (`| head`): stop quietly, like other Unix tools."""
    import os

    with contextlib.suppress(OSError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    raise typer.Exit(0)


class OneLineErrors(TyperGroup):
    """The command group, with Click's parsing errors (``-b abc``, an unknown option)
    as one ``error:`` line and the subcommand's help hint, exit 2, instead of a panel."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        except NoArgsIsHelpError as e:  # `bnorm` alone: the help
            e.show()
            code = e.exit_code
        except ClickException as e:
            ctx = getattr(e, "ctx", None)
            _usage_error(" ".join(e.format_message().split()), ctx.command_path if ctx else None)
            code = e.exit_code
        except Abort:  # Ctrl-C at a prompt, or end of input
            code = 1
        if not standalone_mode:
            return code
        sys.exit(code if isinstance(code, int) else 0)


def reserve_std_fds() -> None:
    """Point a closed stdin/stdout/stderr (``<&-``, ``>&-``) at /dev/null.

    Python then has ``sys.stdin``/``sys.stdout`` set to None (which `streams`
    reports as "stdin/stdout is closed"); without this, the next file opened
    would get descriptor 0 or 1 and be read or written as if it were stdin/stdout.
    """
    import os

    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


def run(app: typer.Typer) -> None:
    """Run the app: signals handled, exit code kept, interpreter not finalized."""
    reserve_std_fds()
    pa.enable_signal_handlers(False)  # pyarrow's own handler would keep signals from ours
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    _watch_signals()
    try:
        app()
        code: object = 0
    except SystemExit as e:
        code = e.code
    exit_now(code)


def exit_now(code: object) -> None:
    """Flush stdout/stderr and leave without finalizing the interpreter.

    After a failed or interrupted CSV read, a pyarrow I/O thread can still hold
    the Python file object; finalizing the interpreter under it aborts the
    process ("terminate called without an active exception", exit 134) instead
    of exiting with bnorm's code. Every output file is closed by then.
    """
    import os

    if isinstance(code, str):  # sys.exit("message")
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):  # e.g. a closed pipe: stop quietly
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
