"""The onnx runtime: loading and checking graphs, and dense networks exported to ONNX."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from predictions.demo.datasets import load_dataset
from predictions.demo.training import train_demo_models
from predictions.runtime.artifacts import dump_dense, load_dense
from predictions.runtime.dense import DenseNetwork
from predictions.runtime.errors import ArtifactError
from predictions.runtime.onnx import dense_to_onnx, load_onnx
from predictions.runtime.predictors import RUNTIMES, load_predictor

ROWS = 3000


@pytest.fixture(scope="module")
def demo_versions() -> dict[str, bytes]:
    return {
        f"{model.name}:{version.label}": version.artifact
        for model in train_demo_models()
        for version in model.versions
    }


def rows_like(name: str, n: int = ROWS, seed: int = 0) -> np.ndarray:
    """Rows of a demo data set, resampled with noise: a few thousand plausible inputs."""
    X = load_dataset(name).X
    rng = np.random.default_rng(seed)
    picked = X[rng.integers(0, len(X), size=n)]
    return (picked + rng.normal(0, X.std(axis=0) * 0.1 + 1e-3, size=picked.shape)).astype("f4")


def graph(
    nodes, inputs, outputs, initializers=(), *, opset: int = 17, ir_version: int = 8
) -> bytes:
    model = helper.make_model(
        helper.make_graph(nodes, "test", inputs, outputs, initializer=list(initializers)),
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=ir_version,
    )
    return model.SerializeToString()


def float_input(name="x", shape=("batch", 4), elem=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, elem, list(shape))


def matmul_graph(n_in: int = 4, n_out: int = 3, *, input_shape=None, elem=TensorProto.FLOAT):
    weight = numpy_helper.from_array(np.ones((n_in, n_out), dtype="f4"), "W")
    return graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [float_input(shape=input_shape or ("batch", n_in), elem=elem)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n_out])],
        [weight],
    )


@pytest.mark.parametrize(
    ("key", "dataset"),
    [
        ("iris:v1", "iris"),
        ("iris:v2", "iris"),
        ("breast-cancer:v1", "breast-cancer"),
        ("digits:v1", "digits"),
    ],
)
def test_every_demo_model_exported_to_onnx_agrees_with_numpy_on_thousands_of_rows(
    demo_versions, key, dataset
):
    dense = load_dense(demo_versions[key])
    exported = load_onnx(dense_to_onnx(dense))
    X = rows_like(dataset)

    expected, got = dense.predict(X), exported.predict(X)

    assert got.dtype == np.float32 and got.shape == expected.shape == (ROWS, dense.n_outputs)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert (got.argmax(axis=1) == expected.argmax(axis=1)).all()
    assert (exported.n_inputs, exported.n_outputs) == (dense.n_inputs, dense.n_outputs)


def test_every_activation_and_no_standardisation_export_faithfully():
    rng = np.random.default_rng(3)
    sizes = [5, 8, 7, 6, 4, 2]
    network = DenseNetwork(
        [rng.normal(size=(a, b)) for a, b in zip(sizes[:-1], sizes[1:], strict=True)],
        [rng.normal(size=b) for b in sizes[1:]],
        ["relu", "tanh", "identity", "sigmoid", "identity"],
    )
    X = rng.normal(size=(500, 5)).astype("f4") * 3

    np.testing.assert_allclose(
        load_onnx(dense_to_onnx(network)).predict(X), network.predict(X), rtol=1e-4, atol=1e-5
    )


def test_export_is_deterministic_and_loads_through_the_runtime_registry(demo_versions):
    dense = load_dense(demo_versions["iris:v2"])
    data = dense_to_onnx(dense)

    assert dense_to_onnx(load_dense(demo_versions["iris:v2"])) == data
    assert "onnx" in RUNTIMES
    predictor = load_predictor("onnx", data)
    assert (predictor.n_inputs, predictor.n_outputs) == (4, 3)
    assert predictor.predict(np.array([[5.1, 3.5, 1.4, 0.2]])).shape == (1, 3)


def test_a_session_runs_on_one_intra_op_thread(demo_versions):
    network = load_onnx(dense_to_onnx(load_dense(demo_versions["digits:v1"])))

    options = network._session.get_session_options()

    assert options.intra_op_num_threads == 1
    assert options.inter_op_num_threads == 1


def test_predict_refuses_rows_of_the_wrong_width(demo_versions):
    network = load_onnx(dense_to_onnx(load_dense(demo_versions["iris:v1"])))

    with pytest.raises(ValueError, match=r"shape \(n_rows, 4\)"):
        network.predict(np.zeros((2, 5), dtype="f4"))


def test_a_double_input_graph_is_fed_float64_and_answers_float32():
    weight = numpy_helper.from_array(np.eye(3), "W")
    data = graph(
        [helper.make_node("MatMul", ["x", "W"], ["y"])],
        [float_input(shape=(None, 3), elem=TensorProto.DOUBLE)],
        [helper.make_tensor_value_info("y", TensorProto.DOUBLE, [None, 3])],
        [weight],
    )

    outputs = load_onnx(data).predict(np.array([[1.0, 2.0, 3.0]], dtype="f4"))

    assert outputs.dtype == np.float32
    np.testing.assert_array_equal(outputs, [[1.0, 2.0, 3.0]])


def test_the_first_float_matrix_output_is_the_answer_and_other_outputs_are_ignored():
    weight = numpy_helper.from_array(np.ones((4, 3), dtype="f4"), "W")
    data = graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["probabilities"]),
            helper.make_node("ArgMax", ["probabilities"], ["label"], axis=1, keepdims=0),
        ],
        [float_input()],
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 3]),
        ],
        [weight],
    )

    network = load_onnx(data)

    assert network.output_name == "probabilities" and network.n_outputs == 3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "the artifact is empty"),
        (b"PK\x03\x04 not really", "zip archive .* numpy runtime"),
        (b"\xff\xfe this is not protobuf at all \x00\x01", "not an ONNX model"),
    ],
)
def test_bytes_that_are_not_onnx_are_refused_with_a_reason(data, message):
    with pytest.raises(ArtifactError, match=message):
        load_onnx(data)


def test_a_numpy_artifact_uploaded_as_onnx_is_recognised(network_arrays):
    a = network_arrays
    npz = dump_dense([a["W0"], a["W1"]], [a["b0"], a["b1"]], ["relu", "softmax"])

    with pytest.raises(ArtifactError, match="numpy runtime"):
        load_onnx(npz)


def test_a_graph_with_two_inputs_is_refused():
    data = graph(
        [helper.make_node("Add", ["x", "z"], ["y"])],
        [float_input("x"), float_input("z")],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )

    with pytest.raises(ArtifactError, match=r"2 inputs \('x', 'z'\); it must have exactly one"):
        load_onnx(data)


def test_an_integer_input_is_refused():
    data = graph(
        [helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
        [float_input(elem=TensorProto.INT64)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )

    with pytest.raises(ArtifactError, match=r"input 'x' is a tensor\(int64\)"):
        load_onnx(data)


def test_a_fixed_batch_size_is_refused_with_the_export_option_that_fixes_it():
    with pytest.raises(ArtifactError, match="fixed batch size of 1.*dynamic_shapes"):
        load_onnx(matmul_graph(input_shape=(1, 4)))


@pytest.mark.parametrize("shape", [("batch", 2, 2), ("batch", "features"), ("batch",)])
def test_an_input_that_is_not_rows_of_fixed_width_is_refused(shape):
    data = graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        [float_input(shape=shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(shape))],
    )

    with pytest.raises(ArtifactError, match="input 'x' has shape"):
        load_onnx(data)


def test_a_graph_without_a_float_matrix_output_is_refused():
    data = graph(
        [helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0)],
        [float_input()],
        [helper.make_tensor_value_info("label", TensorProto.INT64, ["batch"])],
    )

    with pytest.raises(ArtifactError, match=r"no float output .* 'label' \(tensor\(int64\)"):
        load_onnx(data)


def test_an_output_with_one_row_per_batch_broken_is_refused_by_the_probe():
    # Sums over the batch: one row out whatever the rows in, which no predictor may do.
    data = graph(
        [helper.make_node("ReduceSum", ["x", "axes"], ["y"], keepdims=1)],
        [float_input()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array([0], dtype=np.int64), "axes")],
    )

    with pytest.raises(ArtifactError, match=r"gave shape \[1, 4\] for 2 rows"):
        load_onnx(data)


def test_an_inconsistent_graph_is_refused_when_loaded():
    # The weight takes 5 inputs but the graph's input has 4 columns.
    data = matmul_graph(n_in=5, input_shape=("batch", 4))

    with pytest.raises(ArtifactError, match="onnxruntime cannot load the graph: .*MatMul"):
        load_onnx(data)


def test_a_node_reading_an_undefined_tensor_is_refused_by_the_checker():
    data = graph(
        [helper.make_node("Add", ["x", "nowhere"], ["y"])],
        [float_input()],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )

    with pytest.raises(ArtifactError, match="not valid ONNX"):
        load_onnx(data)


def test_weights_in_an_external_file_are_refused_without_reading_it():
    model = onnx.load_model_from_string(matmul_graph())
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    weight.data_location = TensorProto.EXTERNAL
    location = weight.external_data.add()
    location.key, location.value = "location", "/etc/passwd"

    with pytest.raises(ArtifactError, match="tensor 'W' keeps its data in an external file"):
        load_onnx(model.SerializeToString())
