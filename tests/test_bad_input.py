"""Bad input: every failure is one line on stderr, the right exit code, and no output touched.

design.md §4: exit 1 for bad data or a bad statistics file, 2 for a usage error;
one line naming the file, column and row or batch and saying the fix; no
traceback; a failed run leaves no partial output and never touches an existing
one. Valid but awkward CSV must simply work. Most cases run in-process
(CliRunner); a few run as real processes, where an abort at interpreter exit
would show.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from bnorm_cli.cli.app import app

BNORM = [sys.executable, "-m", "bnorm_cli"]
TIMEOUT = 120
PREVIOUS = b"previous output, must survive\n"
HELP_HINT = re.compile(r"Try 'bnorm (fit|transform|normalize|inspect|export) --help' for help\.")
runner = CliRunner()


# -- helpers -----------------------------------------------------------------------------------
def invoke(args: Sequence[str | Path], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; an exception other than SystemExit is a traceback: fail."""
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}\n{result.stderr}") from (
            result.exception
        )
    return result.exit_code, result.stdout, result.stderr


def spawn(args: Sequence[str | Path], cwd: Path) -> tuple[int, str, str]:
    """Run ``python -m bnorm_cli`` as a real process."""
    done = subprocess.run(
        [*BNORM, *map(str, args)], cwd=cwd, capture_output=True, timeout=TIMEOUT, check=False
    )
    return done.returncode, done.stdout.decode(), done.stderr.decode(errors="replace")


def assert_error(outcome: tuple[int, str, str], code: int, needles: Sequence[str] = ()) -> str:
    """Exit ``code``, nothing on stdout, one ``error:`` line on stderr holding every needle."""
    exit_code, stdout, stderr = outcome
    assert exit_code == code, f"exit {exit_code}, stderr: {stderr}"
    assert "Traceback" not in stderr, stderr
    assert stdout == ""
    lines = stderr.splitlines()
    assert lines and lines[0].startswith("error: "), stderr
    if code == 2:  # a usage error points at the subcommand's help
        assert len(lines) == 2 and HELP_HINT.fullmatch(lines[1]), stderr
    else:
        assert lines[1:] == [], stderr
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"
    return lines[0]


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file under ``directory`` (hidden temporaries included) with its bytes."""
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def make_frame(n: int = 40, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    temperature = rng.normal(15.0, 8.0, n)
    return pl.DataFrame(
        {
            "when": [f"2024-03-01T{i % 24:02d}:00:00" for i in range(n)],
            "temperature": pl.Series(
                [None if i % 9 == 4 else float(v) for i, v in enumerate(temperature)],
                dtype=pl.Float64,
            ),
            "city": [("harbor", "hill, top", 'say "hi"')[i % 3] for i in range(n)],
            "count": rng.integers(0, 30, n),
        }
    )


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """data.csv, data.parquet (row groups of 10) and stats.json; the cwd for relative names."""
    frame = make_frame()
    frame.write_csv(tmp_path / "data.csv")
    pq.write_table(frame.to_arrow(), tmp_path / "data.parquet", row_group_size=10)
    code, _, err = invoke(["fit", tmp_path / "data.csv", "-s", tmp_path / "stats.json", "-q"])
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    return tmp_path


# -- the bad cases -----------------------------------------------------------------------------
# Each case writes what it needs into the working directory and returns the command line,
# the exit code and strings the error line must hold. Every command writes only out.csv,
# out.parquet or new.json (report.md): these must stay absent, or untouched when present.
Case = Callable[[Path], tuple[list[str], int, list[str]]]
OUTPUTS = ("out.csv", "out.parquet", "new.json", "report.md")
CASES: dict[str, Case] = {}


def case(name: str) -> Callable[[Case], Case]:
    def register(fn: Case) -> Case:
        CASES[name] = fn
        return fn

    return register


def _transform(data: str, stats: str = "stats.json", *more: str) -> list[str]:
    return ["transform", data, "-s", stats, "-o", "out.csv", *more]


# inputs that cannot be read
@case("input-missing")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return _transform("missing.csv"), 1, ["missing.csv", "no such file"]


@case("input-missing-parquet-fit")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return ["fit", "gone.parquet", "-s", "new.json"], 1, ["gone.parquet", "no such file"]


@case("input-is-a-directory")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "folder.csv").mkdir()
    return ["fit", "folder.csv", "-s", "new.json"], 1, ["folder.csv", "directory"]


@case("csv-empty")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "empty.csv").write_bytes(b"")
    return ["fit", "empty.csv", "-s", "new.json"], 1, ["empty.csv", "empty", "header"]


@case("csv-blank-lines-only")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "blank.csv").write_bytes(b"\n\r\n\n")
    return _transform("blank.csv"), 1, ["blank.csv", "empty"]


@case("parquet-empty")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "empty.parquet").write_bytes(b"")
    return _transform("empty.parquet"), 1, ["empty.parquet", "Parquet"]


@case("csv-ragged-short-row")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "ragged.csv").write_bytes(b"a,b\n1,2\n3\n4,5\n")
    return (
        ["normalize", "ragged.csv", "-o", "out.csv"],
        1,
        ["ragged.csv", "line 3", "1 field", "header has 2", "quote"],
    )


@case("csv-ragged-long-row")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "ragged.csv").write_bytes(b"a,b\r\n1,2\r\n3,4,5\r\n")
    return ["fit", "ragged.csv", "-s", "new.json"], 1, ["ragged.csv", "line 3", "3 fields"]


@case("csv-ragged-after-the-first-block")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    body = b"1.5,2\n" * 800_000  # 4.8 MB: past the reader's first 4 MiB block
    (d / "late.csv").write_bytes(b"temperature,count\n" + body + b"7\n" + body)
    return (
        ["normalize", "late.csv", "-o", "out.csv", "-b", "1000"],
        1,
        ["late.csv", "line 800002", "1 field"],
    )


@case("csv-text-in-a-column-named-by-columns")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    frame = make_frame(200).with_columns(pl.col("temperature").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 190)
        .then(pl.lit("warm"))  # "n/a" is read as missing (a default null value)
        .otherwise(pl.col("temperature"))
        .alias("temperature")
    )
    frame.write_csv(d / "text.csv")
    return (
        ["normalize", "text.csv", "-o", "out.csv", "-c", "temperature", "-b", "50"],
        1,
        ["text.csv", '"temperature"', "line 192", "'warm'", "-x temperature"],
    )


@case("csv-not-utf8-in-a-cell")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "latin.csv").write_bytes(b"temperature,city\n1.5,caf\xe9\n2.5,ok\n")
    return (
        ["fit", "latin.csv", "-s", "new.json"],
        1,
        ["latin.csv", '"city"', "line 2", "UTF-8", "--encoding latin-1", "iconv"],
    )


@case("csv-not-utf8-in-the-header")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "latin.csv").write_bytes(b"temp\xe9rature,count\n1.5,2\n")
    return ["fit", "latin.csv", "-s", "new.json"], 1, ["latin.csv", "--encoding", "iconv"]


@case("csv-wrong-encoding-given")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "latin.csv").write_bytes(b"temperature,city\n1.5,caf\xe9\n")
    return (
        ["fit", "latin.csv", "-s", "new.json", "--encoding", "ascii"],
        1,
        ["latin.csv", "--encoding"],
    )


@case("csv-unknown-encoding")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return ["fit", "data.csv", "-s", "new.json", "--encoding", "klingon"], 2, ["klingon"]


@case("csv-duplicate-column-names")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "dup.csv").write_bytes(b"a,b,a\n1,2,3\n")
    return ["fit", "dup.csv", "-s", "new.json"], 1, ["dup.csv", '"a"', "more than once"]


@case("parquet-duplicate-column-names")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    table = pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"])
    pq.write_table(table, d / "dup.parquet")
    return _transform("dup.parquet"), 1, ["dup.parquet", '"a"', "more than once"]


@case("csv-markup-like-cell")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "markup.csv").write_bytes(b"temperature\n1\n[/bold]\n")
    cmd = ["fit", "markup.csv", "-s", "new.json", "-c", "temperature"]
    return cmd, 1, ["'[/bold]'", "line 3"]


@case("parquet-truncated")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    data = (d / "data.parquet").read_bytes()
    (d / "cut.parquet").write_bytes(data[: len(data) // 2])
    return _transform("cut.parquet"), 1, ["cut.parquet", "Parquet", "complete"]


@case("parquet-corrupt-footer")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    data = bytearray((d / "data.parquet").read_bytes())
    footer = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - footer
    data[start : start + 40] = b"\xee" * 40
    (d / "bad.parquet").write_bytes(bytes(data))
    return ["fit", "bad.parquet", "-s", "new.json"], 1, ["bad.parquet", "Parquet"]


@case("parquet-corrupt-page-after-batches-were-written")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    data = bytearray((d / "data.parquet").read_bytes())
    page = pq.ParquetFile(d / "data.parquet").metadata.row_group(3).column(1).data_page_offset
    data[page : page + 24] = b"\xee" * 24
    (d / "bad.parquet").write_bytes(bytes(data))
    return _transform("bad.parquet", "stats.json", "-b", "5"), 1, ["bad.parquet"]


@case("parquet-given-as-csv")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return _transform("data.parquet", "stats.json", "--input-format", "csv"), 1, ["data.parquet"]


@case("csv-given-as-parquet")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return (
        ["fit", "data.csv", "-s", "new.json", "--input-format", "parquet"],
        1,
        ["data.csv", "Parquet", "--input-format csv"],
    )


# statistics files
def _stats(d: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((d / "stats.json").read_text())
    return doc


def _stats_case(name: str, make: Callable[[Path], str | bytes], needles: list[str]) -> None:
    def build(d: Path) -> tuple[list[str], int, list[str]]:
        content = make(d)
        path = d / "bad.json"
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return _transform("data.csv", "bad.json"), 1, ["bad.json", *needles]

    CASES[f"stats-{name}"] = build


def _edited(edit: Callable[[dict[str, Any]], object]) -> Callable[[Path], str]:
    def make(d: Path) -> str:
        doc = _stats(d)
        edit(doc)
        return json.dumps(doc)

    return make


def _replaced(key: str, literal: str) -> Callable[[Path], str]:
    """The file with one column statistic spelled as a raw JSON literal (NaN, 1e999...)."""

    def make(d: Path) -> str:
        doc = _stats(d)
        doc["columns"]["temperature"][key] = "@@"
        return json.dumps(doc).replace('"@@"', literal)

    return make


CASES["stats-missing"] = lambda d: (_transform("data.csv", "nope.json"), 1, ["nope.json", "fit"])
_stats_case("empty-file", lambda d: "", ["JSON", "bnorm fit"])
_stats_case("not-json", lambda d: "temperature: 12.5\n", ["JSON", "bnorm fit"])
_stats_case("truncated", lambda d: _stats_text(d)[: len(_stats_text(d)) // 2], ["bnorm fit"])
_stats_case("binary", lambda d: b"\xff\xfe\x00\x01garbage", ["bnorm fit"])
_stats_case("json-array", lambda d: "[1, 2, 3]", ["bnorm fit"])
_stats_case("deeply-nested", lambda d: "[" * 100_000, ["bnorm fit"])
_stats_case("other-format", _edited(lambda doc: doc.update(format="something")), ["format"])
_stats_case("unknown-version", _edited(lambda doc: doc.update(version=99)), ["version 99"])
_stats_case("no-version", _edited(lambda doc: doc.pop("version")), ["version", "bnorm fit"])
_stats_case("no-columns", _edited(lambda doc: doc.pop("columns")), ["columns", "bnorm fit"])
_stats_case(
    "column-without-mean",
    _edited(lambda doc: doc["columns"]["temperature"].pop("mean")),
    ["temperature", "mean", "bnorm fit"],
)
_stats_case("nan-var", _replaced("var", "NaN"), ["NaN", "bnorm fit"])
_stats_case("nan-running-var", _replaced("running_var", "NaN"), ["NaN", "bnorm fit"])
_stats_case("infinite-gamma", _replaced("gamma", "Infinity"), ["Infinity", "bnorm fit"])
_stats_case("overflowing-running-var", _replaced("running_var", "1e999"), ["1e999", "fit"])
_stats_case("overflowing-integer-var", _replaced("var", "1" + "0" * 400), ["too large"])
# int64's edge: the first integer it cannot hold (19 digits), and its negative
_stats_case("count-of-2-to-the-63", _replaced("count", str(2**63)), ["too large"])
_stats_case("mean-below-int64", _replaced("mean", str(-(2**63) - 1)), ["too large"])
_stats_case("negative-var", _replaced("var", "-4.0"), ["temperature/var", "bnorm fit"])
_stats_case("negative-running-var", _replaced("running_var", "-1e-3"), ["running_var"])
_stats_case("string-mean", _replaced("mean", '"12.5"'), ["mean", "bnorm fit"])
_stats_case(
    "counts-do-not-add-up",
    _edited(lambda doc: doc["columns"]["temperature"].update(count=3)),
    ["temperature", "inconsistent"],
)


def _stats_text(d: Path) -> str:
    return (d / "stats.json").read_text()


# the input does not fit the statistics
@case("fitted-column-missing-csv")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    pl.read_csv(d / "data.csv").drop("temperature").write_csv(d / "other.csv")
    return _transform("other.csv"), 1, ["other.csv", '"temperature"', "missing"]


@case("fitted-column-renamed-parquet")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    pl.read_parquet(d / "data.parquet").rename({"temperature": "temperatur"}).write_parquet(
        d / "other.parquet"
    )
    return (
        _transform("other.parquet"),
        1,
        ["other.parquet", '"temperature"', 'did you mean "temperatur"'],
    )


@case("fitted-column-now-text-csv")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    frame = pl.read_csv(d / "data.csv")
    frame.with_columns(pl.col("temperature").cast(pl.String) + " C").write_csv(d / "other.csv")
    return _transform("other.csv"), 1, ["other.csv", '"temperature"', "String"]


@case("fitted-column-now-text-parquet")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    frame = pl.read_parquet(d / "data.parquet")
    frame.with_columns(pl.col("temperature").cast(pl.String)).write_parquet(d / "other.parquet")
    return _transform("other.parquet"), 1, ["other.parquet", '"temperature"', "String"]


@case("inputs-with-different-columns")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    pl.read_csv(d / "data.csv").drop("city").write_csv(d / "other.csv")
    return ["fit", "data.csv", "other.csv", "-s", "new.json"], 1, ["other.csv", "data.csv"]


# unknown columns and bad option values: usage errors, exit 2
for _cmd, _flag in [
    (["fit", "data.csv", "-s", "new.json"], "-c"),
    (["fit", "data.parquet", "-s", "new.json"], "--exclude"),
    (["normalize", "data.csv", "-o", "out.csv"], "--columns"),
    (_transform("data.parquet"), "-c"),
]:

    def _unknown(d: Path, cmd: list[str] = _cmd, flag: str = _flag) -> Any:
        return [*cmd, flag, "temprature"], 2, ['"temprature"', 'did you mean "temperature"']

    CASES[f"unknown-column-{_cmd[0]}-{_flag}-{Path(_cmd[1]).suffix[1:]}"] = _unknown


@case("text-column-named-in-columns-parquet")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return ["fit", "data.parquet", "-s", "new.json", "-c", "city"], 2, ['"city"', "not numeric"]


_OPTIONS = [
    (["-b", "0"], "--batch-size"),
    (["-b", "-3"], "--batch-size"),
    (["--batch-size", "0"], "--batch-size"),
    (["--eps", "-1e-5"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--eps", "inf"], "--eps"),
    (["--momentum", "1.5"], "--momentum"),
    (["--momentum", "-0.1"], "--momentum"),
    (["--momentum", "nan"], "--momentum"),
    (["--momentum", "fast"], "--momentum"),
]
for _command in (["fit", "data.csv", "-s", "new.json"], ["normalize", "data.csv", "-o", "out.csv"]):
    for _option, _needle in _OPTIONS:

        def _bad_option(
            d: Path, cmd: list[str] = _command, opt: list[str] = _option, needle: str = _needle
        ) -> Any:
            return [*cmd, *opt], 2, [needle]

        CASES[f"option-{_command[0]}-{'='.join(_option)}"] = _bad_option
for _option, _needle in _OPTIONS[:6]:

    def _bad_transform_option(d: Path, opt: list[str] = _option, needle: str = _needle) -> Any:
        return [*_transform("data.csv"), *opt], 2, [needle]

    CASES[f"option-transform-{'='.join(_option)}"] = _bad_transform_option


# outputs that cannot be written
@case("output-directory-missing")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return (
        ["transform", "data.csv", "-s", "stats.json", "-o", "nope/out.csv"],
        1,
        ["nope", "does not exist"],
    )


@case("stats-directory-missing")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return ["fit", "data.csv", "-s", "nope/new.json"], 1, ["nope", "does not exist"]


@case("normalize-stats-directory-missing")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    cmd = ["normalize", "data.csv", "-o", "out.csv", "-s", "nope/new.json"]
    return cmd, 1, ["nope", "does not exist"]


@case("report-directory-missing")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return (
        [*_transform("data.csv"), "--report", "nope/report.md"],
        1,
        ["nope", "does not exist"],
    )


@case("output-is-a-directory")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    (d / "folder.csv").mkdir()
    return ["normalize", "data.csv", "-o", "folder.csv"], 1, ["folder.csv", "directory"]


@case("output-equal-to-input")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return ["normalize", "data.parquet", "-o", "./data.parquet"], 1, ["input"]


@case("output-hard-link-to-input")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    os.link(d / "data.csv", d / "alias.csv")
    cmd = ["transform", "alias.csv", "-s", "stats.json", "-o", "data.csv"]
    return cmd, 1, ["data.csv", "input"]


@case("output-equal-to-stats")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    return (
        ["transform", "data.csv", "-s", "stats.json", "-o", "stats.json", "--output-format", "csv"],
        1,
        ["stats.json", "input"],
    )


@case("nested-column-to-csv")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    table = pa.table({"x": [1.0, 2.0, 4.0], "tags": [[1], [2, 3], []]})
    pq.write_table(table, d / "nested.parquet")
    return ["normalize", "nested.parquet", "-o", "out.csv"], 1, ['"tags"', "Parquet"]


@case("binary-column-to-csv-stdout")
def _(d: Path) -> tuple[list[str], int, list[str]]:
    pq.write_table(pa.table({"x": [1.0, 2.0], "raw": [b"\x00", b"\x01"]}), d / "bin.parquet")
    return ["normalize", "bin.parquet", "-o", "-"], 1, ['"raw"', "Parquet"]


@pytest.mark.parametrize("existing", [False, True], ids=["no-output", "existing-output"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_is_one_clean_line(workdir: Path, name: str, existing: bool) -> None:
    args, code, needles = CASES[name](workdir)
    if existing:
        for output in OUTPUTS:
            (workdir / output).write_bytes(PREVIOUS)
    before = snapshot(workdir)
    assert_error(invoke(args), code, needles)
    assert snapshot(workdir) == before  # nothing created, nothing changed, no temporary file


@pytest.mark.parametrize(
    "name",
    [
        "csv-ragged-short-row",
        "csv-not-utf8-in-a-cell",
        "parquet-corrupt-page-after-batches-were-written",
        "stats-nan-var",
    ],
)
def test_bad_input_as_a_real_process(workdir: Path, name: str) -> None:
    """The same through `python -m bnorm_cli`: the exit code must survive interpreter exit."""
    args, code, needles = CASES[name](workdir)
    (workdir / "out.csv").write_bytes(PREVIOUS)
    before = snapshot(workdir)
    assert_error(spawn(args, workdir), code, needles)
    assert snapshot(workdir) == before


def test_bad_stats_file_in_inspect(workdir: Path) -> None:
    CASES["stats-nan-running-var"](workdir)
    assert_error(invoke(["inspect", "bad.json"]), 1, ["bad.json", "NaN"])
    assert_error(invoke(["inspect", "bad.json", "--json"]), 1, ["bad.json"])
    assert_error(invoke(["inspect", "nope.json"]), 1, ["nope.json"])


def test_bad_stdin(workdir: Path) -> None:
    before = snapshot(workdir)
    assert_error(invoke(["fit", "-", "-s", "new.json"], stdin=b""), 1, ["<stdin>", "empty"])
    assert_error(
        invoke(["normalize", "-", "-o", "-"], stdin=b"a,b\n1,2\n3\n"), 1, ["<stdin>", "line 3"]
    )
    assert_error(
        invoke(["transform", "-", "-s", "stats.json", "-o", "-"], stdin=b"temperature\n1\n"),
        1,
        ["<stdin>", '"count"', "missing"],
    )
    assert snapshot(workdir) == before


# -- a read-only output directory --------------------------------------------------------------
@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[list[str]]:
    """Make ``directory`` read-only; yield a command prefix that runs under that restriction.

    Permissions do not stop root, so root gets a read-only tmpfs mounted over the
    directory in a private user and mount namespace (``unshare``), seen only by
    the command run with the prefix.
    """
    if os.geteuid() != 0:
        directory.chmod(0o555)
        try:
            yield []
        finally:
            directory.chmod(0o755)
        return
    prefix = [
        "unshare", "--user", "--map-root-user", "--mount", "sh", "-c",
        'mount -t tmpfs -o ro,size=64k tmpfs "$1" && shift && exec "$@"', "sh", str(directory),
    ]  # fmt: skip
    if shutil.which("unshare") is None:
        pytest.skip("running as root without unshare: cannot make a read-only directory")
    probe = subprocess.run([*prefix, "true"], capture_output=True, timeout=TIMEOUT, check=False)
    if probe.returncode != 0:
        pytest.skip(f"running as root and unshare is not allowed: {probe.stderr.decode()}")
    yield prefix


@pytest.mark.parametrize(
    "command",
    [
        ["transform", "data.csv", "-s", "stats.json", "-o", "locked/out.csv"],
        ["fit", "data.parquet", "-s", "locked/new.json"],
    ],
)
def test_output_directory_read_only(workdir: Path, command: list[str]) -> None:
    locked = workdir / "locked"
    locked.mkdir()
    before = snapshot(workdir)
    with read_only(locked) as prefix:
        done = subprocess.run(
            [*prefix, *BNORM, *command],
            cwd=workdir,
            capture_output=True,
            timeout=TIMEOUT,
            check=False,
        )
    outcome = (done.returncode, done.stdout.decode(), done.stderr.decode())
    assert_error(outcome, 1, ["locked", "not writable"])
    assert snapshot(workdir) == before


# -- text in a numeric column 1,000,000 rows in ------------------------------------------------
ROWS = 1_100_000
BAD_ROW = 1_000_000  # 0-based data row: line 1,000,002 of the file


@pytest.fixture(scope="session")
def text_deep_in(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A CSV whose column x holds text at data row 1,000,000, and stats fitted on clean rows."""
    directory = tmp_path_factory.mktemp("deep")
    x = np.arange(ROWS, dtype=np.float64) * 0.25
    frame = pl.DataFrame({"id": np.arange(ROWS), "x": x, "label": ["a"] * ROWS})
    frame = frame.with_columns(pl.col("x").cast(pl.String))
    frame = frame.with_columns(
        pl.when(pl.col("id") == BAD_ROW).then(pl.lit("oops")).otherwise(pl.col("x")).alias("x")
    )
    data = directory / "deep.csv"
    frame.write_csv(data)
    clean = directory / "clean.csv"
    frame.head(1000).write_csv(clean)
    stats = directory / "deep-stats.json"
    code, _, err = invoke(["fit", clean, "-s", stats, "-q"])
    assert code == 0, err
    return data, stats


def test_text_in_a_numeric_column_a_million_rows_in(
    text_deep_in: tuple[Path, Path], tmp_path: Path
) -> None:
    data, stats = text_deep_in
    out = tmp_path / "out.csv"
    out.write_bytes(PREVIOUS)
    needles = ["deep.csv", '"x"', f"line {BAD_ROW + 2}", "'oops'", "-x x"]
    # transform as a real process: 15 batches are written before the bad one
    assert_error(spawn(["transform", data, "-s", stats, "-o", out], tmp_path), 1, needles)
    assert snapshot(tmp_path) == {"out.csv": PREVIOUS}
    assert_error(invoke(["fit", data, "-s", tmp_path / "new.json"]), 1, needles)
    assert snapshot(tmp_path) == {"out.csv": PREVIOUS}


# -- valid but awkward CSV simply works --------------------------------------------------------
AWKWARD = (
    b"\xef\xbb\xbfname,x,note,[/bold]\r\n"  # UTF-8 BOM, CRLF, a header that looks like markup
    b'"Smith, J",1.5,"line one\r\nline two",1\r\n'  # quoted comma and quoted CRLF
    b'"",2.5,,2\r\n'  # "" is the empty string, nothing is null
    b',,"say ""hi""",3\r\n'  # null number, escaped quotes
    b"plain,4,x,4\r\n"
)
EXPECTED_TEXT = {
    "name": ["Smith, J", "", None, "plain"],
    "note": ["line one\r\nline two", None, 'say "hi"', "x"],
}


def _expected_x() -> list[float | None]:
    x = np.array([1.5, 2.5, 4.0])
    z = (x - x.mean()) / math.sqrt(x.var() + 1e-5)
    return [float(z[0]), float(z[1]), None, float(z[2])]


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_awkward_but_valid_csv_works(tmp_path: Path, fmt: str) -> None:
    data = tmp_path / "awkward.csv"
    data.write_bytes(AWKWARD)
    out = tmp_path / f"out.{fmt}"
    code, _, err = invoke(["normalize", data, "-o", out, "-b", "10", "-x", "[/bold]", "-q"])
    assert (code, err) == (0, "")
    if fmt == "parquet":
        frame = pl.read_parquet(out)
        assert frame.columns == ["name", "x", "note", "[/bold]"]  # no BOM in the first name
        for name, values in EXPECTED_TEXT.items():
            assert frame.get_column(name).to_list() == values
        got = frame.get_column("x").to_list()
    else:
        rows = list(csv.reader(io.StringIO(out.read_bytes().decode("utf-8"), newline="")))
        assert rows[0] == ["name", "x", "note", "[/bold]"]
        assert [r[0] for r in rows[1:]] == ["Smith, J", "", "", "plain"]
        assert [r[2] for r in rows[1:]] == ["line one\r\nline two", "", 'say "hi"', "x"]
        # the empty string stays quoted, a null stays an empty field
        assert b'\n"",' in out.read_bytes() and b"\n,," in out.read_bytes()
        got = [float(r[1]) if r[1] else None for r in rows[1:]]
    for g, e in zip(got, _expected_x(), strict=True):
        assert (g is None and e is None) or g == pytest.approx(e, rel=1e-12)


def test_awkward_csv_fit_and_report_with_markup_like_names(tmp_path: Path) -> None:
    data = tmp_path / "awkward.csv"
    data.write_bytes(AWKWARD)
    code, _, err = invoke(["fit", data, "-s", tmp_path / "s.json"])
    assert code == 0, err
    assert "[/bold]" in err  # the report table shows the column name as it is
    doc = json.loads((tmp_path / "s.json").read_text())
    assert list(doc["columns"]) == ["x", "[/bold]"]


@pytest.mark.parametrize(
    ("encoding", "codec"), [("latin-1", "latin-1"), ("cp1252", "cp1252"), ("utf-16", "utf-16")]
)
def test_encoding_option_reads_other_encodings(tmp_path: Path, encoding: str, codec: str) -> None:
    text = 'city,x\r\ncafé,1\r\nZürich,2\r\n"naïve, quoted",4\r\n'
    data = tmp_path / "data.csv"
    data.write_bytes(text.encode(codec))
    out = tmp_path / "out.csv"
    stats = tmp_path / "s.json"
    code, _, err = invoke(["fit", data, "-s", stats, "--encoding", encoding, "-q"])
    assert (code, err) == (0, "")
    assert list(json.loads(stats.read_text())["columns"]) == ["x"]
    for command in (
        ["transform", data, "-s", stats, "-o", out, "--encoding", encoding, "-q"],
        ["normalize", data, "-o", out, "--encoding", encoding, "-q"],
    ):
        code, _, err = invoke(command)
        assert (code, err) == (0, "")
        rows = list(csv.reader(io.StringIO(out.read_text("utf-8"), newline="")))
        assert rows[0] == ["city", "x"]  # output is UTF-8, the text as it was
        assert [r[0] for r in rows[1:]] == ["café", "Zürich", "naïve, quoted"]


def test_encoding_option_on_stdin_and_ignored_for_parquet(workdir: Path) -> None:
    code, out, err = invoke(
        ["normalize", "-", "-o", "-", "--encoding", "latin-1", "-q"],
        stdin="city,x\ncafé,1\nbar,3\n".encode("latin-1"),
    )
    assert (code, err) == (0, "")
    assert out.splitlines()[1].startswith("café,")
    code, _, err = invoke(["fit", "data.parquet", "-s", "new.json", "--encoding", "latin-1", "-q"])
    assert (code, err) == (0, "")


# -- property: random bytes never give a traceback ---------------------------------------------
def _mutated(base: bytes) -> st.SearchStrategy[bytes]:
    def mutate(edits: list[tuple[int, int]]) -> bytes:
        data = bytearray(base)
        for position, value in edits:
            data[position % len(data)] = value
        return bytes(data)

    return st.lists(
        st.tuples(st.integers(0, len(base) - 1), st.integers(0, 255)), min_size=1, max_size=12
    ).map(mutate)


def _sample_parquet() -> bytes:
    sink = io.BytesIO()
    pq.write_table(make_frame(30).to_arrow(), sink, row_group_size=10)
    return sink.getvalue()


SAMPLE_CSV = make_frame(12).write_csv().encode()
SAMPLE_PARQUET = _sample_parquet()
CSV_PIECES = st.sampled_from(
    [b",", b'"', b"\n", b"\r\n", b"1", b"-2.5e3", b"x", b"temperature", b"count", b"\xef\xbb\xbf",
     b"\xff", b"\xe9", b"\x00", b"nan", b"inf", b"[/b]", b" ", b'""', b"1e999"]
)  # fmt: skip
RANDOM_FILES = st.one_of(
    st.binary(max_size=400),
    st.lists(CSV_PIECES, max_size=60).map(b"".join),
    st.binary(max_size=200).map(lambda b: b"PAR1" + b + b"PAR1"),
    _mutated(SAMPLE_CSV),
    _mutated(SAMPLE_PARQUET),
)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("fuzz")
    make_frame().write_csv(directory / "clean.csv")
    code, _, err = invoke(["fit", directory / "clean.csv", "-s", directory / "stats.json", "-q"])
    assert code == 0, err
    return directory


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(content=RANDOM_FILES, fmt=st.sampled_from(["csv", "parquet"]), command=st.integers(0, 2))
def test_random_bytes_never_give_a_traceback(
    fuzz_dir: Path, content: bytes, fmt: str, command: int
) -> None:
    data = fuzz_dir / f"input.{fmt}"
    data.write_bytes(content)
    out = fuzz_dir / "out.csv"
    out.write_bytes(PREVIOUS)
    args = [
        ["fit", data, "-s", fuzz_dir / "new.json", "-q"],
        ["transform", data, "-s", fuzz_dir / "stats.json", "-o", out, "-q", "-b", "3"],
        ["normalize", data, "-o", out, "-q", "-b", "4"],
    ][command]
    code, stdout, stderr = invoke(args)
    assert code in (0, 1), stderr
    if code == 1:
        line = assert_error((code, stdout, stderr), 1)
        assert str(data) in line or str(out) in line, line
        assert out.read_bytes() == PREVIOUS
    assert not [p.name for p in fuzz_dir.iterdir() if ".bnorm-" in p.name]
    with contextlib.suppress(FileNotFoundError):
        (fuzz_dir / "new.json").unlink()


# -- floating-point noise ------------------------------------------------------------------------
def test_extreme_columns_print_no_numpy_warnings(tmp_path: Path) -> None:
    """Means of +/-1e153 (their squares overflow), a column whose variance exceeds
    float64, subnormals: bnorm's own lines only, never numpy's RuntimeWarnings."""
    n = 2_000
    rng = np.random.default_rng(3)
    big = np.where(rng.random(n) < 0.5, 1e153, -1e153)
    pl.DataFrame({"big": big, "sub": np.full(n, 5e-324), "x": rng.normal(size=n)}).write_parquet(
        tmp_path / "in.parquet"
    )
    stats, report = tmp_path / "s.json", tmp_path / "r.html"
    for args in (
        ["fit", "in.parquet", "-s", stats, "-b", "1"],
        ["normalize", "in.parquet", "-o", "n.parquet", "--mode", "running", "-b", "7",
         "--report", report],
        ["transform", "in.parquet", "-s", stats, "-o", "t.parquet", "--report", report],
    ):  # fmt: skip
        code, _, stderr = spawn(args, tmp_path)
        assert code == 0, stderr
        assert "Warning:" not in stderr and "numpy" not in stderr, stderr
    huge = pl.DataFrame({"huge": rng.normal(size=n) * 1e300})
    huge.write_parquet(tmp_path / "huge.parquet")
    assert_error(spawn(["fit", "huge.parquet", "-s", stats], tmp_path), 1, ["huge", "variance"])
    assert_error(spawn(["normalize", "huge.parquet", "-o", "n.csv"], tmp_path), 1, ["huge"])
