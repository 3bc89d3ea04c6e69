"""Formats in and out, compressed inputs, globs and directories, pipes.

Every format must give the numbers the Parquet path gives (the normalized columns
are read as float64 whatever the container) and hand text columns back as they
were. Several files are one dataset: their statistics equal those of the
concatenated data bit for bit. On pipes, rows flow out while the input is still
coming in.
"""

from __future__ import annotations

import gzip
import io
import json
import shlex
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal, assert_series_equal
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.io import readers, streams

BNORM = [sys.executable, "-m", "bnorm_cli"]
TIMEOUT = 60
NUMERIC = ["a", "b"]
TEXT = ["id", "note", "day"]
runner = CliRunner()


# -- data and helpers ----------------------------------------------------------------------------
def make_frame(n: int = 50, seed: int = 0) -> pl.DataFrame:
    """Floats with nulls, integers, and text that must come back as it was."""
    rng = np.random.default_rng(seed)
    a: list[float | None] = [float(v) for v in rng.normal(5.0, 2.0, n)]
    for i in range(3, n, 11):
        a[i] = None
    return pl.DataFrame(
        {
            "id": [f"r{i:05d}" for i in range(n)],
            "a": pl.Series(a, dtype=pl.Float64),
            "b": rng.integers(-1000, 1000, n),
            "note": ["x, y" if i % 3 else 'say "hi"\nthere\t!' for i in range(n)],
            "day": [f"2024-03-{1 + i % 28:02d}" for i in range(n)],  # looks like a date: stays text
        }
    )


def write(frame: pl.DataFrame, path: Path) -> Path:
    """``frame`` in the format its name says (compressed by a .gz/.zst/.bz2 suffix)."""
    name = path.name
    for suffix, opener in ((".gz", gzip.compress), (".zst", _zstd), (".bz2", _bz2)):
        if name.endswith(suffix):
            inner = write(frame, path.with_name(name[: -len(suffix)]))
            path.write_bytes(opener(inner.read_bytes()))
            inner.unlink()
            return path
    suffix = path.suffix
    if suffix == ".parquet":
        frame.write_parquet(path)
    elif suffix == ".csv":
        frame.write_csv(path)
    elif suffix == ".tsv":
        frame.write_csv(path, separator="\t")
    elif suffix in (".ndjson", ".jsonl"):
        frame.write_ndjson(path)
    elif suffix in (".arrow", ".feather", ".ipc"):
        with pa.ipc.new_file(path, frame.to_arrow().schema) as w:
            w.write_table(frame.to_arrow(), max_chunksize=7)
    elif suffix == ".arrows":
        with pa.ipc.new_stream(path, frame.to_arrow().schema) as w:
            w.write_table(frame.to_arrow(), max_chunksize=7)
    else:
        raise ValueError(path)
    return path


def _zstd(data: bytes) -> bytes:
    out = pa.BufferOutputStream()
    with pa.CompressedOutputStream(out, "zstd") as f:
        f.write(data)
    return bytes(out.getvalue())


def _bz2(data: bytes) -> bytes:
    import bz2

    return bz2.compress(data)


def read(path: Path | bytes, fmt: str) -> pl.DataFrame:
    """An output, text columns as text."""
    data = io.BytesIO(path if isinstance(path, bytes) else path.read_bytes())
    if fmt == "parquet":
        return pl.read_parquet(data)
    if fmt in ("csv", "tsv"):
        frame = pl.read_csv(data, infer_schema=False, separator="\t" if fmt == "tsv" else ",")
        return frame.with_columns(pl.col(c).cast(pl.Float64) for c in NUMERIC)
    if fmt == "ndjson":
        return pl.read_ndjson(data)
    if fmt == "ipc-stream":
        return _from_arrow(pa.ipc.open_stream(data).read_all())
    return _from_arrow(pa.ipc.open_file(data).read_all())


def _from_arrow(table: pa.Table) -> pl.DataFrame:
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    return frame


def run(args: Sequence[str | Path], code: int = 0, stdin: bytes | None = None) -> Any:
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    detail = f"exit {result.exit_code}\nstdout: {result.stdout!r}\nstderr: {result.stderr}"
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(detail) from result.exception
    assert result.exit_code == code, detail
    assert "Traceback" not in result.stderr
    return result


def fit(inputs: Sequence[str | Path], stats: Path, *options: str | Path) -> dict[str, Any]:
    run(["fit", *inputs, "-s", stats, "-q", *options])
    doc: dict[str, Any] = json.loads(stats.read_text())
    return doc


def numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """The statistics of a stats file, without what names the input's types."""
    keep = ("rows", "num_batches_tracked")
    columns = {
        c: {k: v for k, v in col.items() if k != "dtype"} for c, col in doc["columns"].items()
    }
    return {"columns": columns, **{k: doc[k] for k in keep}}


def assert_same_output(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Normalized columns equal to the last bit; text columns as they were."""
    assert got.columns == expected.columns
    for c in NUMERIC:
        assert_series_equal(got[c], expected[c])
    for c in TEXT:
        assert got[c].cast(pl.String).to_list() == expected[c].cast(pl.String).to_list(), c


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, pl.DataFrame]:
    """The Parquet data, its statistics (batch size 7) and the Parquet path's output."""
    d = tmp_path_factory.mktemp("fitted")
    data = write(make_frame(), d / "data.parquet")
    stats = d / "stats.json"
    fit([data], stats, "-b", "7")
    run(["transform", data, "-s", stats, "-o", d / "expected.parquet", "-q", "-b", "7"])
    return data, stats, pl.read_parquet(d / "expected.parquet")


# -- each format in ------------------------------------------------------------------------------
INPUT_NAMES = [
    "data.csv",
    "data.tsv",
    "data.ndjson",
    "data.jsonl",
    "data.arrow",
    "data.feather",
    "data.ipc",
    "data.arrows",
    "data.csv.gz",
    "data.tsv.bz2",
    "data.ndjson.zst",
    "data.jsonl.gz",
]


@pytest.mark.parametrize("name", INPUT_NAMES)
def test_each_input_format_gives_the_parquet_numbers(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame], name: str
) -> None:
    _, stats, expected = fitted
    data = write(make_frame(), tmp_path / name)
    out = tmp_path / "out.parquet"
    run(["transform", data, "-s", stats, "-o", out, "-q", "-b", "7"])
    assert_same_output(pl.read_parquet(out), expected)
    # fit from this format: the statistics of the Parquet file, bit for bit
    assert numbers(fit([data], tmp_path / "s.json", "-b", "7")) == numbers(
        json.loads(stats.read_text())
    )


def test_ndjson_types(tmp_path: Path) -> None:
    """Ints then floats in one column are numbers; date-like and null-first fields stay text."""
    lines = [
        '{"n": 1, "x": 2, "when": "2024-01-01", "tag": null, "flag": true}',
        '{"n": 2.5, "x": 3, "when": "2024-01-02 10:00:00", "tag": "a", "flag": false}',
        '{"n": -1e3, "x": 4, "when": "not a date", "tag": "b", "flag": null}',
    ]
    data = tmp_path / "t.ndjson"
    data.write_text("\n".join(lines) + "\n")
    doc = fit([data], tmp_path / "s.json", "-b", "2")
    assert list(doc["columns"]) == ["n", "x"]
    out = tmp_path / "out.ndjson"
    run(["transform", data, "-s", tmp_path / "s.json", "-o", out, "-q"])
    got = pl.read_ndjson(out)
    assert got.columns == ["n", "x", "when", "tag", "flag"]
    assert got["when"].to_list() == ["2024-01-01", "2024-01-02 10:00:00", "not a date"]
    assert got["tag"].to_list() == [None, "a", "b"]
    assert got["flag"].to_list() == [True, False, None]


def test_ndjson_later_block_errors_name_the_column(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 200)
    good = [json.dumps({"v": i, "s": f"t{i}"}) for i in range(40)]
    data = tmp_path / "d.ndjson"
    data.write_text("\n".join([*good, '{"v": "oops", "s": "x"}']) + "\n")
    result = run(["fit", data, "-s", tmp_path / "s.json"], code=1)
    assert '"v"' in result.stderr and "-x v" in result.stderr and "d.ndjson" in result.stderr
    data.write_text("\n".join([*good, '{"v": 1, "s": 5}']) + "\n")
    result = run(["fit", data, "-s", tmp_path / "s.json"], code=1)
    assert '"s"' in result.stderr and "d.ndjson" in result.stderr
    assert not (tmp_path / "s.json").exists()


# -- each format out -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "fmt"),
    [
        ("out.csv", "csv"),
        ("out.tsv", "tsv"),
        ("out.ndjson", "ndjson"),
        ("out.jsonl", "ndjson"),
        ("out.arrow", "ipc"),
        ("out.feather", "ipc"),
        ("out.ipc", "ipc"),
        ("out.arrows", "ipc-stream"),
        ("out.parquet", "parquet"),
    ],
)
def test_each_output_format(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame], name: str, fmt: str
) -> None:
    data, stats, expected = fitted
    out = tmp_path / name
    run(["transform", data, "-s", stats, "-o", out, "-q", "-b", "7"])
    if fmt == "ipc":
        assert out.read_bytes()[:6] == b"ARROW1"  # the IPC file format, readable by pl.read_ipc
        assert_frame_equal(pl.read_ipc(out), expected)
    assert_same_output(read(out, fmt), expected)


def test_ndjson_output_refuses_bytes(tmp_path: Path) -> None:
    data = tmp_path / "d.parquet"
    pl.DataFrame({"a": [1.0, 2.0], "raw": [b"x", b"y"]}).write_parquet(data)
    out = tmp_path / "out.ndjson"
    result = run(["normalize", data, "-o", out], code=1)
    assert '"raw"' in result.stderr and "NDJSON" in result.stderr
    assert not out.exists()


def test_explicit_formats_override_the_names(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    _, stats, expected = fitted
    data = tmp_path / "data.txt"
    make_frame().write_csv(data, separator="\t")
    out = tmp_path / "out.dat"
    args = ["--input-format", "tsv", "--output-format", "ndjson", "-q", "-b", "7"]
    run(["transform", data, "-s", stats, "-o", out, *args])
    assert_same_output(read(out, "ndjson"), expected)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["transform", "data.parquet", "-s", "stats.json", "-o", "out.csv.gz"], "compress"),
        (["fit", "data.parquet.gz", "-s", "new.json"], "decompress"),
        (["fit", "data.parquet", "-s", "new.json", "--input-format", "xlsx"], "ndjson"),
    ],
)
def test_format_usage_errors(
    tmp_path: Path,
    fitted: tuple[Path, Path, pl.DataFrame],
    monkeypatch: pytest.MonkeyPatch,
    args: list[str],
    needle: str,
) -> None:
    data, stats, _ = fitted
    for p in (data, stats):
        (tmp_path / p.name).write_bytes(p.read_bytes())
    (tmp_path / "data.parquet.gz").write_bytes(gzip.compress(data.read_bytes()))
    monkeypatch.chdir(tmp_path)
    result = run(args, code=2)
    assert needle in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "data.parquet",
        "data.parquet.gz",
        "stats.json",
    ]


# -- several files: globs, directories, hive folders ---------------------------------------------
def _parts(frame: pl.DataFrame, sizes: Sequence[int]) -> list[pl.DataFrame]:
    out, start = [], 0
    for size in sizes:
        out.append(frame.slice(start, size))
        start += size
    return out


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_glob_statistics_equal_the_concatenation(tmp_path: Path, suffix: str) -> None:
    frame = make_frame(200, seed=3)
    whole = write(frame, tmp_path / f"whole{suffix}")
    parts = tmp_path / "parts"
    parts.mkdir()
    # names sort in reading order; sizes that do not divide the batch size
    for i, part in enumerate(_parts(frame, [13, 1, 60, 0, 126])):
        write(part, parts / f"p{i:02d}{suffix}")
    for b in ("7", "64"):
        expected = fit([whole], tmp_path / "whole.json", "-b", b)
        got = fit([str(parts / f"*{suffix}")], tmp_path / "glob.json", "-b", b)
        assert numbers(got) == numbers(expected)
        assert fit([parts], tmp_path / "dir.json", "-b", b)["columns"] == got["columns"]
    run(["transform", whole, "-s", tmp_path / "whole.json", "-o", tmp_path / "w.parquet", "-q"])
    pattern = str(parts / f"*{suffix}")
    run(["transform", pattern, "-s", tmp_path / "whole.json", "-o", tmp_path / "g.parquet", "-q"])
    assert_frame_equal(
        pl.read_parquet(tmp_path / "g.parquet"), pl.read_parquet(tmp_path / "w.parquet")
    )


def test_directory_is_read_recursively_in_sorted_order(tmp_path: Path) -> None:
    frame = make_frame(30, seed=4)
    root = tmp_path / "data"
    (root / "2024").mkdir(parents=True)
    (root / "2025").mkdir()
    a, b, c = _parts(frame, [10, 10, 10])
    write(c, root / "2025" / "01.parquet")
    write(b, root / "2024" / "02.parquet")
    write(a, root / "2024" / "01.parquet")
    # not data: hidden, underscore-prefixed, or of no known format
    (root / "_SUCCESS").write_text("")
    (root / ".02.parquet.crc").write_bytes(b"crc")
    (root / "_temporary").mkdir()
    write(frame, root / "_temporary" / "zz.parquet")
    (root / "README.txt").write_text("notes")
    run(["transform", root, "-s", _stats(tmp_path, frame), "-o", tmp_path / "out.csv", "-q"])
    assert pl.read_csv(tmp_path / "out.csv")["id"].to_list() == frame["id"].to_list()


def _stats(tmp_path: Path, frame: pl.DataFrame) -> Path:
    stats = tmp_path / "stats.json"
    fit([write(frame, tmp_path / "fit.parquet")], stats)
    return stats


def test_hive_partition_folders_become_text_columns(tmp_path: Path) -> None:
    frame = make_frame(40, seed=5).select("id", "a", "b")
    root = tmp_path / "ds"
    folders = [
        "year=2023/city=Oslo",
        "year=2023/city=S%C3%A3o%20Paulo",
        "year=2024/city=Oslo",
        "year=__HIVE_DEFAULT_PARTITION__/city=Oslo",
    ]
    for folder, part in zip(folders, _parts(frame, [10, 10, 10, 10]), strict=True):
        (root / folder).mkdir(parents=True)
        write(part, root / folder / "part-0.parquet")
    doc = fit([root], tmp_path / "s.json", "-b", "8")
    assert list(doc["columns"]) == ["a", "b"]  # partition keys are text: never normalized
    assert doc["input_columns"]["year"] == doc["input_columns"]["city"] == "String"
    run(["transform", root, "-s", tmp_path / "s.json", "-o", tmp_path / "o.parquet", "-q"])
    out = pl.read_parquet(tmp_path / "o.parquet")
    assert out.columns == ["id", "a", "b", "year", "city"]
    # sorted by path: "year=2023" < "year=2024" < "year=__HIVE..."; "city=Oslo" < "city=S..."
    assert out["year"].to_list() == ["2023"] * 20 + ["2024"] * 10 + [None] * 10
    assert out["city"].to_list() == ["Oslo"] * 10 + ["São Paulo"] * 10 + ["Oslo"] * 20
    assert out["id"].to_list() == frame["id"].to_list()
    # the same statistics as the files without their folders
    flat = fit([str(root / "**" / "*.parquet")], tmp_path / "flat.json", "-b", "8")
    assert numbers(flat) == numbers(doc)


def test_hive_key_already_in_the_file_and_uneven_depths(tmp_path: Path) -> None:
    frame = make_frame(20, seed=6).select("id", "a").with_columns(pl.lit("in-file").alias("k"))
    root = tmp_path / "ds"
    for k, part in zip(("1", "2"), _parts(frame, [10, 10]), strict=True):
        (root / f"k={k}").mkdir(parents=True)
        write(part, root / f"k={k}" / "p.parquet")
    run(["normalize", root, "-o", tmp_path / "o.parquet", "-q"])
    assert pl.read_parquet(tmp_path / "o.parquet")["k"].unique().to_list() == ["in-file"]
    write(frame, root / "loose.parquet")  # no k= folder: a different layout
    result = run(["fit", root, "-s", tmp_path / "s.json"], code=1)
    assert "loose.parquet" in result.stderr and "partition" in result.stderr


def test_several_inputs_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    frame = make_frame(10)
    monkeypatch.chdir(tmp_path)
    Path("mixed").mkdir()
    write(frame, tmp_path / "mixed" / "a.csv")
    write(frame, tmp_path / "mixed" / "b.parquet")
    result = run(["fit", "mixed", "-s", "s.json"], code=2)
    assert "mixed" in result.stderr and "--input-format" in result.stderr
    run(["fit", "mixed", "-s", "s.json", "-q", "--input-format", "parquet"])  # picks one
    result = run(["fit", "nothing/*.parquet", "-s", "t.json"], code=1)
    assert "nothing/*.parquet" in result.stderr and "no file matches" in result.stderr
    Path("empty").mkdir()
    result = run(["fit", "empty", "-s", "t.json"], code=1)
    assert "empty" in result.stderr
    write(frame.drop("note"), tmp_path / "mixed" / "c.parquet")  # other columns
    result = run(["fit", "mixed/*.parquet", "-s", "t.json"], code=1)
    assert "mixed/c.parquet" in result.stderr and "mixed/b.parquet" in result.stderr
    assert not Path("t.json").exists()
    # an output that a glob reads is refused, as any input is
    before = (tmp_path / "mixed" / "b.parquet").read_bytes()
    result = run(["normalize", "mixed/*.parquet", "-o", "mixed/b.parquet"], code=1)
    assert "input" in result.stderr
    assert (tmp_path / "mixed" / "b.parquet").read_bytes() == before


def test_later_csv_files_read_the_first_ones_numbers(tmp_path: Path) -> None:
    """A column empty in a later file's first block is still read as numbers."""
    first = pl.DataFrame({"x": [1.0, 2.0, 3.0], "t": ["a", "b", "c"]})
    second = pl.DataFrame({"x": [None, None], "t": ["d", "e"]}, schema=first.schema)
    write(first, tmp_path / "1.csv")
    write(second, tmp_path / "2.csv")
    doc = fit([str(tmp_path / "*.csv")], tmp_path / "s.json")
    assert doc["columns"]["x"]["count"] == 3 and doc["columns"]["x"]["null_count"] == 2


# -- streaming readers ---------------------------------------------------------------------------
class _Trickle:
    """A pipe-like stream handing out its bytes in given chunk sizes (``readinto1``)."""

    def __init__(self, data: bytes, sizes: Sequence[int]) -> None:
        self._data, self._sizes, self._pos, self._i = data, list(sizes) or [1], 0, 0

    def read(self, n: int) -> bytes:
        out = self._data[self._pos : self._pos + n]
        self._pos += len(out)
        return out

    def readinto1(self, view: memoryview) -> int:
        size = self._sizes[self._i % len(self._sizes)]
        self._i += 1
        chunk = self._data[self._pos : self._pos + min(size, len(view))]
        view[: len(chunk)] = chunk
        self._pos += len(chunk)
        return len(chunk)

    def close(self) -> None:
        pass


@settings(max_examples=25, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 300), min_size=1, max_size=8),
    block=st.sampled_from([256, 1024]),
    fmt=st.sampled_from(["csv", "ndjson"]),
)
def test_rows_cut_from_a_trickling_pipe(sizes: list[int], block: int, fmt: str) -> None:
    """Short reads from a pipe are cut at row ends (outside quotes): the same table."""
    notes = ['say "hi"\nthen\n\n"bye"\n', "x, y", '""', "one\ntwo"]
    frame = make_frame(60, seed=7).with_columns(
        note=pl.Series([notes[i % len(notes)] for i in range(60)])
    )
    buf = io.BytesIO()
    frame.write_csv(buf) if fmt == "csv" else frame.write_ndjson(buf)
    data = buf.getvalue()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(readers, "CSV_BLOCK_SIZE", block)
        mp.setattr(streams, "is_pipe", lambda raw: True)
        mp.setattr(streams, "arrived", lambda raw: False)
        mp.setattr(readers, "_open_binary", lambda path: _Trickle(data, sizes))
        source = readers.open_source("-", fmt, 10)
        pieces = list(source.pieces)
    got = pa.Table.from_batches(pieces, source.schema)
    assert got.column("id").to_pylist() == frame["id"].to_list()
    assert got.column("note").to_pylist() == frame["note"].to_list()
    assert got.column("a").to_pylist() == frame["a"].to_list()


def test_type_inference_reads_only_the_first_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first (inferring) reader gets one block and nothing more to hold."""
    monkeypatch.setattr(readers, "CSV_BLOCK_SIZE", 1000)
    data = write(make_frame(400), tmp_path / "d.csv")
    seen: list[int] = []
    real = streams.Recorder.rewind

    def rewind(self: Any) -> None:
        seen.append(sum(map(len, self._recorded)))
        real(self)

    monkeypatch.setattr(streams.Recorder, "rewind", rewind)
    # as for a pipe: a regular file is opened again rather than replayed
    monkeypatch.setattr(readers, "_regular_file", lambda path: False)
    source = readers.open_source(str(data), "csv", 64)
    assert seen == [1000]
    assert sum(b.num_rows for b in source.pieces) == 400


# -- pipes (real processes) ----------------------------------------------------------------------
def bnorm(
    args: Sequence[str | Path], stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*BNORM, *map(str, args)], input=stdin, capture_output=True, timeout=TIMEOUT, check=False
    )


def test_ipc_stream_on_stdout_in_a_shell_pipeline(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    _, stats, expected = fitted
    data = write(make_frame(), tmp_path / "data.csv")
    bn = " ".join(map(shlex.quote, BNORM))
    reader = (
        "import pyarrow as pa, sys; print(pa.ipc.open_stream(sys.stdin.buffer).read_all().num_rows)"
    )
    command = (
        f"cat {shlex.quote(str(data))} | {bn} transform - -s {shlex.quote(str(stats))} -o -"
        f" --output-format ipc -b 7 -q | {shlex.quote(sys.executable)} -c {shlex.quote(reader)}"
    )
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command], capture_output=True, timeout=TIMEOUT, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"50\n" and done.stderr == b""
    # the stream holds the Parquet path's numbers; IPC (stream or file) and NDJSON from stdin
    for name, fmt in [
        ("x.csv", "csv"),
        ("x.arrows", "ipc"),
        ("x.arrow", "ipc"),
        ("x.jsonl", "ndjson"),
    ]:
        payload = write(make_frame(), tmp_path / name).read_bytes()
        args = ["transform", "-", "-s", stats, "-o", "-", "--input-format", fmt, "-q", "-b", "7"]
        done = bnorm([*args, "--output-format", "ipc"], stdin=payload)
        assert done.returncode == 0, done.stderr
        assert_same_output(read(done.stdout, "ipc-stream"), expected)


def test_closed_stdout_is_quiet_for_every_format(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    _, stats, _ = fitted
    data = write(make_frame(20_000, seed=8), tmp_path / "big.parquet")
    for fmt in ("ipc", "ndjson", "tsv"):
        first = subprocess.Popen(
            [
                *BNORM,
                "transform",
                data,
                "-s",
                stats,
                "-o",
                "-",
                "--output-format",
                fmt,
                "-b",
                "500",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        head = subprocess.Popen(["head", "-c", "100"], stdin=first.stdout, stdout=subprocess.PIPE)
        assert first.stdout is not None
        first.stdout.close()
        head.communicate(timeout=TIMEOUT)
        _, err = first.communicate(timeout=TIMEOUT)
        assert (first.returncode, err) == (0, b""), (fmt, err)


def _first_rows_before_the_end(payload: bytes, cut: int, args: Sequence[str | Path]) -> None:
    """Write ``payload[:cut]`` to bnorm's stdin: output must arrive while stdin is still open."""
    with subprocess.Popen(
        [*BNORM, *map(str, args)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    ) as proc:
        assert proc.stdin is not None and proc.stdout is not None
        out, chunks, first = proc.stdout, [], threading.Event()

        def drain() -> None:  # read stdout all along, so bnorm never waits on it
            while chunk := out.read1(1 << 16):
                chunks.append(chunk)
                first.set()

        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        try:
            proc.stdin.write(payload[:cut])
            proc.stdin.flush()
            assert first.wait(timeout=TIMEOUT), "no output while the input was still open"
            assert proc.poll() is None  # bnorm still waits for the rest
            proc.stdin.write(payload[cut:])
            proc.stdin.close()
            reader.join(timeout=TIMEOUT)
            assert proc.wait(timeout=TIMEOUT) == 0
        finally:
            proc.kill()


def test_first_rows_reach_stdout_before_the_input_ends(
    tmp_path: Path, fitted: tuple[Path, Path, pl.DataFrame]
) -> None:
    _, stats, _ = fitted
    # CSV types come from the first block (4 MiB): the first batch is larger, so its
    # rows arrive partly after that block, and are passed on as they arrive (not once
    # another full block has come in).
    batch = 100_000
    frame = make_frame(2 * batch, seed=9)
    payload, first = io.BytesIO(), io.BytesIO()
    frame.write_csv(payload)
    frame.head(batch + 100).write_csv(first)
    assert len(first.getvalue()) - readers.CSV_BLOCK_SIZE in range(1, readers.CSV_BLOCK_SIZE // 2)
    for out_fmt in ("ipc", "csv"):
        args = ["transform", "-", "-s", stats, "-o", "-", "--output-format", out_fmt, "-q"]
        _first_rows_before_the_end(payload.getvalue(), len(first.getvalue()), [*args, "-b", batch])
    # an Arrow IPC stream carries its schema first: rows flow from the first batches on
    table = make_frame(3000, seed=9).to_arrow()
    stream = io.BytesIO()
    with pa.ipc.new_stream(stream, table.schema) as w:
        w.write_table(table, max_chunksize=100)
    payload = stream.getvalue()
    args = [
        "transform",
        "-",
        "-s",
        stats,
        "-o",
        "-",
        "--input-format",
        "ipc",
        "--output-format",
        "ipc",
    ]
    _first_rows_before_the_end(payload, len(payload) // 3, [*args, "-b", 500, "-q"])
