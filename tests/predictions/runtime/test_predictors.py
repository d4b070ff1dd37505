"""Tests for DenseNetwork.predict and the runtime registry."""

import numpy as np
import pytest

from predictions.runtime.artifacts import dump_dense, load_dense
from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import RUNTIMES, DenseNetwork, load_predictor


@pytest.fixture
def network(network_arrays) -> DenseNetwork:
    a = network_arrays
    return DenseNetwork(
        [a["W0"], a["W1"]],
        [a["b0"], a["b1"]],
        ["relu", "softmax"],
        input_mean=a["input_mean"],
        input_scale=a["input_scale"],
    )


@pytest.fixture
def rows() -> np.ndarray:
    rng = np.random.default_rng(7)
    return (rng.normal(size=(200, 4)) * [0.8, 0.4, 1.8, 0.8] + [5.8, 3.0, 3.7, 1.2]).astype("f4")


def reference(arrays: dict[str, np.ndarray], X: np.ndarray) -> np.ndarray:
    """The documented formula, evaluated plainly in float64."""
    h = (X - arrays["input_mean"]) / arrays["input_scale"]
    h = np.maximum(h @ arrays["W0"] + arrays["b0"], 0)
    z = h @ arrays["W1"] + arrays["b1"]
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_predict_returns_float32_rows_of_n_outputs(network, rows):
    outputs = network.predict(rows)

    assert outputs.shape == (200, 3)
    assert outputs.dtype == np.float32


def test_predict_matches_the_documented_formula(network, network_arrays, rows):
    np.testing.assert_allclose(network.predict(rows), reference(network_arrays, rows), atol=1e-5)


def test_predict_on_many_rows_equals_predicting_row_by_row(network, rows):
    one_by_one = np.vstack([network.predict(row[np.newaxis]) for row in rows])

    # BLAS sums a single row and a block of rows in different orders, so float32 results may
    # differ in the last digits (up to 3e-6 relative with OpenBLAS's kernels on AMD EPYC).
    np.testing.assert_allclose(network.predict(rows), one_by_one, rtol=1e-5, atol=1e-6)


def test_softmax_rows_are_probabilities_that_sum_to_one(network, rows):
    outputs = network.predict(rows)

    assert (outputs >= 0).all() and (outputs <= 1).all()
    np.testing.assert_allclose(outputs.sum(axis=1), 1.0, rtol=1e-6)


def test_predict_accepts_float64_and_leaves_the_input_unchanged(network, rows):
    X = rows.astype(np.float64)
    before = X.copy()

    outputs = network.predict(X)

    np.testing.assert_array_equal(X, before)
    assert outputs.dtype == np.float32


@pytest.mark.parametrize("activation", ["softmax", "sigmoid"])
def test_if_values_are_huge_then_softmax_and_sigmoid_do_not_overflow(activation):
    network = DenseNetwork([np.array([[1.0, -1.0]])], [np.zeros(2)], [activation])
    X = np.array([[1e30], [-1e30], [0.0]], dtype=np.float32)

    # Underflow to 0 is the right answer here; overflow or NaN would be the bug.
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        outputs = network.predict(X)

    np.testing.assert_array_equal(outputs, [[1, 0], [0, 1], [0.5, 0.5]])


@pytest.mark.parametrize(
    ("activation", "expected"),
    [
        ("relu", [0.0, 0.0, 2.0]),
        ("tanh", np.tanh([-3.0, 0.0, 2.0])),
        ("sigmoid", 1 / (1 + np.exp([3.0, 0.0, -2.0]))),
        ("identity", [-3.0, 0.0, 2.0]),
    ],
)
def test_elementwise_activations_compute_their_function(activation, expected):
    network = DenseNetwork([np.eye(3)], [np.zeros(3)], [activation])

    outputs = network.predict(np.array([[-3.0, 0.0, 2.0]]))

    np.testing.assert_allclose(outputs[0], expected, rtol=1e-6)


def test_if_columns_do_not_match_inputs_then_predict_raises_value_error(network):
    with pytest.raises(ValueError, match=r"expected an array of shape \(n_rows, 4\)"):
        network.predict(np.zeros((2, 5), dtype=np.float32))


def test_network_arrays_are_read_only(network):
    with pytest.raises(ValueError, match="read-only"):
        network.weights[0][0, 0] = 1.0


def test_if_input_scale_is_tiny_then_artifact_error_instead_of_infinite_outputs(network_arrays):
    with pytest.raises(ArtifactError, match="input_scale is too close to zero"):
        DenseNetwork(
            [network_arrays["W0"]],
            [network_arrays["b0"]],
            ["relu"],
            input_scale=np.full(4, 1e-40),
        )


def test_if_layer_counts_differ_then_artifact_error():
    with pytest.raises(ArtifactError, match="^got 1 weight matrices, 2 bias vectors and 1"):
        DenseNetwork([np.eye(2)], [np.zeros(2), np.zeros(2)], ["relu"])


def test_load_predictor_with_numpy_runtime_gives_a_working_predictor(network_arrays, rows):
    a = network_arrays
    data = dump_dense([a["W0"], a["W1"]], [a["b0"], a["b1"]], ["relu", "softmax"])

    predictor = load_predictor("numpy", data)

    assert (predictor.n_inputs, predictor.n_outputs) == (4, 3)
    np.testing.assert_array_equal(predictor.predict(rows), load_dense(data).predict(rows))


def test_if_runtime_is_unknown_then_artifact_error_lists_the_known_ones():
    assert list(RUNTIMES) == ["numpy", "onnx"]

    with pytest.raises(
        ArtifactError, match=r"^unknown runtime 'tensorflow' \(choose from numpy, onnx\)$"
    ):
        load_predictor("tensorflow", b"")
