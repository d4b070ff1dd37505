"""The `onnx` runtime: ONNX graphs run by onnxruntime on the CPU; dense networks exported to it.

What a graph must look like
---------------------------
- exactly one input: a `float` (or `double`) tensor of shape `[batch, n_features]`, where the
  batch dimension is dynamic (a name or unknown, not a fixed number) and `n_features` is fixed;
- at least one output that is a `float` (or `double`) tensor of shape `[batch, n_outputs]`:
  the first such output is the model's answer (class probabilities in label order for a
  classifier, the values for a regressor); other outputs (e.g. skl2onnx's `label`) are not
  computed;
- all weights inside the file: a graph that points at external data files is refused, so an
  upload can never make the server read a file of its own.

The graph is checked with `onnx.checker`, loaded with onnxruntime's CPU provider and run once on
two rows of zeros when it is loaded, so a graph that cannot run is refused at upload with a
message, never at request time. Each session uses `INTRA_OP_THREADS` threads (one: web servers
run several request threads per process and the platform keeps one BLAS thread per thread).
"""

import os
from collections.abc import Iterator

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from predictions.runtime.dense import DenseNetwork
from predictions.runtime.errors import ArtifactError
from predictions.runtime.sources import Source, is_path, source_head, source_size

INTRA_OP_THREADS = 1
# What `dense_to_onnx` writes: opset 17 (Softmax over the last axis) and the IR version that goes
# with it, which every onnxruntime since 1.13 reads.
OPSET = 17
IR_VERSION = 8
INPUT_NAME = "input"
OUTPUT_NAME = "output"
_FLOAT_TYPES = {"tensor(float)": np.dtype(np.float32), "tensor(double)": np.dtype(np.float64)}
_ACTIVATION_OPS = {"relu": "Relu", "tanh": "Tanh", "sigmoid": "Sigmoid", "softmax": "Softmax"}


class OnnxNetwork:
    """An onnxruntime session with one float input [batch, n_inputs] and output [batch, n]."""

    __slots__ = ("n_inputs", "n_outputs", "input_name", "output_name", "_dtype", "_session")

    def __init__(self, session: ort.InferenceSession, *, input_name: str, output_name: str):
        self._session = session
        self.input_name = input_name
        self.output_name = output_name
        (node,) = (i for i in session.get_inputs() if i.name == input_name)
        self._dtype = _FLOAT_TYPES[node.type]
        self.n_inputs = int(node.shape[1])
        probe = self._run(np.zeros((2, self.n_inputs), dtype=self._dtype), "two rows of zeros")
        if probe.ndim != 2 or probe.shape[0] != 2 or probe.shape[1] < 1:
            raise ArtifactError(
                f"output {output_name!r} gave shape {list(probe.shape)} for 2 rows; "
                "it must be [batch, n_outputs] with one row per input row"
            )
        self.n_outputs = int(probe.shape[1])

    def _run(self, X: np.ndarray, what: str) -> np.ndarray:
        try:
            (outputs,) = self._session.run([self.output_name], {self.input_name: X})
        except Exception as exc:  # onnxruntime raises its own types for every failure
            raise ArtifactError(f"running the graph on {what} failed: {exc}") from None
        return np.asarray(outputs)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return the outputs for each row of `X` (n_rows, n_inputs) as float32 (n_rows, n)."""
        X = np.ascontiguousarray(X, dtype=self._dtype)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"expected an array of shape (n_rows, {self.n_inputs}), got {X.shape}")
        (outputs,) = self._session.run([self.output_name], {self.input_name: X})
        return np.asarray(outputs, dtype=np.float32)


def session_options(intra_op_threads: int = INTRA_OP_THREADS) -> ort.SessionOptions:
    """Sequential execution on `intra_op_threads` threads, without spinning idle threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: warnings about unused initializers are noise
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return options


def load_onnx(source: Source, *, intra_op_threads: int = INTRA_OP_THREADS) -> OnnxNetwork:
    """Parse, check and load an ONNX graph (bytes or a file); raise ArtifactError saying what
    does not fit."""
    if not is_path(source):
        source = bytes(source)  # a memoryview would not do for onnx or onnxruntime
    if not source_size(source):
        raise ArtifactError("not an ONNX model: the artifact is empty")
    if source_head(source, 2) == b"PK":
        raise ArtifactError(
            "not an ONNX model: this is a zip archive (a .npz dense network belongs to the "
            "numpy runtime)"
        )
    model = parse_model(source)
    if not model.graph.node:
        raise ArtifactError("not an ONNX model: it has no graph nodes")
    for name in _external_tensors(model.graph):
        raise ArtifactError(
            f"tensor {name!r} keeps its data in an external file; save the model as one file "
            "(onnx.save_model(model, path, save_as_external_data=False))"
        )
    if is_path(source):
        # The checker and the session read the file themselves: the parsed copy need not stay,
        # nor be serialised again for the checker.
        del model
        model = os.fspath(source)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx.checker.ValidationError, or a C++ error for odd graphs
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"the graph is not valid ONNX: {first_line}") from None
    del model
    try:
        session = ort.InferenceSession(
            str(source) if is_path(source) else source,
            sess_options=session_options(intra_op_threads),
            providers=["CPUExecutionProvider"],
        )
    except Exception as exc:  # onnxruntime's Fail, InvalidGraph, NotImplemented, ...
        raise ArtifactError(f"onnxruntime cannot load the graph: {exc}") from None
    input_name = _checked_input(session)
    output_name = _chosen_output(session)
    return OnnxNetwork(session, input_name=input_name, output_name=output_name)


def parse_model(source: Source) -> onnx.ModelProto:
    """The graph of an artifact, without reading any external data file it names."""
    try:
        if is_path(source):
            return onnx.load_model(os.fspath(source), load_external_data=False)
        return onnx.load_model_from_string(bytes(source))
    except Exception as exc:  # protobuf raises DecodeError and others for foreign bytes
        raise ArtifactError(f"not an ONNX model: the bytes do not parse ({exc})") from None


def _external_tensors(graph: onnx.GraphProto) -> Iterator[str]:
    """Names of tensors (initializers and constants, subgraphs too) stored in external files."""
    tensors = list(graph.initializer)
    tensors += [sparse.values for sparse in graph.sparse_initializer]
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("t"):
                tensors.append(attribute.t)
            tensors.extend(attribute.tensors)
            if attribute.HasField("g"):
                yield from _external_tensors(attribute.g)
            for subgraph in attribute.graphs:
                yield from _external_tensors(subgraph)
    for tensor in tensors:
        if tensor.data_location == TensorProto.EXTERNAL or tensor.external_data:
            yield tensor.name or "(unnamed)"


def _checked_input(session: ort.InferenceSession) -> str:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(repr(i.name) for i in inputs)
        raise ArtifactError(
            f"the graph has {len(inputs)} inputs ({names}); it must have exactly one, "
            "a float tensor [batch, n_features]"
        )
    (node,) = inputs
    if node.type not in _FLOAT_TYPES:
        raise ArtifactError(
            f"input {node.name!r} is a {node.type}; it must be a float tensor [batch, n_features]"
        )
    shape = list(node.shape)
    if len(shape) != 2:
        raise ArtifactError(
            f"input {node.name!r} has shape {_show(shape)}; it must be [batch, n_features]"
        )
    batch, features = shape
    if isinstance(batch, int):
        raise ArtifactError(
            f"input {node.name!r} has a fixed batch size of {batch}; export it with a dynamic "
            "first dimension (torch.onnx.export(..., dynamic_shapes=({0: 'batch'},)), "
            "or skl2onnx's initial_types=[('input', FloatTensorType([None, n_features]))])"
        )
    if not isinstance(features, int) or features < 1:
        raise ArtifactError(
            f"input {node.name!r} has shape {_show(shape)}; its number of features (the second "
            "dimension) must be a fixed positive number"
        )
    return node.name


def _chosen_output(session: ort.InferenceSession) -> str:
    outputs = session.get_outputs()
    for node in outputs:
        if node.type in _FLOAT_TYPES and len(node.shape) == 2:
            return node.name
    found = ", ".join(f"{o.name!r} ({o.type}, shape {_show(list(o.shape))})" for o in outputs)
    hint = ""
    if any(o.type.startswith("seq(map") for o in outputs):
        hint = (
            "; skl2onnx writes class probabilities as a list of maps unless the classifier is "
            "converted with options={id(model): {'zipmap': False}}"
        )
    raise ArtifactError(
        f"the graph has no float output of shape [batch, n_outputs]; it has {found}{hint}"
    )


def _show(shape: list) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def dense_to_onnx(network: DenseNetwork) -> bytes:
    """Write a dense network as an ONNX graph computing the same function (float32).

    The graph follows the `mlplatform.dense/1` formula step by step: Sub (input_mean), Div
    (input_scale), then MatMul, Add and the activation per layer, with input `input`
    [batch, n_inputs] and output `output` [batch, n_outputs]. The bytes depend only on the
    network.
    """
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    current = INPUT_NAME

    def step(op: str, *operands: str, name: str, **attributes) -> None:
        nonlocal current
        nodes.append(helper.make_node(op, [current, *operands], [name], name=name, **attributes))
        current = name

    def constant(name: str, value: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    if network.input_mean is not None:
        step("Sub", constant("input_mean", network.input_mean), name="centred")
    if network.input_scale is not None:
        step("Div", constant("input_scale", network.input_scale), name="scaled")
    last = len(network.weights) - 1
    for i, (weight, bias, activation) in enumerate(
        zip(network.weights, network.biases, network.activations, strict=True)
    ):
        step("MatMul", constant(f"W{i}", weight), name=f"matmul{i}")
        op = _ACTIVATION_OPS.get(activation)
        step("Add", constant(f"b{i}", bias), name=f"layer{i}" if op or i < last else OUTPUT_NAME)
        if op is not None:
            attributes = {"axis": -1} if op == "Softmax" else {}
            step(op, name=OUTPUT_NAME if i == last else f"{activation}{i}", **attributes)
    graph = helper.make_graph(
        nodes,
        "mlplatform_dense",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", network.n_inputs])],
        [
            helper.make_tensor_value_info(
                OUTPUT_NAME, TensorProto.FLOAT, ["batch", network.n_outputs]
            )
        ],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        producer_name="mlplatform",
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
    )
    onnx.checker.check_model(model)
    return model.SerializeToString(deterministic=True)
