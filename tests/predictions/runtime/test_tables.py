"""Batch files read a block at a time: rows, line numbers and line ends across block edges."""

import io

import numpy as np
import pytest

from predictions.runtime import tables
from predictions.runtime.errors import InputError
from predictions.runtime.tables import TooManyRows, read_table

ROWS = np.random.default_rng(11).uniform(0, 8, size=(500, 4)).astype(np.float32)


@pytest.fixture(autouse=True)
def small_blocks(monkeypatch):
    """Blocks of 100 bytes: every file below crosses many block edges, mid-line too."""
    monkeypatch.setattr(tables, "BLOCK_BYTES", 100)


def csv_of(rows, end: bytes = b"\n") -> bytes:
    return end.join(b",".join(repr(float(v)).encode() for v in row) for row in rows) + end


def read(data: bytes, fmt: str = "csv", **options):
    options.setdefault("max_rows", 10_000)
    return read_table(io.BytesIO(data), fmt, n_features=4, **options)


@pytest.mark.parametrize("end", [b"\n", b"\r\n"])
def test_rows_across_block_edges_are_read_exactly(end):
    table = read(b"a,b,c,d" + end + csv_of(ROWS, end))

    assert np.array_equal(table.rows, ROWS)
    assert np.array_equal(np.load(io.BytesIO(table.npy)), ROWS)


def test_a_bad_line_far_into_the_file_is_named_by_its_line_number():
    lines = csv_of(ROWS).splitlines()
    lines[400] = b"1,2,x,4"

    with pytest.raises(InputError, match=r"^line 401, column 3: 'x' is not a number$"):
        read(b"\n".join(lines))


def test_blank_lines_are_no_rows_but_keep_the_numbering():
    data = csv_of(ROWS[:3]) + b"\n  \n" + b"1,2,3\n"

    with pytest.raises(InputError, match=r"^line 6: expected 4 values, got 3$"):
        read(data)


def test_the_row_cap_holds_across_blocks():
    with pytest.raises(TooManyRows, match="at most 499 rows"):
        read(csv_of(ROWS), max_rows=499)
    assert len(read(csv_of(ROWS), max_rows=500).rows) == 500


def test_jsonl_across_block_edges():
    data = b"\n".join(b"[" + b", ".join(repr(float(v)).encode() for v in r) + b"]" for r in ROWS)

    assert np.array_equal(read(data, "jsonl").rows, ROWS)
