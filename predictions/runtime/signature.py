"""What an artifact says about itself: runtime, feature count and names, outputs, task.

An uploaded file is read only as ONNX (protobuf) or as the `mlplatform.dense/1` `.npz` format
(`artifacts.py`, which never unpickles): nothing here runs code a file brings.

- Feature names: an ONNX file may carry them as the model property `feature_names` (a JSON list
  or comma-separated names: `onnx.helper.set_model_props(model, {"feature_names": "a,b"})`);
  converters rarely write any, and a `.npz` has none.
- Class labels: ONNX-ML classifiers (what skl2onnx, onnxmltools write) keep them in the
  `classlabels_strings` / `classlabels_int64s` attribute of their classifier node.
- Task guess: a classifier when the answer is a probability vector: the output is named like
  `probabilities`, comes out of a Softmax, sits beside a label output, or the file has class
  labels; a dense network ending in `softmax`; else a regressor.
"""

import json
from dataclasses import dataclass

from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import Predictor, load_predictor
from predictions.runtime.sources import Source, source_head

ONNX, NUMPY = "onnx", "numpy"
_CLASS_LABEL_ATTRIBUTES = ("classlabels_strings", "classlabels_int64s", "classlabels_ints")


@dataclass(frozen=True, slots=True)
class ArtifactSignature:
    runtime: str
    n_features: int
    n_outputs: int
    feature_names: tuple[str, ...] | None = None
    class_labels: tuple[str, ...] | None = None
    probabilities: bool = False

    @property
    def task_guess(self) -> str:
        return "classification" if self.probabilities or self.class_labels else "regression"


def runtime_for(source: Source, filename: str = "") -> str:
    """The runtime of a file: from its suffix, else from its first bytes (a zip is a `.npz`)."""
    name = filename.lower()
    if name.endswith(".onnx"):
        return ONNX
    if name.endswith(".npz"):
        return NUMPY
    if name.endswith(".json"):
        return "ensemble"
    if source_head(source, 2) == b"PK":
        return NUMPY
    if name and "." in name.rsplit("/", 1)[-1]:
        raise ArtifactError(
            f"cannot tell the format of {filename!r}: send an .onnx graph or an .npz dense network"
        )
    return ONNX


def read_signature(runtime: str, source: Source) -> tuple[Predictor, ArtifactSignature]:
    """Load and check an artifact; return its predictor and what it says about itself."""
    # An ONNX file's details are read before its session is made: a large graph is then parsed
    # while no session holds its weights.
    facts = _onnx_facts(source) if runtime == ONNX else None
    predictor = load_predictor(runtime, source)
    if facts is not None:
        extra = facts.details(output_name=predictor.output_name)
    elif runtime == NUMPY:
        extra = {"probabilities": predictor.activations[-1] == "softmax"}
    else:
        extra = {}
    names = extra.pop("feature_names", None)
    if names is not None and len(names) != predictor.n_inputs:
        names = None  # metadata that disagrees with the graph says nothing reliable
    labels = extra.pop("class_labels", None)
    if labels is not None and len(labels) != predictor.n_outputs:
        labels = None
    signature = ArtifactSignature(
        runtime=runtime,
        n_features=predictor.n_inputs,
        n_outputs=predictor.n_outputs,
        feature_names=names,
        class_labels=labels,
        **extra,
    )
    return predictor, signature


@dataclass(frozen=True, slots=True)
class _OnnxFacts:
    """What an ONNX graph says about itself, apart from which output answers."""

    feature_names: tuple[str, ...] | None
    class_labels: tuple[str, ...] | None
    producers: dict[str, str]  # output name -> op type of the node that makes it
    label_outputs: frozenset[str]  # outputs of a classifier's label type

    def details(self, *, output_name: str) -> dict:
        details: dict = {}
        if self.feature_names is not None:
            details["feature_names"] = self.feature_names
        if self.class_labels is not None:
            details["class_labels"] = self.class_labels
        details["probabilities"] = bool(
            "prob" in output_name.lower()
            or self.producers.get(output_name) == "Softmax"
            or self.label_outputs - {output_name}
        )
        return details


def _onnx_facts(source: Source) -> _OnnxFacts:
    # Imported here: only the onnx runtime needs it, and it loads slowly.
    from predictions.runtime.onnx import parse_model

    model = parse_model(source)
    props = {p.key: p.value for p in model.metadata_props}
    raw = props.get("feature_names", "").strip()
    class_labels = None
    graph = model.graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.name in _CLASS_LABEL_ATTRIBUTES:
                values = attribute.strings or attribute.ints
                class_labels = tuple(v.decode() if isinstance(v, bytes) else str(v) for v in values)
                break
        if class_labels is not None:
            break
    outputs = {o.name for o in graph.output}
    producers: dict[str, str] = {}
    for node in graph.node:
        for name in node.output:
            if name in outputs:
                producers.setdefault(name, node.op_type)
    return _OnnxFacts(
        feature_names=_names(raw) if raw else None,
        class_labels=class_labels,
        producers=producers,
        label_outputs=frozenset(
            o.name for o in graph.output if o.type.tensor_type.elem_type in _LABEL_TYPES
        ),
    )


# onnx.TensorProto.INT64 and STRING: the element types of a classifier's `label` output.
_LABEL_TYPES = (7, 8)


def _names(raw: str) -> tuple[str, ...] | None:
    try:
        value = json.loads(raw)
    except ValueError:
        value = [part.strip() for part in raw.split(",")]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        return None
    if len(set(value)) != len(value):
        return None
    return tuple(value)
