"""The multi-core CSV reader against pyarrow's own streaming reader.

Whatever the piece size (down to a few bytes, so that pieces end everywhere,
including inside quoted fields that hold newlines), the parallel reader must
give the same table, and the same error with the same row number.
"""

from __future__ import annotations

import io
import random

import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from bnorm_cli.io.csv_parallel import parallel_csv
from bnorm_cli.io.streams import RowEnds

NAMES = ["x", "note", "y"]
TYPES = {"x": pa.float64(), "note": pa.string(), "y": pa.float64()}
PARSE = pacsv.ParseOptions(newlines_in_values=True)
CONVERT = pacsv.ConvertOptions(
    column_types=TYPES, null_values=[""], strings_can_be_null=True, quoted_strings_can_be_null=False
)
NOTES = ["plain", '"two\nlines"', '"say ""hi"""', '"a,b"', "", '""', '"\n\n"', '"\r\n"', "é ü"]


def serial(data: bytes) -> pa.Table:
    reader = pacsv.open_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=PARSE,
        convert_options=CONVERT,
    )
    return reader.read_all()


def parallel(data: bytes, piece: int) -> pa.Table:
    batches = list(parallel_csv(io.BytesIO(data), NAMES, PARSE, CONVERT, piece, workers=3))
    return pa.Table.from_batches(batches, pa.schema([pa.field(n, TYPES[n]) for n in NAMES]))


def same(a: pa.Table, b: pa.Table) -> bool:
    """Equal values, NaN included (``Table.equals`` says NaN != NaN)."""
    return a.schema == b.schema and all(
        [repr(v) for v in a.column(n).to_pylist()] == [repr(v) for v in b.column(n).to_pylist()]
        for n in a.column_names
    )


def make_csv(rows: int, seed: int, newline: str = "\n") -> bytes:
    rng = random.Random(seed)
    lines = ["x,note,y"]
    for i in range(rows):
        x = rng.choice([f"{rng.uniform(-1e6, 1e6)!r}", "", "nan", "-inf", "1e-300"])
        lines.append(f"{x},{rng.choice(NOTES)},{i}")
        if rng.random() < 0.05:
            lines.append("")  # a blank line: skipped
    return (newline.join(lines) + rng.choice(["", newline])).encode()


@pytest.mark.parametrize("piece", [1, 2, 3, 7, 16, 61, 256, 4096])
@pytest.mark.parametrize("seed", range(4))
def test_same_table_as_the_streaming_reader(piece: int, seed: int) -> None:
    data = make_csv(300, seed, newline="\r\n" if seed % 2 else "\n")
    if seed == 3:
        data = b"\xef\xbb\xbf" + data  # a UTF-8 byte order mark
    assert same(parallel(data, piece), serial(data))


@pytest.mark.parametrize("piece", [5, 64, 1000])
@pytest.mark.parametrize(
    "bad",
    ["abc,x,1", "1,x", "1,x,2,3", '1,"open quote,2'],
    ids=["not-a-number", "short-row", "long-row", "unclosed-quote"],
)
def test_same_error_and_row_number(piece: int, bad: str) -> None:
    good = [f'{i}.5,"n{i}\nsecond line",{i}' for i in range(200)]  # quoted newlines too
    data = ("\n".join(["x,note,y", *good[:150], bad, *good[150:]]) + "\n").encode()
    with pytest.raises(pa.ArrowInvalid) as expected:
        serial(data)
    with pytest.raises(pa.ArrowInvalid) as got:
        parallel(data, piece)
    assert str(got.value) == str(expected.value)


def test_header_only_and_a_row_longer_than_a_piece() -> None:
    assert parallel(b"x,note,y\n", 4).num_rows == 0
    long = b"x,note,y\n1," + b"z" * 10_000 + b",2\n3,w,4\n"
    assert same(parallel(long, 16), serial(long))


@pytest.mark.parametrize(
    ("text", "end"),
    [
        (b"a,b\n1,2\n3", 8),
        (b'a,"x\ny"\n', 8),
        (b'a,"x\ny', 0),  # the only newline is inside quotes
        (b'"""\n"\nz', 6),  # an escaped quote, then a quoted newline
        (b"no newline", 0),
        (b'0,1.5,5" screen\n1,2,3\n', 22),  # a '"' inside a field is a plain character
        (b'0,5" a,"b\n"\n1', 12),  # ... and does not pair with a quote that opens a field
        (b'0,"a"b"c,\n1', 10),  # after a closing quote, text to the delimiter
        (b'0,"a""\n"\n', 9),  # '""' inside quotes, then a quoted newline
        (b'0,"a\rb"\r1,2\r\n', 13),  # '\r' in quotes is text, outside it ends a row
        (b"0,1\r", 0),  # a '\r' at the end may be the start of '\r\n'
    ],
)
def test_row_end(text: bytes, end: int) -> None:
    assert RowEnds(quotes=True).cut(bytearray(text), len(text)) == end


@pytest.mark.parametrize("piece", [3, 50, 4096])
def test_a_stray_quote_is_text(piece: int) -> None:
    rows = [f'{i},"n{i}\nsecond",{i}' if i % 3 else f'{i},5" screen,{i}' for i in range(300)]
    data = ("\n".join(["x,note,y", *rows]) + "\n").encode()
    assert same(parallel(data, piece), serial(data))
    assert parallel(data, piece).num_rows == 300
