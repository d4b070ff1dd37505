"""Tests for turning request input into a float32 feature matrix."""

import re

import numpy as np
import pytest

from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input

IRIS = ("sepal_length", "sepal_width", "petal_length", "petal_width")


def rows(value, **kwargs) -> np.ndarray:
    return rows_from_input(value, n_features=4, feature_names=IRIS, **kwargs)


def test_a_flat_list_of_numbers_is_one_float32_row():
    result = rows([5.1, 3.5, 1, 0.2])

    assert result.dtype == np.float32
    np.testing.assert_array_equal(result, np.array([[5.1, 3.5, 1.0, 0.2]], dtype=np.float32))


def test_a_list_of_lists_is_several_rows():
    result = rows([[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]])

    np.testing.assert_array_equal(result, np.array([[5.1, 3.5, 1.4, 0.2], [6, 3, 5, 2]], "f4"))


def test_an_object_of_named_features_is_one_row_in_model_order():
    value = {"petal_width": 0.2, "sepal_length": 5.1, "petal_length": 1.4, "sepal_width": 3.5}

    np.testing.assert_array_equal(rows(value), np.array([[5.1, 3.5, 1.4, 0.2]], "f4"))


def test_rows_may_be_objects_of_named_features():
    named = dict(zip(IRIS, [6, 3, 5, 2], strict=True))

    np.testing.assert_array_equal(rows([[5, 3, 1, 0], named]), [[5, 3, 1, 0], [6, 3, 5, 2]])


def test_numpy_numbers_and_values_at_the_edge_of_float32_are_accepted():
    value = [np.float64(1.5), np.int64(2), 3.4e38, -3.4e38]

    np.testing.assert_array_equal(rows(value), np.array([value], dtype=np.float32))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "input_data must not be empty"),
        ({}, "input_data must not be empty"),
        (
            None,
            "input_data must be an array of numbers, an array of rows or an object of "
            "named features, got null",
        ),
        (
            True,
            "input_data must be an array of numbers, an array of rows or an object of "
            "named features, got boolean",
        ),
        (
            "5.1,3.5,1.4,0.2",
            "input_data must be an array of numbers, an array of rows or an object of "
            "named features, got string",
        ),
        ([5.1, 3.5, 1.4], "expected 4 features, got 3"),
        ([5.1, "3.5", 1.4, 0.2], "input_data[1] must be a number, got string"),
        ([5.1, 3.5, "nan", 0.2], "input_data[2] must be a number, got string"),
        ([5.1, 3.5, 1.4, "5"], "input_data[3] must be a number, got string"),
        ([5.1, True, 1.4, 0.2], "input_data[1] must be a number, got boolean"),
        ([5.1, None, 1.4, 0.2], "input_data[1] must be a number, got null"),
        ([5.1, 3.5, float("nan"), 0.2], "input_data[2] is not a finite number"),
        ([5.1, 3.5, float("inf"), 0.2], "input_data[2] is not a finite number"),
        ([5.1, 3.5, 1e39, 0.2], "input_data[2] is not a finite number"),
        ([5.1, 3.5, 1e400, 0.2], "input_data[2] is not a finite number"),
        ([5.1, 3.5, 10**39, 0.2], "input_data[2] is not a finite number"),
        ([5.1, 3.5, 10**400, 0.2], "input_data[2] is not a finite number"),
        ([5.1, [3.5], 1.4, 0.2], "input_data[1] must be a number, got array"),
        ([[[5.1, 3.5, 1.4, 0.2]]], "input_data[0][0] must be a number, got array"),
        ([[5.1, 3.5, 1.4, 0.2], []], "input_data[1] must not be empty"),
        ([[5.1, 3.5, 1.4, 0.2], [1, 2, 3, 4, 5]], "row 1: expected 4 features, got 5"),
        (
            [[1, 2, 3, 4], [1, 2, 3, 4], [1, 2, "x", 4]],
            "input_data[2][2] must be a number, got string",
        ),
        ([[1, 2, 3, 4], [1, 2, float("nan"), 4]], "input_data[1][2] is not a finite number"),
        (
            [[1, 2, 3, 4], 5],
            "input_data[1] must be an array of numbers or an object of named features, got number",
        ),
        (
            {"sepal_length": 5.1, "foo": 1},
            "unknown feature 'foo'; expected: sepal_length, sepal_width, petal_length, petal_width",
        ),
        (
            {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4},
            "missing feature 'petal_width'",
        ),
        (
            dict(zip(IRIS, [5.1, 3.5, "1.4", 0.2], strict=True)),
            "input_data.petal_length must be a number, got string",
        ),
        (
            [[1, 2, 3, 4], {"foo": 1}],
            "row 1: unknown feature 'foo'; expected: sepal_length, "
            "sepal_width, petal_length, petal_width",
        ),
    ],
)
def test_if_input_is_bad_then_input_error_names_the_problem_and_place(value, message):
    with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
        rows(value)


def test_field_name_appears_in_messages():
    with pytest.raises(InputError, match=r"^inputs\[0\] must be a number, got string$"):
        rows(["a", 1, 2, 3], field="inputs")


def test_if_there_are_more_rows_than_allowed_then_input_error():
    with pytest.raises(InputError, match="^input_data has 3 rows; at most 2 are allowed$"):
        rows([[1, 2, 3, 4]] * 3, max_rows=2)


def test_rows_up_to_the_limit_are_accepted():
    assert rows([[1, 2, 3, 4]] * 2, max_rows=2).shape == (2, 4)


def test_if_model_has_no_feature_names_then_an_object_is_refused():
    with pytest.raises(InputError, match="this model has no feature names"):
        rows_from_input({"a": 1}, n_features=1)


def test_a_row_of_huge_but_valid_values_takes_the_slow_path_and_is_accepted():
    # Their sum overflows float32, which the fast check refuses; each value is still valid.
    value = [3e38, 3e38, 3e38, 3e38]

    np.testing.assert_array_equal(rows(value), np.array([value], dtype=np.float32))
