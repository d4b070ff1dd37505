"""Turning request input (parsed JSON) into a float32 feature matrix, or a precise InputError."""

import math
from collections.abc import Mapping, Sequence

import numpy as np

from predictions.runtime.errors import InputError

_FLOAT32 = np.dtype(np.float32)
_FLOAT32_MAX = float(np.finfo(np.float32).max)
# Exact types only: bool is an int subclass, and numpy would also happily turn "5.1" into 5.1.
_PLAIN_NUMBERS = frozenset({float, int})
_JSON_NAMES = {str: "string", bool: "boolean", type(None): "null", dict: "object", list: "array"}


def rows_from_input(
    value: object,
    *,
    n_features: int,
    feature_names: Sequence[str] = (),
    field: str = "input_data",
    max_rows: int | None = None,
) -> np.ndarray:
    """Return a row, a list of rows or named features as float32 (n_rows, n_features)."""
    # A row is a list of numbers or an object mapping every feature name to a number.
    if type(value) is list:
        if not value:
            raise InputError(f"{field} must not be empty")
        first = value[0]
        if type(first) is not list and not isinstance(first, Mapping):
            if len(value) == n_features and _is_plain_row(value):
                return np.array([value], dtype=_FLOAT32)
            return _checked_row(value, field, n_features, feature_names, count_prefix="")[None]
        return _rows(value, field, n_features, feature_names, max_rows)
    if isinstance(value, Mapping):
        return _checked_row(value, field, n_features, feature_names, count_prefix="")[None]
    raise InputError(
        f"{field} must be an array of numbers, an array of rows or an object of named features, "
        f"got {json_kind(value)}"
    )


def _rows(
    value: list,
    field: str,
    n_features: int,
    feature_names: Sequence[str],
    max_rows: int | None,
) -> np.ndarray:
    if max_rows is not None and len(value) > max_rows:
        raise InputError(f"{field} has {len(value)} rows; at most {max_rows} are allowed")
    if all(type(row) is list and len(row) == n_features and _is_plain_row(row) for row in value):
        return np.array(value, dtype=_FLOAT32)
    checked = [
        _checked_row(row, f"{field}[{i}]", n_features, feature_names, count_prefix=f"row {i}: ")
        for i, row in enumerate(value)
    ]
    return np.stack(checked)


def _is_plain_row(row: list) -> bool:
    """Tell cheaply, in C, whether a row surely holds only ints and floats finite in float32."""
    # NaN or infinity make the sum NaN or infinite and a value beyond float32 makes it too big.
    # A row of huge but valid values fails too; the value-by-value path then accepts it.
    if not set(map(type, row)) <= _PLAIN_NUMBERS:
        return False
    try:
        return sum(map(abs, row)) <= _FLOAT32_MAX
    except OverflowError:  # a float plus an int too big to become a float
        return False


def _checked_row(
    row: object,
    place: str,
    n_features: int,
    feature_names: Sequence[str],
    *,
    count_prefix: str,
) -> np.ndarray:
    """Validate one row value by value, so that the error names the first bad place."""
    if isinstance(row, Mapping):
        values = _values_by_name(row, place, feature_names, count_prefix)
    elif type(row) is list:
        if not row:
            raise InputError(f"{place} must not be empty")
        values = [_number(v, f"{place}[{i}]") for i, v in enumerate(row)]
    else:
        raise InputError(
            f"{place} must be an array of numbers or an object of named features, "
            f"got {json_kind(row)}"
        )
    if len(values) != n_features:
        raise InputError(f"{count_prefix}expected {n_features} features, got {len(values)}")
    return np.array(values, dtype=_FLOAT32)


def _values_by_name(
    row: Mapping, place: str, feature_names: Sequence[str], prefix: str
) -> list[float]:
    if not row:
        raise InputError(f"{place} must not be empty")
    if not feature_names:
        raise InputError(
            f"{place} must be an array of numbers: this model has no feature names to match"
        )
    known = set(feature_names)
    for name in row:
        if name not in known:
            raise InputError(
                f"{prefix}unknown feature {name!r}; expected: {', '.join(feature_names)}"
            )
    for name in feature_names:
        if name not in row:
            raise InputError(f"{prefix}missing feature {name!r}")
    return [_number(row[name], f"{place}.{name}") for name in feature_names]


def _number(value: object, place: str) -> float:
    """Return `value` as a float that fits float32, or raise InputError naming `place`."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
        raise InputError(f"{place} must be a number, got {json_kind(value)}")
    if isinstance(value, np.complexfloating):
        raise InputError(f"{place} must be a real number, got a complex number")
    try:
        number = float(value)
    except OverflowError:
        number = math.inf
    if not abs(number) <= _FLOAT32_MAX:
        raise InputError(f"{place} is not a finite number")
    return number


def json_kind(value: object) -> str:
    """Name a value's type as a JSON client would know it."""
    for kind, name in _JSON_NAMES.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
