"""Files as real tools write them: no silent surprises (issue 11, section B).

Missing-value tokens (R's ``NA``, pandas' empty fields, ``NULL`` from databases),
semicolon files with decimal commas, a stray word in a column of numbers,
several files whose schemas differ only in encoding, odd column names.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from bnorm_cli.cli.app import app
from bnorm_cli.cli.options import names

runner = CliRunner()


def invoke(args: Sequence[str | Path], stdin: bytes | None = None) -> tuple[int, str, str]:
    """Run the CLI in-process; an exception other than SystemExit is a traceback: fail."""
    result = runner.invoke(app, [str(a) for a in args], input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise AssertionError(f"uncaught {result.exception!r}\n{result.stderr}") from (
            result.exception
        )
    return result.exit_code, result.stdout, result.stderr


def one_error(err: str) -> str:
    """The single stderr line of a failed run."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 or (len(lines) == 2 and lines[1].startswith("Try")), err
    assert "Traceback" not in err
    return lines[0]


def stats_of(path: Path) -> dict[str, dict[str, float]]:
    doc = json.loads(path.read_text())
    columns: dict[str, dict[str, float]] = doc["columns"]
    return columns


# -- item 10: empty and odd column names ----------------------------------------------------
def test_empty_column_name_in_parquet_is_normalized_under_its_own_name(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"": [1.0, 2.0, 3.0], "b": ["x", "y", "z"]}), src)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q"])
    assert code == 0, err
    assert list(stats_of(tmp_path / "s.json")) == [""]
    out = tmp_path / "out.parquet"
    code, _, err = invoke(["transform", src, "-s", tmp_path / "s.json", "-o", out, "-q"])
    assert code == 0, err
    assert pq.read_table(out).schema.names == ["", "b"]


def test_empty_csv_header_keeps_its_name_and_its_numbers(tmp_path: Path) -> None:
    src = tmp_path / "r.csv"  # R's write.csv: the row names under an empty header
    src.write_text('"","b"\n"1",x\n"2",y\n')
    code, out, err = invoke(["normalize", src, "-o", "-", "--output-format", "ndjson", "-q"])
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert list(rows[0]) == ["", "b"]
    assert isinstance(rows[0][""], float)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("a,b", ["a", "b"]),
        (" a , b ,", ["a", "b"]),
        ('"a,b", c ', ["a,b", "c"]),
        ('" c ",d', [" c ", "d"]),
        ('"x""y"', ['x"y']),
        ('""', [""]),
    ],
)
def test_column_lists_read_as_a_csv_line(given: str, expected: list[str]) -> None:
    assert names([given]) == expected


def test_columns_with_commas_and_spaces_can_be_selected(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text('"a,b"," c ",d\n1,2,3\n4,5,6\n')
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q", "-c", '"a,b", " c "'])
    assert code == 0, err
    assert list(stats_of(tmp_path / "s.json")) == ["a,b", " c "]


def test_an_unclosed_quote_in_a_column_list_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-c", '"a'])
    assert code == 2
    assert "quote" in one_error(err)


def test_a_newline_in_a_column_name_stays_on_the_error_line(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"x\ny": ["1", "2"]}), src)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-c", '"x\ny"'])
    assert code == 2
    assert "x\\ny" in one_error(err)
