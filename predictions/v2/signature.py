"""A model as the V2 protocol sees it: its tensors, and request tensors turned into feature rows.

Every model takes one input, ``input``: FP32 of shape ``[-1, n_features]`` (any real datatype
is accepted and converted to float32). It gives ``prediction`` (FP32 ``[-1, n_outputs]``: class
probabilities or regression values, as ``prediction`` in the REST API), for classifiers
``label`` (BYTES ``[-1]``) and ``confidence`` (FP32 ``[-1]``), and ``prediction_id`` (BYTES
``[-1]``: the id of each row's stored prediction, for ``GET /api/v1/predict/{id}`` and feedback).
The checks and messages are those of ``POST /api/v1/predict``, with the tensor named instead of
``input_data``.
"""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from predictions.runtime.v2codec import BYTES, OutgoingTensor, ProtocolError
from predictions.v2.codec import InferenceRequest, RequestedOutput

INPUT = "input"
PREDICTION, LABEL, CONFIDENCE, PREDICTION_ID = "prediction", "label", "confidence", "prediction_id"
# Real datatypes are converted to float32; BOOL and BYTES are refused, as the REST API refuses
# booleans and strings.
ACCEPTED_DATATYPES = (
    "FP32",
    "FP64",
    "FP16",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
)
PLATFORMS = {"numpy": "mlplatform_numpy", "onnx": "onnxruntime_onnx", "ensemble": "ensemble"}


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    shape: tuple[int, ...]

    def as_dict(self) -> dict:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


@dataclass(frozen=True, slots=True)
class Signature:
    """The tensors of one model version."""

    model_name: str
    n_features: int
    n_outputs: int
    classifier: bool

    @property
    def inputs(self) -> list[TensorSpec]:
        return [TensorSpec(INPUT, "FP32", (-1, self.n_features))]

    @property
    def outputs(self) -> list[TensorSpec]:
        specs = [TensorSpec(PREDICTION, "FP32", (-1, self.n_outputs))]
        if self.classifier:
            specs += [TensorSpec(LABEL, BYTES, (-1,)), TensorSpec(CONFIDENCE, "FP32", (-1,))]
        return [*specs, TensorSpec(PREDICTION_ID, BYTES, (-1,))]

    def describe_input(self) -> str:
        return f"one input {INPUT!r} (FP32, shape [-1, {self.n_features}])"


def feature_rows(
    request: InferenceRequest, signature: Signature, *, max_rows: int
) -> tuple[np.ndarray, np.ndarray]:
    """The float32 rows (n_rows, n_features) to predict, and the input as sent (to store)."""
    if len(request.inputs) != 1:
        names = ", ".join(repr(t.name) for t in request.inputs)
        raise ProtocolError(
            f"model {signature.model_name!r} takes {signature.describe_input()}; "
            f"got {len(request.inputs)} inputs ({names})"
        )
    (tensor,) = request.inputs
    where = f"input {tensor.name!r}"
    if tensor.name != INPUT:
        raise ProtocolError(
            f"unknown input {tensor.name!r}; model {signature.model_name!r} takes "
            f"{signature.describe_input()}"
        )
    if tensor.datatype not in ACCEPTED_DATATYPES:
        raise ProtocolError(
            f"{where}: datatype {tensor.datatype} is not accepted; send FP32 "
            "(FP64, FP16, INT8-INT64 and UINT8-UINT64 are converted to FP32)"
        )
    n_features = signature.n_features
    if len(tensor.shape) != 2:
        raise ProtocolError(
            f"{where} has shape {list(tensor.shape)}; it must be [rows, {n_features}]"
        )
    n_rows, width = tensor.shape
    if n_rows == 0:
        raise ProtocolError(f"{where} must not be empty (shape {list(tensor.shape)})")
    if width != n_features:
        raise ProtocolError(f"{where}: expected {n_features} features, got {width}")
    if n_rows > max_rows:
        raise ProtocolError(
            f"{where} has {n_rows} rows; at most {max_rows} are allowed in one request "
            "(send more as a batch job: POST /api/v1/predict/batch)"
        )
    sent = tensor.data
    with np.errstate(over="ignore", invalid="ignore"):
        rows = np.asarray(sent, dtype=np.float32)
    finite = np.isfinite(rows)
    if not finite.all():
        row, column = np.argwhere(~finite)[0].tolist()
        raise ProtocolError(f"{where}[{row}][{column}] is not a finite number")
    return rows, sent


def selected_outputs(request: InferenceRequest, signature: Signature) -> list[RequestedOutput]:
    """The outputs to send, in order, each with whether it is binary."""
    names = [spec.name for spec in signature.outputs]
    if request.outputs is None:
        return [RequestedOutput(name, request.binary_output) for name in names]
    selected = []
    for wanted in request.outputs:
        if wanted.name not in names:
            raise ProtocolError(
                f"unknown output {wanted.name!r}; model {signature.model_name!r} gives "
                f"{', '.join(names)}"
            )
        binary = request.binary_output if wanted.binary is None else wanted.binary
        selected.append(RequestedOutput(wanted.name, binary))
    return selected


def output_tensors(
    selected: Sequence[RequestedOutput],
    *,
    outputs: np.ndarray,
    labels: Sequence[str | None],
    prediction_ids: Sequence[str],
) -> list[OutgoingTensor]:
    """The selected outputs of a prediction: model outputs, top labels and stored ids."""
    tensors = []
    for wanted in selected:
        if wanted.name == PREDICTION:
            tensor = OutgoingTensor(PREDICTION, "FP32", outputs, wanted.binary)
        elif wanted.name == LABEL:
            tensor = OutgoingTensor(LABEL, BYTES, labels, wanted.binary)
        elif wanted.name == CONFIDENCE:
            confidence = outputs.max(axis=1) if outputs.shape[0] else outputs[:, 0]
            tensor = OutgoingTensor(CONFIDENCE, "FP32", confidence, wanted.binary)
        else:
            tensor = OutgoingTensor(PREDICTION_ID, BYTES, prediction_ids, wanted.binary)
        tensors.append(tensor)
    return tensors


def timeout_seconds(parameters: dict, *, limit: float) -> float | None:
    """The request's ``timeout`` parameter (microseconds, as Triton reads it) in seconds."""
    value = parameters.get("timeout")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise ProtocolError("parameters.timeout must be a positive number of microseconds")
    seconds = value / 1_000_000
    if seconds > limit:
        raise ProtocolError(
            f"parameters.timeout: Ensure this value is at most {limit:g} seconds "
            f"({limit * 1_000_000:.0f} microseconds)."
        )
    return seconds
