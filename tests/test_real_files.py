"""Files as real tools write them: no silent surprises (issue 11, section B).

Missing-value tokens (R's ``NA``, pandas' empty fields, ``NULL`` from databases),
semicolon files with decimal commas, a stray word in a column of numbers,
several files whose schemas differ only in encoding, odd column names.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import polars as pl
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


# -- item 6: missing-value tokens, delimiters, decimal commas --------------------------------
R_CSV = (  # R's write.csv: NA unquoted, text quoted, row names under ""
    '"","species","bill_length_mm","body_mass_g","sex","year"\n'
    '"1","Adelie",39.1,3750,"male",2007\n'
    '"2","Adelie",NA,NA,NA,2007\n'
    '"3","Gentoo",40.3,3250,"female",2008\n'
)


def test_r_na_is_missing_in_numbers_and_kept_in_text(tmp_path: Path) -> None:
    src = tmp_path / "penguins.csv"
    src.write_text(R_CSV)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q"])
    assert code == 0, err
    stats = stats_of(tmp_path / "s.json")
    assert {"bill_length_mm", "body_mass_g", "year"} <= set(stats)
    assert stats["bill_length_mm"]["count"] == 2
    assert stats["bill_length_mm"]["null_count"] == 1
    assert stats["bill_length_mm"]["mean"] == pytest.approx(39.7)
    for command in (
        ["transform", src, "-s", tmp_path / "s.json"],
        ["normalize", src],
    ):
        code, out, err = invoke([*command, "-o", "-", "-q"])
        assert code == 0, err
        lines = out.splitlines()
        assert lines[2].split(",")[2:5] == ["", "", "NA"]  # numbers null, the text "NA" kept
        assert lines[1].split(",")[1] == "Adelie"


@pytest.mark.parametrize("token", ["NA", "N/A", "NULL", "null", "None", "#N/A", "-", "<NA>"])
def test_default_tokens_are_missing(tmp_path: Path, token: str) -> None:
    src = tmp_path / "in.csv"
    src.write_text(f"a,t\n1,x\n{token},{token}\n3,z\n")
    code, out, err = invoke(["normalize", src, "-o", "-", "-q"])
    assert code == 0, err
    assert out.splitlines()[2] == f",{token}"


def test_nan_text_stays_the_float_nan(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,t\n1,x\nNaN,y\n3,z\n")
    code, _, err = invoke(["normalize", src, "-o", tmp_path / "o.parquet", "-q"])
    assert code == 0, err
    a = pq.read_table(tmp_path / "o.parquet").column("a")
    assert a.null_count == 0
    assert math.isnan(a[1].as_py())


def test_null_values_add_tokens_and_the_defaults_can_be_dropped(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,1\nNA,?\n3,3\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q", "--null-values", "?"])
    assert code == 0, err
    assert set(stats_of(tmp_path / "s.json")) == {"a", "b"}
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q", "--no-default-null-values"])
    assert code == 1
    assert "no numeric column" in one_error(err)


def test_pandas_empty_fields_and_semicolon_decimal_comma(tmp_path: Path) -> None:
    src = tmp_path / "de.csv"  # Excel / R's write.csv2
    src.write_text('"x";"y";"name"\n1,5;2,25;Zoë\n3,5;;NA\n4;5;\n')
    args = ["--delimiter", ";", "--decimal-comma", "-q"]
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", *args])
    assert code == 0, err
    stats = stats_of(tmp_path / "s.json")
    assert stats["x"]["mean"] == pytest.approx(3.0)
    assert stats["y"]["count"] == 2
    # transform reads the file as fit did, from the statistics file
    code, out, err = invoke(["transform", src, "-s", tmp_path / "s.json", "-o", "-", "-q"])
    assert code == 0, err
    assert [line.split(",")[2] for line in out.splitlines()] == ["name", "Zoë", "NA", ""]


def test_a_semicolon_file_read_with_commas_says_which_delimiter(tmp_path: Path) -> None:
    src = tmp_path / "semi.csv"
    src.write_text("a;b\n1;2\n3;4\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json"])
    assert code == 1
    assert "--delimiter ';'" in one_error(err)
    assert not (tmp_path / "s.json").exists()
    src.write_text("a;b\n1,5;2\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json"])
    assert code == 1
    assert "--delimiter ';'" in one_error(err)


def test_a_bad_delimiter_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a\n1\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "--delimiter", ";;"])
    assert code == 2
    assert "--delimiter" in one_error(err)


def test_tab_delimiter_by_name(tmp_path: Path) -> None:
    src = tmp_path / "in.txt"
    src.write_text("a\tb\n1\tx\n2\ty\n")
    code, _, err = invoke(
        ["fit", src, "-s", tmp_path / "s.json", "-q", "--input-format", "csv", "--delimiter", "tab"]
    )
    assert code == 0, err
    assert list(stats_of(tmp_path / "s.json")) == ["a"]


# -- item 7: a stray word among numbers; nothing to normalize --------------------------------
def stray(tmp_path: Path) -> Path:
    src = tmp_path / "stray.csv"
    rows = ["a,t", *(f"{i * 0.5},{i}" for i in range(5000))]
    rows[2500] = "hello,7"
    src.write_text("\n".join(rows) + "\n")
    return src


def test_a_stray_word_among_numbers_is_one_warning(tmp_path: Path) -> None:
    src = stray(tmp_path)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1
    for part in ('"a"', "line 2501", "'hello'", "-c a", "--null-values hello"):
        assert part in warnings[0]
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-q"])
    assert err == ""


def test_the_fixes_the_warning_names_work(tmp_path: Path) -> None:
    src = stray(tmp_path)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "-c", "a"])
    assert code == 1
    assert "line 2501" in one_error(err) and "--null-values hello" in err
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "--null-values", "hello", "-q"])
    assert code == 0, err
    assert stats_of(tmp_path / "s.json")["a"]["null_count"] == 1


def test_a_stray_word_after_the_first_block_names_the_line(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,t\n1,x\n2,y\n" + "3,z\n" * 10 + "hello,w\n")
    code, _, err = invoke(["normalize", src, "-o", "-", "-c", "a"])  # read as text, converted
    assert code == 1
    assert 'in.csv: column "a", line 14' in one_error(err)


@pytest.mark.parametrize(
    ("text", "args", "says"),
    [
        ("a,b\nx,y\n", [], "no numeric column"),
        ("a,b\n,\n,\n", [], '"a" (empty)'),
        ("a,t\n1,x\n", ["-c", "t", "-x", "t"], "also excluded"),
        ("a,t\n1,x\n", ["-x", "a"], "excluded with -x"),
    ],
)
def test_nothing_to_normalize_is_an_error(
    tmp_path: Path, text: str, args: list[str], says: str
) -> None:
    src = tmp_path / "in.csv"
    src.write_text(text)
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", *args])
    assert code == 1
    assert says in one_error(err)
    assert not (tmp_path / "s.json").exists()
    code, _, err = invoke(["normalize", src, "-o", tmp_path / "o.csv", *args])
    assert code == 1
    assert not (tmp_path / "o.csv").exists()


def test_transform_with_no_fitted_column_left_is_an_error(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n3,4\n")
    assert invoke(["fit", src, "-s", tmp_path / "s.json", "-q"])[0] == 0
    code, _, err = invoke(["transform", src, "-s", tmp_path / "s.json", "-o", "-", "-x", "a,b"])
    assert code == 1
    assert "none of the fitted columns" in one_error(err)


# -- item 9: the schemas of several files ----------------------------------------------------
def write_parts(tmp_path: Path, *tables: pa.Table) -> list[Path]:
    paths = []
    for i, table in enumerate(tables):
        path = tmp_path / f"part-{i}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def test_files_that_differ_only_in_encoding_are_one_dataset(tmp_path: Path) -> None:
    a = pa.table({"x": pa.array([1.0, 2.0]), "t": pa.array(["u", "v"], pa.string())})
    polars_written = pl.DataFrame({"x": [3.0, 4.0], "t": ["w", None]}).to_arrow()  # large_string
    view = pa.table(
        {"x": pa.array([5.0, 6.0]), "t": pa.array(["y", "z"], pa.string()).cast(pa.string_view())}
    )
    dictionary = pa.table(
        {"x": pa.array([7.0, 8.0]), "t": pa.array(["y", "z"]).dictionary_encode()}
    )
    required = pa.Table.from_arrays(
        [pa.array([9.0, 10.0]), pa.array(["q", "r"])],
        schema=pa.schema([pa.field("x", pa.float64(), nullable=False), ("t", pa.string())]),
    )
    parts = write_parts(tmp_path, a, polars_written, view, dictionary, required)
    out = tmp_path / "out.parquet"
    code, _, err = invoke(["normalize", *parts, "-o", out, "-q", "-b", "3"])
    assert code == 0, err
    result = pq.read_table(out)
    assert result.column("t").to_pylist() == ["u", "v", "w", None, "y", "z", "y", "z", "q", "r"]
    assert result.num_rows == 10


def test_number_types_may_widen_in_normalized_columns(tmp_path: Path) -> None:
    parts = write_parts(
        tmp_path,
        pa.table({"x": pa.array([1, 2], pa.int32()), "t": ["a", "b"]}),
        pa.table({"x": pa.array([3, 4], pa.int64()), "t": ["c", "d"]}),
        pa.table({"x": pa.array([5.5, 6.5]), "t": ["e", "f"]}),
    )
    code, _, err = invoke(["fit", *parts, "-s", tmp_path / "s.json", "-q"])
    assert code == 0, err
    assert stats_of(tmp_path / "s.json")["x"]["mean"] == pytest.approx(22 / 6)


@pytest.mark.parametrize(
    ("second", "says"),
    [
        ({"x": [1.0], "t": [1]}, 'column "t" is int64 here but string in'),
        ({"x": [1.0]}, 'no column "t", which'),
        ({"x": [1.0], "t": ["a"], "u": ["b"]}, 'column "u" is not in'),
        ({"t": ["a"], "x": [1.0]}, "in another order than in"),
    ],
)
def test_a_real_mismatch_names_the_column_and_both_files(
    tmp_path: Path, second: dict[str, list[object]], says: str
) -> None:
    parts = write_parts(tmp_path, pa.table({"x": [1.0, 2.0], "t": ["a", "b"]}), pa.table(second))
    out = tmp_path / "out.csv"
    code, _, err = invoke(["normalize", *parts, "-o", out])
    assert code == 1
    line = one_error(err)
    assert says in line
    assert "part-0.parquet" in line and "part-1.parquet" in line
    assert not out.exists()


def test_a_number_type_change_in_a_text_column_is_still_a_mismatch(tmp_path: Path) -> None:
    parts = write_parts(
        tmp_path,
        pa.table({"x": [1.0, 2.0], "k": pa.array([1, 2], pa.int32())}),
        pa.table({"x": [3.0], "k": pa.array([3], pa.int64())}),
    )
    code, _, err = invoke(["normalize", *parts, "-o", "-", "-x", "k"])
    assert code == 1
    assert '"k" is int64 here but int32' in one_error(err)


def test_csv_files_with_different_columns_are_named(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text("x,t\n1,a\n2,b\n")
    (tmp_path / "b.csv").write_text("x,u\n3,c\n")
    code, _, err = invoke(
        ["fit", tmp_path / "a.csv", tmp_path / "b.csv", "-s", tmp_path / "s.json"]
    )
    assert code == 1
    assert 'b.csv: no column "t", which' in one_error(err)


def tokens_file(tmp_path: Path) -> Path:
    src = tmp_path / "mixed.csv"
    rows = ["a,t,b"]
    for i in range(300):
        a = "NA" if i % 37 == 5 else f"{i / 3:.3f}"
        t = "NA" if i % 11 == 0 else ("" if i % 13 == 0 else f"w{i}")
        rows.append(f"{a},{t},{i % 7}")
    src.write_text("\n".join(rows) + "\n")
    return src


def test_tokens_in_some_pieces_of_a_file_and_from_a_pipe(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnorm_cli.io import readers

    monkeypatch.setattr(readers, "CSV_READ_BLOCK_SIZE", 256)  # many pieces, few with a token
    src = tokens_file(tmp_path)
    code, from_file, err = invoke(["normalize", src, "-o", "-", "-q", "-b", "50"])
    assert code == 0, err
    code, from_pipe, err = invoke(["normalize", "-", "-o", "-", "-q", "-b", "50"], src.read_bytes())
    assert code == 0, err
    assert from_file == from_pipe
    lines = from_file.splitlines()
    assert lines[1 + 5].split(",")[:2] == ["", "w5"]
    assert lines[1 + 11].split(",")[1] == "NA"  # text keeps its NA
    assert lines[1 + 13].split(",")[1] == ""


def test_a_bad_value_in_a_later_piece_names_its_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bnorm_cli.io import readers

    monkeypatch.setattr(readers, "CSV_READ_BLOCK_SIZE", 256)
    src = tokens_file(tmp_path)
    lines = src.read_text().splitlines()
    lines[250] = "oops,x,1"
    src.write_text("\n".join(lines) + "\n")
    for stdin in (None, src.read_bytes()):
        code, _, err = invoke(["normalize", "-" if stdin else src, "-o", "-", "-c", "a"], stdin)
        assert code == 1
        assert 'column "a", line 251' in one_error(err)


def test_pieces_with_tokens_and_the_streamed_rest_are_read_as_text_for_conversion() -> None:
    import io

    import pyarrow.csv as pacsv

    from bnorm_cli.io.csv_parallel import parallel_csv

    data = b"a,t\n1,x\nNA," + b"y" * 40 + b"\n3,z\n4,w\n" + b"5,v\n" * 3  # a long row
    types = {"a": pa.float64(), "t": pa.string()}
    numbers = pacsv.ConvertOptions(column_types=types, null_values=[""])
    text = pacsv.ConvertOptions(column_types=dict.fromkeys(types, pa.string()), null_values=[""])
    parse = pacsv.ParseOptions(newlines_in_values=True)
    for hand_off in (1 << 20, 8):  # pieces only; the rest streamed after the first piece
        batches = list(
            parallel_csv(io.BytesIO(data), ["a", "t"], parse, numbers, 12, 2, hand_off, text)
        )
        values = [v for b in batches for v in b.column("a").to_pylist()]
        assert len(values) == 7 and "NA" in values  # left as text for `_to_numbers`


def test_decimal_commas_read_without_the_option_are_named(tmp_path: Path) -> None:
    src = tmp_path / "de.csv"
    src.write_text("x;y;t\n1,5;2;a\n-2,5;3;b\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "--delimiter", ";"])
    assert code == 0, err
    warnings = [line for line in err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and '"x"' in warnings[0] and "--decimal-comma" in warnings[0]
    src.write_text("x;t\n1,5;a\n2,5;b\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "--delimiter", ";"])
    assert code == 1
    assert 'column "x" holds numbers written with a decimal comma' in one_error(err)


def test_decimal_comma_with_comma_separated_fields_is_a_usage_error(tmp_path: Path) -> None:
    src = tmp_path / "in.csv"
    src.write_text("a,b\n1,2\n")
    code, _, err = invoke(["fit", src, "-s", tmp_path / "s.json", "--decimal-comma"])
    assert code == 2
    assert "--delimiter ';'" in one_error(err)
    tsv = tmp_path / "in.tsv"
    tsv.write_text("a\tb\n1,5\tx\n2,5\ty\n")
    code, _, err = invoke(["fit", tsv, "-s", tmp_path / "s.json", "--decimal-comma", "-q"])
    assert code == 0, err
    assert stats_of(tmp_path / "s.json")["a"]["mean"] == pytest.approx(2.0)
