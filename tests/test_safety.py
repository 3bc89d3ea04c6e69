"""Never destroy or hide data: output paths checked against inputs and each other,
special files written through (never replaced), no temporary file left by a failure.

Tests run as root here: a bug that renames a file onto a device would destroy it. The
regression cases therefore use private devices made with mknod in ``tmp_path``; the
few cases on the machine's own /dev/null, /dev/full and /dev/stdout (``real_dev`` in
the name) run only after the same case on a private device has passed.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import DataError
from bnorm_cli.io import readers

BNORM = [sys.executable, "-m", "bnorm_cli"]
runner = CliRunner()


def invoke(args: Sequence[str | Path]) -> tuple[int, str, str]:
    result = runner.invoke(app, [str(a) for a in args])
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}\n{result.stderr}")
    return result.exit_code, result.stdout, result.stderr


def one_line_error(outcome: tuple[int, str, str], *needles: str) -> str:
    code, out, err = outcome
    assert code == 1, err
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def files(directory: Path) -> dict[str, bytes]:
    """Every file below ``directory`` (hidden temporaries included), with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data.csv and its stats.json; the working directory."""
    rng = np.random.default_rng(0)
    frame = pl.DataFrame({"a": rng.normal(5, 2, 50), "b": rng.integers(0, 9, 50), "t": ["x"] * 50})
    frame.write_csv(tmp_path / "data.csv")
    monkeypatch.chdir(tmp_path)
    assert invoke(["fit", "data.csv", "-s", "stats.json", "-q"])[0] == 0
    return tmp_path


# -- 1. no output may be an input or another output ---------------------------------------
CLASHES = {
    "report onto the stats input": (
        ["transform", "data.csv", "-s", "stats.json", "-o", "o.csv", "--report", "stats.json"],
        "--report",
    ),
    "report onto the stats output": (
        ["fit", "data.csv", "-s", "s.json", "--report", "s.json"],
        "--report",
    ),
    "stats onto the data output": (
        ["normalize", "data.csv", "-o", "n.csv", "-s", "n.csv"],
        "-s",
    ),
    "report onto the data output": (
        [
            "transform",
            "data.csv",
            "-s",
            "stats.json",
            "-o",
            "r.json",
            "--report",
            "r.json",
            "--output-format",
            "csv",
        ],
        "--report",
    ),
    "relative spelling of an input": (
        ["normalize", "data.csv", "-o", "./sub/../data.csv"],
        "-o",
    ),
    "same new file, two spellings": (
        ["normalize", "data.csv", "-o", "new.csv", "-s", "sub/../new.csv"],
        "-s",
    ),
    "symlink to the stats input": (
        ["transform", "data.csv", "-s", "stats.json", "-o", "link.csv"],
        "-o",
    ),
    "hard link to an input": (
        ["normalize", "data.csv", "-o", "hard.csv"],
        "-o",
    ),
    "export onto its statistics": (
        ["export", "stats.json", "--to", "sklearn", "-o", "stats.json"],
        "-o",
    ),
    "stats onto a file of an input directory": (
        ["fit", "dir", "-s", "dir/part.csv"],
        "-s",
    ),
}


@pytest.mark.parametrize("name", CLASHES)
def test_an_output_that_is_an_input_or_another_output_is_refused(work: Path, name: str) -> None:
    args, option = CLASHES[name]
    (work / "sub").mkdir()
    (work / "dir").mkdir()
    (work / "dir" / "part.csv").write_bytes((work / "data.csv").read_bytes())
    (work / "link.csv").symlink_to("stats.json")
    os.link(work / "data.csv", work / "hard.csv")
    before = files(work)
    line = one_line_error(invoke(args), option)
    assert "input" in line or "output" in line
    assert files(work) == before


def test_a_character_device_may_be_named_twice(work: Path) -> None:
    null = private_device(work, "null", 3)
    code, _, err = invoke(["normalize", "data.csv", "-o", null, "-s", null, "-q"])
    assert code == 0, err
    assert stat.S_ISCHR(os.lstat(null).st_mode)


# -- 2. special files are written through, never replaced -----------------------------------
def private_device(directory: Path, name: str, minor: int) -> Path:
    """A private copy of /dev/null (minor 3) or /dev/full (minor 7)."""
    path = directory / name
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
    except (PermissionError, OSError) as e:
        pytest.skip(f"cannot make a device node here ({e})")
    return path


def assert_device(path: Path) -> None:
    assert stat.S_ISCHR(os.lstat(path).st_mode), f"{path} is no longer a character device"


def outputs_of(path: Path | str) -> dict[str, list[str]]:
    """Each command line with every kind of output sent to ``path``."""
    return {
        "-o csv": [
            "transform",
            "data.csv",
            "-s",
            "stats.json",
            "-o",
            str(path),
            "-q",
            "--output-format",
            "csv",
        ],
        "-o parquet": [
            "normalize",
            "data.csv",
            "-o",
            str(path),
            "-q",
            "--output-format",
            "parquet",
        ],
        "-o ipc": ["normalize", "data.csv", "-o", str(path), "-q", "--output-format", "ipc"],
        "-o ndjson": ["normalize", "data.csv", "-o", str(path), "-q", "--output-format", "ndjson"],
        "-s": ["fit", "data.csv", "-s", str(path), "-q"],
        "--report": ["fit", "data.csv", "-s", "new.json", "-q", "--report", f"{path}"],
        "export sklearn": ["export", "stats.json", "--to", "sklearn", "-o", str(path)],
        "export torch": ["export", "stats.json", "--to", "torch", "-o", str(path)],
    }


KINDS = list(outputs_of("x"))


@pytest.mark.parametrize("kind", KINDS)
def test_a_device_is_written_through(work: Path, kind: str) -> None:
    null = private_device(work, "null.md" if kind == "--report" else "null", 3)
    link = work / ("link.md" if kind == "--report" else "link")
    link.symlink_to(null)
    for target in (null, link):
        code, _, err = invoke(outputs_of(target)[kind])
        assert code == 0, err
        assert_device(null)
        assert link.is_symlink()
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("kind", KINDS)
def test_a_full_device_fails_naming_the_output(work: Path, kind: str) -> None:
    full = private_device(work, "full.md" if kind == "--report" else "full", 7)
    one_line_error(invoke(outputs_of(full)[kind]), str(full))
    assert_device(full)
    assert not [p for p in work.iterdir() if p.name.startswith(".")]


@pytest.fixture
def fifo(work: Path) -> Iterator[tuple[Path, list[bytes]]]:
    """A FIFO with a reader collecting what is written into it."""
    path = work / "pipe"
    os.mkfifo(path)
    got: list[bytes] = []

    def read() -> None:
        with open(path, "rb") as f:
            got.append(f.read())

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    yield path, got
    if reader.is_alive():  # the run never opened it: let the reader go
        with open(path, "wb"):
            pass
    reader.join(5)


@pytest.mark.parametrize("kind", ["-o csv", "-o parquet", "-o ipc", "-s", "export torch"])
def test_a_fifo_is_written_through(work: Path, fifo: tuple[Path, list[bytes]], kind: str) -> None:
    path, got = fifo
    code, _, err = invoke(outputs_of(path)[kind])
    assert code == 0, err
    assert stat.S_ISFIFO(os.lstat(path).st_mode)
    for _ in range(50):
        if got:
            break
        threading.Event().wait(0.1)
    assert got and len(got[0]) > 20
    if kind == "-o csv":
        assert got[0].startswith(b"a,b,t\n")


@pytest.mark.parametrize("kind", ["-o csv", "-o parquet", "-s", "export sklearn"])
def test_a_symlink_to_a_file_keeps_the_link(work: Path, kind: str) -> None:
    (work / "real").mkdir()
    target = work / "real" / "old"
    target.write_bytes(b"old content")
    link = work / "link"
    link.symlink_to("real/old")
    code, _, err = invoke(outputs_of(link)[kind])
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == "real/old"
    assert target.read_bytes() != b"old content" and len(target.read_bytes()) > 20
    assert sorted(p.name for p in (work / "real").iterdir()) == ["old"]


def test_real_dev_null_and_full_survive(work: Path) -> None:
    # the same cases on private devices passed first (test_a_device_is_written_through)
    private_device(work, "probe", 3)
    code, _, err = invoke(["normalize", "data.csv", "-o", "/dev/null", "-s", "/dev/null", "-q"])
    assert code == 0, err
    assert_device(Path("/dev/null"))
    one_line_error(invoke(["transform", "data.csv", "-s", "stats.json", "-o", "/dev/full"]))
    assert_device(Path("/dev/full"))


def test_real_dev_stdout_is_written_through(work: Path) -> None:
    private_device(work, "probe", 3)  # skips where devices cannot be made (not root)
    assert Path("/dev/stdout").is_symlink()
    with open(work / "out.csv", "wb") as out:  # a shell's `> out.csv`
        run = subprocess.run(
            [*BNORM, "transform", "data.csv", "-s", "stats.json", "-o", "/dev/stdout", "-q"],
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=60,
            check=False,
        )
    assert run.returncode == 0, run.stderr
    assert (work / "out.csv").read_bytes().startswith(b"a,b,t\n")
    assert Path("/dev/stdout").is_symlink()
    piped = subprocess.run(
        [*BNORM, "fit", "data.csv", "-s", "/dev/stdout", "-q"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 0, piped.stderr
    assert b'"bnorm-stats"' in piped.stdout
    assert not [p for p in Path("/dev").iterdir() if p.name.startswith(".stdout.bnorm")]


# -- 3. CSV quoting does not depend on the file size or the reader path ------------------------
def quoted_csv(size: int, seed: int) -> bytes:
    """About ``size`` bytes of CSV with quoted fields, then a few stray '"' put anywhere."""
    rng = random.Random(seed)
    notes = ["plain", '"a, b"', '"two\nlines"', '"say ""hi"""', "", '5" screen']
    rows, total, i = ["id,x,note"], 0, 0
    while total < size:
        rows.append(f"{i},{rng.uniform(-9, 9):.3f},{rng.choice(notes)}")
        total += len(rows[-1]) + 1
        i += 1
    data = bytearray(("\n".join(rows) + "\n").encode())
    for _ in range(rng.randint(1, 3)):
        data.insert(rng.randrange(len(data)), ord('"'))
    return bytes(data)


def pyarrow_alone(data: bytes) -> pa.Table | str:
    """What pyarrow's streaming reader makes of ``data`` with bnorm's options and block
    sizes (types from the first block), or bnorm's wording of its error."""
    parse = pacsv.ParseOptions(newlines_in_values=True)
    inferred = pa.schema([])
    try:
        first = pacsv.ReadOptions(block_size=readers.CSV_BLOCK_SIZE, use_threads=False)
        inferred = pacsv.open_csv(
            io.BytesIO(data),
            read_options=first,
            parse_options=parse,
            convert_options=readers._convert({}),
        ).schema
        chosen = set(readers._numeric_names(inferred))
        types = {f.name: pa.float64() if f.name in chosen else pa.string() for f in inferred}
        rest = pacsv.ReadOptions(block_size=readers.CSV_READ_BLOCK_SIZE, use_threads=False)
        return pacsv.open_csv(
            io.BytesIO(data),
            read_options=rest,
            parse_options=parse,
            convert_options=readers._convert(types),
        ).read_all()
    except pa.ArrowInvalid as e:
        return readers._explain(e, inferred)


def bnorm_reads(path: str) -> pa.Table | str:
    try:
        source = readers.open_source(path, "csv", 1 << 16)
        return pa.Table.from_batches(list(source.pieces), source.schema)
    except DataError as e:
        return str(e).split(": ", 1)[1]


def same_result(a: pa.Table | str, b: pa.Table | str) -> bool:
    if isinstance(a, str) or isinstance(b, str):
        return a == b
    return a.schema == b.schema and all(
        [repr(v) for v in a.column(n).to_pylist()] == [repr(v) for v in b.column(n).to_pylist()]
        for n in a.column_names
    )


def through_a_pipe(data: bytes, seed: int, monkeypatch: pytest.MonkeyPatch) -> pa.Table | str:
    """bnorm reading ``data`` from stdin, a pipe fed in chunks of random sizes."""
    read_end, write_end = os.pipe()
    rng = random.Random(seed)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(write_end, "wb", buffering=0) as w:
            pos = 0
            while pos < len(data):
                n = rng.choice([1, 7, 500, 70_000, 1 << 20])
                w.write(data[pos : pos + n])
                pos += n

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    with open(read_end, "rb") as r:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(r))
        got = bnorm_reads("-")
    writer.join(10)
    return got


SIZES = [(1 << 10, s) for s in range(8)] + [(64 << 10, s) for s in range(4)]
SIZES += [(5 << 20, s) for s in range(3)] + [(16 << 20, 0)]


@pytest.mark.parametrize(("size", "seed"), SIZES, ids=[f"{z >> 10}KiB-{s}" for z, s in SIZES])
def test_stray_quotes_read_as_pyarrow_reads_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, size: int, seed: int
) -> None:
    data = quoted_csv(size, seed)
    (tmp_path / "q.csv").write_bytes(data)
    expected = pyarrow_alone(data)
    assert same_result(bnorm_reads(str(tmp_path / "q.csv")), expected)
    assert same_result(through_a_pipe(data, seed, monkeypatch), expected)


def test_a_stray_quote_in_a_large_file_is_text(work: Path) -> None:
    rows = [f'{i},1.5,5" screen' for i in range(300_000)]  # about 5 MiB, over one block
    (work / "big.csv").write_text("\n".join(["id,x,note", *rows]) + "\n")
    code, _, err = invoke(["fit", "big.csv", "-s", "big.json", "-q"])
    assert code == 0, err
    columns = json.loads((work / "big.json").read_text())["columns"]
    assert sorted(columns) == ["id", "x"] and columns["x"]["count"] == 300_000


def first_block_ends_inside_a_number() -> bytes:
    """A CSV whose first 4 MiB block ends inside a value of column x ("1e|5"), after a
    stray quote: cut anywhere but at a row end, x would read as text."""
    rows = ["id,x,note", '0,1e5,5" screen']
    body = "".join(f"{i},1e5,plain\n" for i in range(1, 400_000))
    head = "\n".join(rows) + "\n"
    block = readers.CSV_BLOCK_SIZE
    start = block - len(head) - len(body[:block].rsplit("\n", 1)[0]) - 1
    pad = 0
    while True:  # pad the first note so that the block ends right after "1e"
        text = head.replace("screen", "screen" + "s" * pad) + body
        if text[block - 2 : block] == "1e":
            return text.encode()
        pad += 1
        assert pad < 100 + start


def test_the_first_block_is_cut_at_a_row_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = first_block_ends_inside_a_number()
    (tmp_path / "f.csv").write_bytes(data)
    for got in (bnorm_reads(str(tmp_path / "f.csv")), through_a_pipe(data, 1, monkeypatch)):
        assert isinstance(got, pa.Table), got
        assert got.schema.field("x").type == pa.float64()
        assert got.num_rows == 400_000


class Counting(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        n = min(len(buffer), len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def test_a_stray_quote_does_not_make_the_reader_hold_the_file() -> None:
    from bnorm_cli.io.csv_parallel import parallel_csv

    data = 'id,x,note\n0,1.5,5" screen\n' + "".join(f"{i},2,a\n" for i in range(200_000))
    text = Counting(data.encode())
    parse = pacsv.ParseOptions(newlines_in_values=True)
    batches = parallel_csv(text, ["id", "x", "note"], parse, readers._convert({}), 4096, 2)
    next(batches)
    assert text.pos < 64 << 10  # a few pieces in flight, not the whole 2.5 MB
    assert sum(b.num_rows for b in batches) > 0


# -- 4. a truncated or failing input: an error naming it, and no temporary file left ----------
def frame(n: int = 3000) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    return pl.DataFrame({"a": rng.normal(0, 1, n), "b": rng.integers(0, 5, n), "t": ["x"] * n})


def write_as(data: pl.DataFrame, path: Path) -> None:
    {
        ".csv": data.write_csv,
        ".parquet": lambda p: data.write_parquet(p, row_group_size=500),
        ".arrow": lambda p: data.write_ipc(p, compression="uncompressed"),
        ".arrows": data.write_ipc_stream,
        ".ndjson": data.write_ndjson,
    }[path.suffix](path)


def test_an_ipc_file_truncated_while_it_is_read_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "in.arrow"
    pa_table = frame(200_000).to_arrow()
    with pa.ipc.new_file(path, pa_table.schema) as w:
        for batch in pa_table.to_batches(max_chunksize=10_000):
            w.write_batch(batch)
    script = (
        "import os, sys\n"
        "from bnorm_cli.io import readers\n"
        "from bnorm_cli.core.errors import DataError\n"
        f"path = {str(path)!r}\n"
        "source = readers.open_source(path, 'ipc', 1000)\n"
        "next(source.pieces)\n"
        "os.truncate(path, os.path.getsize(path) // 3)\n"
        "try:\n"
        "    for _ in source.pieces: pass\n"
        "except DataError as e:\n"
        "    print(e); sys.exit(3)\n"
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60)
    assert run.returncode == 3, (run.returncode, run.stderr[-500:])
    assert str(path) in run.stdout.decode()


FAILURES = {
    "bad value mid-file": ("in.csv", lambda d: d.replace(b",2500,x\n", b",inf,x\n", 1)),
    "csv cut mid-row": ("in.csv", lambda d: d[: len(d) * 2 // 3]),
    "parquet truncated": ("in.parquet", lambda d: d[: len(d) // 2]),
    "ipc file truncated": ("in.arrow", lambda d: d[: len(d) // 2]),
    "ipc stream truncated": ("in.arrows", lambda d: d[: len(d) * 2 // 3]),
    "ndjson cut mid-row": ("in.ndjson", lambda d: d[: len(d) * 2 // 3]),
}


@pytest.mark.parametrize("name", [*FAILURES, "schema differs in a later file", "disk full"])
def test_no_temporary_file_survives_a_failure(work: Path, name: str) -> None:
    out = work / "out"
    out.mkdir()
    data = frame().with_columns(b=pl.int_range(0, 3000)) if name in FAILURES else frame()
    outputs = ["-o", out / "o.parquet", "-s", out / "s.json", "--report", out / "r.json"]
    if name in FAILURES:
        file, damage = FAILURES[name]
        write_as(data, work / file)
        (work / file).write_bytes(damage((work / file).read_bytes()))
        inputs: list[str | Path] = [work / file]
    elif name == "disk full":
        write_as(data, work / "in.csv")
        inputs = [work / "in.csv"]
        full = private_device(work, "full", 7)  # the data fails mid-write; nothing else is left
        outputs = ["-o", full, "--output-format", "parquet", "-s", out / "s.json"]
    else:
        write_as(data, work / "in1.csv")
        write_as(data.with_columns(c=pl.lit(1.0)), work / "in2.csv")
        inputs = [work / "in1.csv", work / "in2.csv"]
    one_line_error(invoke(["normalize", *inputs, *outputs, "-b", "100", "-q"]))
    assert list(out.iterdir()) == []
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []


# -- 5. a FIFO input is opened once -------------------------------------------------------------
@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".parquet", ".arrow", ".arrows"])
def test_a_fifo_input_is_opened_once(work: Path, suffix: str) -> None:
    source = work / f"data{suffix}"
    write_as(frame(), source)
    fifo = work / f"in{suffix}"
    os.mkfifo(fifo)

    def feed() -> None:
        with contextlib.suppress(BrokenPipeError), open(fifo, "wb") as w:
            w.write(source.read_bytes())

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        run = subprocess.run(
            [*BNORM, "fit", str(fifo), "-s", str(work / "s.json"), "-q"],
            capture_output=True,
            timeout=60,
        )
    finally:  # a writer still waiting for a reader is let go
        with contextlib.suppress(OSError):
            os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
        writer.join(5)
    assert run.returncode == 0, run.stderr
    stats = json.loads((work / "s.json").read_text())
    assert stats["rows"] == 3000 and sorted(stats["columns"]) == ["a", "b"]


def test_normalize_publishes_nothing_when_its_statistics_cannot_be_written(work: Path) -> None:
    """The statistics file is written before the data output is renamed into place."""
    full = private_device(work, "full", 7)
    before = set(p.name for p in work.iterdir())
    outcome = invoke(["normalize", "data.csv", "-o", "n.csv", "-s", full, "-q"])
    assert outcome[0] == 1, outcome[2]
    assert "full" in outcome[2]
    assert set(p.name for p in work.iterdir()) == before  # no n.csv, no temporary file
    assert_device(full)
