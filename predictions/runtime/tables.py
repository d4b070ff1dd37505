"""Reading batch input files (CSV, NPY, JSONL) into float32 rows, in bounded memory.

A file is read as a stream, about a mebibyte at a time, into one float32 array allocated once
(the system gives it memory as rows fill it) that is the body of the .npy file the job stores:
the process holds the parsed rows once, and neither the file nor a Python object per number.
Rows are counted against the cap as they are read; an NPY header is checked before anything is
allocated.

A file means what it says. Each line is a row (a line of blanks is none), and nothing in a line
is skipped or reinterpreted: ``#`` is no comment, a CSV's first line is a header only when every
cell of it is a name (unless the client says ``header``), a JSONL line holds exactly one array of
numbers (``true`` is not 1). Errors name the line as the file counts lines, from 1.
"""

import io
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
import orjson
from numpy.lib import format as npy_format

from predictions.runtime.errors import InputError

FORMATS = ("csv", "npy", "jsonl")
BLOCK_BYTES = 1 << 20

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_NUMBER = re.compile(rb"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*")
_NOT_JSON_NUMBERS = re.compile(rb'["{tfn]')  # strings, objects, true, false, null
_NPY_MAGIC = b"\x93NUMPY\x01\x00"


class TooLarge(InputError):
    """The file's rows cannot be held."""


class TooManyRows(TooLarge):
    """The file holds more rows than a job may."""

    def __init__(self, limit: int, rows: int | None = None) -> None:
        held = "more" if rows is None else str(rows)
        super().__init__(f"A job may hold at most {limit} rows; this file holds {held}.")


@dataclass(frozen=True, slots=True)
class Table:
    rows: np.ndarray  # (rows, features) float32
    npy: memoryview  # the same rows as the bytes of a .npy file, sharing their memory


def read_table(
    file: BinaryIO, fmt: str, *, n_features: int, max_rows: int, header: bool | None = None
) -> Table:
    """The rows of ``file`` (binary, seekable) in format ``fmt``; InputError names the problem.

    ``header`` (CSV only): whether the first line names the columns; None decides by its cells.
    """
    if fmt == "npy":
        return _read_npy(file, n_features=n_features, max_rows=max_rows)
    parse = _csv_block if fmt == "csv" else _jsonl_block
    n_lines, size = _count_lines(file)
    # Also at most one row per 2 bytes a feature (a digit and a comma or the line's end).
    rows = _Rows(min(n_lines, max_rows + 1, size // (2 * n_features) + 1), n_features, max_rows)
    for first, lines in _blocks(file):
        if first == 1 and fmt == "csv" and _is_header(lines[0], header):
            first, lines = 2, lines[1:]
        rows.extend(parse(lines, first, n_features))
    return rows.table()


def table_of(values: np.ndarray) -> Table:
    """``values`` (rows of numbers already checked) as a Table."""
    rows = _Rows(len(values), values.shape[1], len(values))
    rows.extend(values)
    return rows.table()


class _Rows:
    """Room for ``capacity`` float32 rows behind room for a .npy header, filled in order."""

    def __init__(self, capacity: int, width: int, max_rows: int) -> None:
        self.width, self.max_rows, self.count = width, max_rows, 0
        self.header_size = len(_npy_header(capacity, width))
        try:
            # np.empty: pages are given memory when rows are written to them, not now.
            self.buffer = np.empty(self.header_size + capacity * width * 4, dtype=np.uint8)
        except MemoryError:
            raise TooLarge(f"there is no memory for {capacity} rows of {width} values") from None
        self.array = self.buffer[self.header_size :].view("<f4").reshape(capacity, width)

    def extend(self, values: np.ndarray) -> None:
        end = self.count + len(values)
        if end > self.max_rows:
            raise TooManyRows(self.max_rows)
        self.array[self.count : end] = values
        self.count = end

    def table(self) -> Table:
        if not self.count:
            raise InputError("the file holds no rows")
        self.buffer[: self.header_size] = np.frombuffer(
            _npy_header(self.count, self.width, self.header_size), dtype=np.uint8
        )
        end = self.header_size + self.count * self.width * 4
        return Table(self.array[: self.count], memoryview(self.buffer[:end]))


def _npy_header(rows: int, width: int, size: int = 0) -> bytes:
    """A version 1.0 .npy header for float32 rows, padded to ``size`` bytes (or to 64)."""
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {width}), }}"
    fixed = len(_NPY_MAGIC) + 2 + len(text) + 1
    size = size or -(-fixed // 64) * 64
    padded = text + " " * (size - fixed) + "\n"
    return _NPY_MAGIC + struct.pack("<H", len(padded)) + padded.encode("latin-1")


# --- CSV and JSONL ---------------------------------------------------------------------------


def _count_lines(file: BinaryIO) -> tuple[int, int]:
    """The number of lines in ``file`` and its size in bytes."""
    file.seek(0)
    count = size = 0
    last = b""
    while chunk := file.read(BLOCK_BYTES):
        count, size, last = count + chunk.count(b"\n"), size + len(chunk), chunk
    file.seek(0)
    return count + (1 if last and not last.endswith(b"\n") else 0), size


def _blocks(file: BinaryIO) -> Iterator[tuple[int, list[bytes]]]:
    """(number of the first line, the lines without their ends), about BLOCK_BYTES at a time."""
    carry, number = b"", 1
    while True:
        chunk = file.read(BLOCK_BYTES)
        if number == 1 and not carry:
            chunk = chunk.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is no data
        data = (carry + chunk).replace(b"\r\n", b"\n")
        lines = data.split(b"\n")
        carry = lines.pop() if chunk else b""
        if not chunk and not carry and lines == [b""]:
            lines = []  # the file ended with its last line's end
        if lines:
            yield number, lines
            number += len(lines)
        if not chunk:
            return


def _is_header(line: bytes, header: bool | None) -> bool:
    if header is not None:
        return header
    cells = line.split(b",")
    return all(cell.strip() and not _NUMBER.fullmatch(cell) for cell in cells)


def _csv_block(lines: list[bytes], first: int, n_features: int) -> np.ndarray:
    if lines and all(lines):  # no empty line: numpy's reader in C, else the exact one below
        try:
            values = np.loadtxt(lines, delimiter=",", comments=None, dtype=np.float64, ndmin=2)
        except ValueError:
            pass
        else:
            if values.shape[1] == n_features and _all_finite(values):
                return values
    return _exactly(lines, first, n_features, _csv_cells)


def _csv_cells(line: bytes, number: int) -> list:
    cells = line.split(b",")
    for column, cell in enumerate(cells, start=1):
        if not _NUMBER.fullmatch(cell):
            text = cell.decode("utf-8", "replace").strip()
            raise InputError(f"line {number}, column {column}: {text[:40]!r} is not a number")
    return [float(cell) for cell in cells]


def _jsonl_block(lines: list[bytes], first: int, n_features: int) -> np.ndarray:
    present = [line for line in lines if line.strip()]
    joined = b"[" + b",".join(present) + b"]"
    if present and not _NOT_JSON_NUMBERS.search(joined):
        try:
            values = np.array(orjson.loads(joined), dtype=np.float64)
        except (orjson.JSONDecodeError, ValueError):
            pass
        else:
            if values.shape == (len(present), n_features) and _all_finite(values):
                return values
    return _exactly(lines, first, n_features, _jsonl_cells)


def _jsonl_cells(line: bytes, number: int) -> list:
    try:
        row = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise InputError(
            f"line {number}: not one JSON array of numbers ({exc.msg} at column {exc.colno})"
        ) from None
    if type(row) is not list:
        raise InputError(f"line {number}: not one JSON array of numbers")
    for column, value in enumerate(row, start=1):
        if type(value) not in (int, float):
            text = orjson.dumps(value).decode()[:40]
            raise InputError(f"line {number}, column {column}: {text} is not a number")
    return row


def _exactly(
    lines: list[bytes], first: int, n_features: int, cells: Callable[[bytes, int], list]
) -> np.ndarray:
    """The rows of a block read line by line in Python; InputError at the first bad line."""
    rows = []
    for number, line in enumerate(lines, start=first):
        if not line.strip():
            continue
        row = cells(line, number)
        if len(row) != n_features:
            raise InputError(f"line {number}: expected {n_features} values, got {len(row)}")
        for column, value in enumerate(row, start=1):
            if not abs(value) <= _FLOAT32_MAX:  # also NaN
                raise InputError(f"line {number}, column {column}: {value} is not a finite number")
        rows.append(row)
    return np.array(rows, dtype=np.float64).reshape(-1, n_features)


def _all_finite(values: np.ndarray) -> bool:
    return bool((np.abs(values) <= _FLOAT32_MAX).all())


# --- NPY -------------------------------------------------------------------------------------


def _read_npy(file: BinaryIO, *, n_features: int, max_rows: int) -> Table:
    """A 2-D .npy array of integers or floats, checked from its header before it is read."""
    file.seek(0)
    try:
        version = npy_format.read_magic(file)
        read_header = {
            (1, 0): npy_format.read_array_header_1_0,
            (2, 0): npy_format.read_array_header_2_0,
        }.get(version)
        if read_header is None:
            raise ValueError(f"version {version[0]}.{version[1]} is not supported")
        shape, fortran_order, dtype = read_header(file)
    except (ValueError, OSError, EOFError, SyntaxError) as exc:
        raise InputError(f"not a readable .npy array of numbers: {exc}") from None
    if dtype.hasobject or dtype.kind not in "iuf":
        raise InputError(f"the .npy array must hold integers or floats, not {dtype}")
    if len(shape) != 2 or shape[0] == 0:
        raise InputError(f"the .npy array must have shape (rows, features), not {shape}")
    n_rows, width = shape
    if width != n_features:
        raise InputError(f"expected {n_features} features, the .npy array has {width}")
    if n_rows > max_rows:
        raise TooManyRows(max_rows, n_rows)
    start = file.tell()
    follow = file.seek(0, io.SEEK_END) - start
    if follow != n_rows * width * dtype.itemsize:
        raise InputError(
            f"the .npy header says {n_rows} x {width} of {dtype}, "
            f"{n_rows * width * dtype.itemsize} bytes, but {follow} follow it"
        )
    file.seek(start)
    rows = _Rows(n_rows, width, max_rows)
    # Fortran order holds the array column after column: then a "row" read here is a column.
    lines, across = (width, n_rows) if fortran_order else (n_rows, width)
    step = max(1, BLOCK_BYTES // (across * dtype.itemsize))
    target = rows.array.T if fortran_order else rows.array
    for at in range(0, lines, step):
        block = np.frombuffer(file.read(min(step, lines - at) * across * dtype.itemsize), dtype)
        block = block.reshape(-1, across).astype(np.float64)
        bad = ~(np.abs(block) <= _FLOAT32_MAX)
        if bad.any():
            line, cell = np.argwhere(bad)[0]
            row, column = (cell, at + line) if fortran_order else (at + line, cell)
            raise InputError(
                f"row {row + 1}, column {column + 1}: {block[line, cell]} is not a finite number"
            )
        target[at : at + len(block)] = block
    rows.count = n_rows
    return rows.table()
