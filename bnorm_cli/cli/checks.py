"""Checks a data command makes: before any work (no output is an input or another
output, the output's format and kind, what --engine dask can read and write), and
before its output is published (the run's warnings, errors with ``--strict``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import DataError, UsageError
from ..core.model import BatchNorm
from ..io import streams
from ..io.atomic import check_run_paths, check_writable_target, writes_through
from ..io.formats import infer_format, is_data_file
from ..io.inputs import input_paths
from ..io.storage import is_url, redact
from ..report import summary as report
from .options import EngineOpt

if TYPE_CHECKING:
    import pyarrow as pa


def out_format(output: str, fmt: str | None) -> str:
    """As named, else from the file name; CSV (as for -) for a device or FIFO without one."""
    if output == "-":
        streams.stdout()  # closed (>&-): say so before the pass
    if fmt is None and output != "-" and writes_through(output) and not is_data_file(output):
        return "csv"
    return infer_format(output, fmt, "--output-format")


def check_paths(inputs: list[str], **outputs: str | None) -> None:
    """Before any work: no output may be an input or another output (one place for all)."""
    named = {"-" + k if len(k) == 1 else "--" + k.replace("_", "-"): v for k, v in outputs.items()}
    for flag, value in named.items():
        if value and is_url(value):  # only --engine dask's dataset goes to object storage
            raise UsageError(
                f"{flag} {redact(value)}: bnorm writes this to a local path (a URL is read,"
                " but written only as --engine dask's -o dataset); write it locally, then"
                " copy it with your store's tool"
            )
    check_run_paths(input_paths(inputs), named)


def run_warnings(
    model: BatchNorm, strict: bool, read: Sequence[str] = (), **kinds: bool
) -> list[str]:
    """The run's warnings (how the input was read, ``model.warnings_``,
    `BatchNorm.diagnose`); with --strict the first is an error."""
    found = [*read, *model.noted(cli=True), *model.diagnose(cli=True, **kinds)]
    refuse_warnings(found, strict)
    return found


def refuse_warnings(found: Sequence[str], strict: bool) -> None:
    """With --strict, the first of ``found`` is an error (naming how many more)."""
    if strict and found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise DataError(f"--strict: {found[0]}{more}")


def normalize_warnings(model: BatchNorm, strict: bool, read: Sequence[str], mode: str) -> list[str]:
    """`run_warnings` of a training-mode pass (``normalize --mode MODE``)."""
    return run_warnings(
        model,
        strict,
        read,
        fitting=True,
        uses_running=mode == "running",
        batch_mode=mode == "batch",
        renorm=mode == "renorm",
    )


def checked(
    batches: Iterator[pa.RecordBatch], check: Callable[[], object]
) -> Iterator[pa.RecordBatch]:
    """``batches``, then ``check()`` before the end: an error there still comes
    before the output is published (the writer removes its temporary file)."""
    yield from batches
    check()


def withholdable(output: str) -> bool:
    """Whether the output is a file written beside and renamed at the end (not stdout,
    a FIFO or a device, which are written through)."""
    return output != "-" and not writes_through(output)


def check_dataset_output(
    output: str, inputs: list[str], fmt: str | None, overwrite: bool = False
) -> None:
    """--engine dask writes a directory of Parquet parts (see `io.dataset`)."""
    from ..io.dataset import check_target

    if output == "-" or (fmt not in (None, "parquet")):
        raise UsageError(
            "--engine dask writes a directory of Parquet parts: give -o DIRECTORY"
            " (not -, no --output-format other than parquet)"
        )
    if is_url(output):
        check_target(output, overwrite)
        return
    if Path(output).suffix and not Path(output).is_dir():
        raise UsageError(
            f"-o {output}: --engine dask writes a directory of Parquet parts; give a"
            " directory name without a suffix (a single file is the serial engine's output)"
        )
    parent = Path(output).parent
    check_writable_target(str(parent / ".bnorm-probe"), "-o")
    for inp in input_paths(inputs):
        if Path(inp).resolve().is_relative_to(Path(output).resolve()):
            raise UsageError(f"-o {output}: holds an input ({inp}); choose another directory")
    check_target(output, overwrite)


def dask_units(
    engine: EngineOpt,
    scheduler: str | None,
    workers: int | None,
    inputs: list[str],
    input_format: str | None,
    report_path: str | None,
) -> list[Any] | None:
    """With ``--engine dask``: the plan's units of the inputs (else None)."""
    if engine is EngineOpt.serial:
        for flag, value in (("--scheduler", scheduler), ("--workers", workers)):
            if value is not None:
                raise UsageError(f"{flag} needs --engine dask")
        return None
    if scheduler is not None and workers is not None:
        raise UsageError("--workers sizes a local cluster; with --scheduler leave it out")
    if report.is_html(report_path):
        raise UsageError(
            "--report .html samples batches as they stream; with --engine dask write"
            " .md or .json, or use --engine serial"
        )
    from ..io.inputs import expand_inputs
    from ..io.plan import plan

    units = plan(expand_inputs(inputs, input_format))
    if units is None:
        raise UsageError(
            "--engine dask reads Parquet or Arrow IPC files (their footers say where each"
            " batch is); this input is text or stdin: use --engine serial"
        )
    return units
