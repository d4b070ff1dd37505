"""Reading batch input files (CSV, NPY, JSONL) into a float32 matrix, naming the bad row.

Rows are numbered from 1 as a person counts data rows: a CSV header is not a row.
"""

import io
import re

import numpy as np
import orjson

from predictions.runtime.errors import InputError

_FLOAT32_MAX = float(np.finfo(np.float32).max)
_LOADTXT_ROW = re.compile(r"at row (\d+)")


def _finite_float32(values: np.ndarray, first_row: int = 1) -> np.ndarray:
    """float32 rows, or an InputError naming the first row with NaN, Infinity or overflow."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values) | (np.abs(values) > _FLOAT32_MAX)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise InputError(
            f"row {row + first_row}, column {column + 1}: {float(values[row, column])} is not a "
            "finite number"
        )
    return values.astype(np.float32)


def _check_width(values: np.ndarray, n_features: int) -> np.ndarray:
    if values.ndim != 2 or values.shape[0] == 0:
        raise InputError("the file holds no rows")
    if values.shape[1] != n_features:
        raise InputError(f"row 1: expected {n_features} features, got {values.shape[1]}")
    return values


def _is_header(line: bytes) -> bool:
    try:
        [float(cell) for cell in line.split(b",")]
    except ValueError:
        return True
    return False


def read_csv(data: bytes, *, n_features: int) -> np.ndarray:
    """Comma-separated rows, with or without one header line of names."""
    text = bytes(data).lstrip(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is no data
    first_line = text.split(b"\n", 1)[0].strip()
    if not first_line:
        raise InputError("the file holds no rows")
    skip = 1 if _is_header(first_line) else 0
    try:
        values = np.loadtxt(
            io.BytesIO(text), delimiter=",", dtype=np.float64, ndmin=2, skiprows=skip
        )
    except ValueError as exc:
        message = str(exc)
        match = _LOADTXT_ROW.search(message)
        if "number of columns changed" in message:
            # numpy counts these rows from 1, after the skipped header.
            where = f"row {match[1]}: " if match else ""
            problem = f"every row needs {n_features} comma-separated values"
            raise InputError(f"{where}{problem}") from None
        cell = re.search(r"could not convert string '([^']*)'", message)
        if cell:
            # ...and these from 0.
            where = f"row {int(match[1]) + 1}: " if match else ""
            raise InputError(f"{where}{cell[1]!r} is not a number") from None
        raise InputError(f"could not read the CSV: {message}") from None
    return _finite_float32(_check_width(values, n_features))


def read_npy(data: bytes, *, n_features: int) -> np.ndarray:
    """A .npy array of numbers, shape (rows, features)."""
    try:
        values = np.load(io.BytesIO(bytes(data)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"not a readable .npy array of numbers: {exc}") from None
    if not isinstance(values, np.ndarray) or values.dtype.kind not in "iuf":
        raise InputError("the .npy array must hold integers or floats")
    return _finite_float32(_check_width(values, n_features))


def read_jsonl(data: bytes, *, n_features: int) -> np.ndarray:
    """One JSON array of numbers per line."""
    lines = [line for line in bytes(data).splitlines() if line.strip()]
    if not lines:
        raise InputError("the file holds no rows")
    try:
        values = np.array(orjson.loads(b"[" + b",".join(lines) + b"]"), dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == n_features:
            return _finite_float32(values)
    except (orjson.JSONDecodeError, ValueError, TypeError):
        pass
    # Something is off: find the first bad line and say what it is.
    for number, line in enumerate(lines, start=1):
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"row {number}: not valid JSON ({exc})") from None
        if type(row) is not list:
            raise InputError(f"row {number}: must be a JSON array of numbers")
        if len(row) != n_features:
            raise InputError(f"row {number}: expected {n_features} features, got {len(row)}")
        for column, value in enumerate(row, start=1):
            if type(value) not in (int, float):
                raise InputError(f"row {number}, column {column}: must be a number")
    raise InputError("the rows could not be read as numbers")


READERS = {"csv": read_csv, "npy": read_npy, "jsonl": read_jsonl}
