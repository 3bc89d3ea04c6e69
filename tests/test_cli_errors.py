"""Issue 11 C: every bad option or input is one clear line, never a traceback."""

from __future__ import annotations

import bz2
import gzip
import json
import shlex
import subprocess
import sys
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.core.errors import UsageError
from bnorm_cli.core.model import BatchNorm

runner = CliRunner()
BNORM = f"{shlex.quote(sys.executable)} -m bnorm_cli"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    path = tmp_path / "d.csv"
    pl.DataFrame({"a": [1.0, 2.0, 4.0, 8.0], "s": ["x", "y", "z", "w"]}).write_csv(path)
    return path


@pytest.fixture
def stats(data: Path) -> Path:
    path = data.parent / "st.json"
    assert runner.invoke(app, ["fit", str(data), "-s", str(path), "-q"]).exit_code == 0
    return path


def one_line(result: subprocess.CompletedProcess[bytes] | object, code: int, *needles: str) -> str:
    """Exit ``code``, no stdout, an ``error:`` line (plus the help hint for usage errors)."""
    if isinstance(result, subprocess.CompletedProcess):
        exit_code, out, err = result.returncode, result.stdout.decode(), result.stderr.decode()
    else:
        exit_code, out, err = result.exit_code, result.stdout, result.stderr  # type: ignore[attr-defined]
    assert exit_code == code, err
    assert "Traceback" not in err and "╭" not in err, err
    assert out == ""
    lines = err.splitlines()
    assert lines[0].startswith("error: "), err
    assert len(lines) == (2 if code == 2 else 1), err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def shell(
    command: str, cwd: Path, stdin: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        ["sh", "-c", command], cwd=cwd, input=stdin, capture_output=True, timeout=120, check=False
    )


# -- gamma, beta, batch size: checked in the core, before the pass ------------------------------
@pytest.mark.parametrize("option", ["--gamma", "--beta"])
@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "1e309", "a=inf", "a=nan"])
@pytest.mark.parametrize("command", ["fit", "normalize", "transform"])
def test_gamma_beta_must_be_finite(
    data: Path, stats: Path, option: str, value: str, command: str
) -> None:
    out = data.parent / "out.csv"
    args = {
        "fit": ["fit", str(data), "-s", str(data.parent / "new.json")],
        "normalize": ["normalize", str(data), "-o", str(out)],
        "transform": ["transform", str(data), "-s", str(stats), "-o", str(out)],
    }[command]
    result = runner.invoke(app, [*args, option, value])
    one_line(result, 2, option, "finite")
    assert result.stderr.splitlines()[1] == f"Try 'bnorm {command} --help' for help."
    assert not out.exists()


def test_core_checks_gamma_beta_up_front() -> None:
    for kwargs in ({"gamma": float("inf")}, {"beta": {"a": float("nan")}}):
        with pytest.raises(UsageError, match="finite"):
            BatchNorm(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("size", ["9223372036854775808", str(2**70)])
def test_batch_size_too_large(data: Path, size: str) -> None:
    result = runner.invoke(app, ["fit", str(data), "-s", str(data.parent / "x.json"), "-b", size])
    one_line(result, 2, "--batch-size")


# -- encodings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("codec", ["rot13", "base64", "hex", "zlib"])
def test_non_text_encoding_refused_by_name(data: Path, codec: str) -> None:
    result = runner.invoke(
        app, ["fit", str(data), "-s", str(data.parent / "x.json"), "--encoding", codec]
    )
    one_line(result, 2, codec, "not a text encoding")


def test_utf16_on_utf8_input(data: Path) -> None:
    result = runner.invoke(
        app, ["fit", str(data), "-s", str(data.parent / "x.json"), "--encoding", "utf-16"]
    )
    one_line(result, 1, str(data), "--encoding")


# -- closed and full standard streams ------------------------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        "fit d.csv -s new.json --json -q",
        "inspect st.json --json",
        "export st.json --to sklearn -o -",
        "transform d.csv -s st.json -o - -q",
    ],
)
def test_closed_stdout(stats: Path, args: str) -> None:
    one_line(shell(f"{BNORM} {args} >&-", stats.parent), 1, "stdout is closed")
    assert not (stats.parent / "new.json").exists()  # said before the pass


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_closed_stdin(stats: Path, fmt: str) -> None:
    result = shell(f"{BNORM} fit - --input-format {fmt} -s new.json -q <&-", stats.parent)
    one_line(result, 1, "stdin is closed")


def test_closed_stdin_does_not_matter_for_a_file(stats: Path) -> None:
    assert shell(f"{BNORM} fit d.csv -s new.json -q <&-", stats.parent).returncode == 0


@pytest.mark.parametrize("args", ["transform d.csv -s st.json -o - -q", "inspect st.json --json"])
def test_full_stdout_is_named(stats: Path, args: str) -> None:
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full")
    one_line(shell(f"{BNORM} {args} > /dev/full", stats.parent), 1, "stdout", "No space")


# -- compressed and binary input -----------------------------------------------------------------
def _zstd(raw: bytes) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.CompressedOutputStream(sink, "zstd") as f:
        f.write(raw)
    return sink.getvalue().to_pybytes()


@pytest.mark.parametrize("compress", [gzip.compress, bz2.compress, _zstd])
def test_compressed_stdin_is_decompressed(stats: Path, compress: object) -> None:
    raw = (stats.parent / "d.csv").read_bytes()
    result = shell(f"{BNORM} fit - -s new.json -q", stats.parent, compress(raw))  # type: ignore[operator]
    assert result.returncode == 0, result.stderr
    got = json.loads((stats.parent / "new.json").read_text())["columns"]
    assert got == json.loads(stats.read_text())["columns"]


def test_gzipped_file_without_suffix(stats: Path) -> None:
    path = stats.parent / "g.csv"
    path.write_bytes(gzip.compress((stats.parent / "d.csv").read_bytes()))
    result = runner.invoke(app, ["fit", str(path), "-s", str(stats.parent / "g.json"), "-q"])
    assert result.exit_code == 0, result.stderr
    assert json.loads((stats.parent / "g.json").read_text())["columns"]["a"]["mean"] == 3.75


@pytest.mark.parametrize("fmt", ["csv", "ndjson"])
def test_binary_file_read_as_text(data: Path, fmt: str) -> None:
    pq = data.parent / "d.parquet"
    pl.read_csv(data).write_parquet(pq)
    result = runner.invoke(
        app, ["fit", str(pq), "--input-format", fmt, "-s", str(data.parent / "x.json")]
    )
    line = one_line(result, 1, str(pq), "Parquet", "--input-format parquet")
    assert "\\x" not in line and "PAR1" not in line
    noise = data.parent / "noise.bin"
    noise.write_bytes(bytes(range(256)) * 8)
    result = runner.invoke(
        app, ["fit", str(noise), "--input-format", fmt, "-s", str(data.parent / "x.json")]
    )
    one_line(result, 1, str(noise), "binary")


# -- statistics files ----------------------------------------------------------------------------
def test_stats_version_as_string_is_explained(stats: Path) -> None:
    doc = json.loads(stats.read_text())
    doc["version"] = "1"
    stats.write_text(json.dumps(doc))
    one_line(runner.invoke(app, ["inspect", str(stats)]), 1, "'1'", "a string", "number 1")


@pytest.mark.parametrize("where", ["top", "column"])
def test_stats_duplicate_key_refused(stats: Path, where: str) -> None:
    text = stats.read_text()
    key = '"eps":' if where == "top" else '"mean":'
    stats.write_text(text.replace(key, f"{key} 0.5, {key}", 1))
    one_line(runner.invoke(app, ["inspect", str(stats)]), 1, str(stats), "twice")


# -- the command line itself ---------------------------------------------------------------------
def test_short_version() -> None:
    result = runner.invoke(app, ["-V"])
    assert result.exit_code == 0 and result.stdout.startswith("bnorm ")


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["fit", "x.csv", "-s", "s.json", "-b", "abc"], "fit"),
        (["transform", "x.csv", "--bogus"], "transform"),
        (["export", "s.json", "-o", "-"], "export"),
        (["fit"], "fit"),
        (["nosuch"], None),
    ],
)
def test_parsing_errors_are_one_line(args: list[str], command: str | None) -> None:
    result = runner.invoke(app, args)
    one_line(result, 2)
    where = f"bnorm {command}" if command else "bnorm"
    assert result.stderr.splitlines()[1] == f"Try '{where} --help' for help."


# -- issue 11 E: what people read ----------------------------------------------------------------
def test_report_table_never_drops_digits_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    from rich.console import Console

    from bnorm_cli.cli import console
    from bnorm_cli.report.summary import Report, Row

    narrow = Console(width=80, file=io.StringIO(), record=True)
    monkeypatch.setattr(console, "stderr", narrow)
    row = Row(
        "a_long_column_name", 3236123456, 123456789, 123456.789, 1e-5, -9.87654e4, 98765.4, 1.5, 2.5
    )
    console.show_report(Report("fit", "x.csv", 3236123456, 50000, [row]))
    text = "".join(narrow.export_text().split())  # a folded number reads on when joined
    assert "…" not in text
    assert "3,236,123,456" in text and "123,456,789" in text


def test_help_lists_every_format_and_html_report() -> None:
    top = runner.invoke(app, ["--help"], env={"COLUMNS": "200"}).stdout
    for name in ("CSV", "TSV", "Parquet", "Arrow IPC", "NDJSON"):
        assert name in top
    fit = runner.invoke(app, ["fit", "--help"], env={"COLUMNS": "200"}).stdout
    assert ".html" in fit
    quiet = next(line for line in fit.splitlines() if "--quiet" in line)
    assert "<bool>" not in quiet


def test_each_command_says_what_it_wrote(stats: Path) -> None:
    out = stats.parent / "o.csv"
    result = runner.invoke(
        app, ["transform", str(stats.parent / "d.csv"), "-s", str(stats), "-o", str(out)]
    )
    assert f"wrote {out} (4 rows)" in result.stderr
    quiet = runner.invoke(
        app, ["transform", str(stats.parent / "d.csv"), "-s", str(stats), "-o", str(out), "-q"]
    )
    assert quiet.stderr == ""


@pytest.mark.parametrize(
    ("first", "later", "line"),
    [('"NA"', "3", 2), ("1", '"NA"', 2)],
)
def test_ndjson_mixed_types_name_the_line(
    tmp_path: Path, first: str, later: str, line: int
) -> None:
    path = tmp_path / "m.ndjson"
    path.write_text(f'{{"a": 1, "b": {first}}}\n{{"a": 2, "b": {later}}}\n')
    result = runner.invoke(app, ["fit", str(path), "-s", str(tmp_path / "s.json")])
    one_line(result, 1, str(path), 'column "b"', f"(line {line})", "as null")


def test_ndjson_string_in_a_later_block_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "big.ndjson"
    rows = 300_000  # beyond the first read block, so pyarrow's row number is block-relative
    bad = rows - 7
    with path.open("w") as f:
        for i in range(rows):
            f.write(json.dumps({"a": i, "b": "NA" if i == bad else i * 0.5}) + "\n")
    result = runner.invoke(app, ["fit", str(path), "-s", str(tmp_path / "s.json")])
    one_line(result, 1, str(path), 'column "b"', f"(line {bad + 1})", "-x b")
