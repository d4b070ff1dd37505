"""V2 inference requests and responses as bytes: JSON tensors and the binary tensor extension.

Pure Python + numpy + orjson: nothing here knows HTTP or Django, so it is tested on its own.

A request body is a JSON document; with the binary tensor data extension it is a JSON document
of ``Inference-Header-Content-Length`` bytes followed by the raw data of every input whose
``parameters`` give a ``binary_data_size``, in the order of ``inputs``. Raw numbers are
little-endian; ``BYTES`` elements are each a 4-byte little-endian length and the bytes. JSON
``data`` is row-major, flat or nested. Responses follow the same rules: an output is binary
when the request asks for it (``outputs[i].parameters.binary_data``, or the request parameter
``binary_data_output`` for outputs that say nothing).
"""

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from mlplatform.jsondepth import TOO_DEEP, too_deep

BYTES = "BYTES"
DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"),
    "UINT8": np.dtype("u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}
DATATYPES = (*DTYPES, BYTES)
_NUMBERS = frozenset({int, float})
_JSON_KINDS = {str: "string", bool: "boolean", type(None): "null", dict: "object", list: "array"}
_NON_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"+Infinity", b"nan", b"inf", b"-inf")
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """A request the protocol cannot accept; the message names the problem (HTTP 400)."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class Tensor:
    """An input tensor: ``data`` has ``shape``.

    JSON numbers of float datatypes are kept as float64, exactly as sent; binary data keeps its
    datatype. ``BYTES`` data is an object array of ``bytes``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RequestedOutput:
    name: str
    binary: bool | None  # None: the request's ``binary_data_output`` decides


@dataclass(frozen=True, slots=True)
class InferenceRequest:
    id: str | None
    inputs: tuple[Tensor, ...]
    outputs: tuple[RequestedOutput, ...] | None  # None: every output
    parameters: dict

    @property
    def binary_output(self) -> bool:
        """Whether outputs that say nothing are sent as binary data."""
        return self.parameters.get("binary_data_output") is True


@dataclass(frozen=True, slots=True)
class OutputTensor:
    """An output to send: numbers as an array, ``BYTES`` as a list of strings."""

    name: str
    datatype: str
    data: np.ndarray | Sequence[str]
    binary: bool

    @property
    def shape(self) -> list[int]:
        if isinstance(self.data, np.ndarray):
            return list(self.data.shape)
        return [len(self.data)]


def decode_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    """Parse a request body; ``header_length`` is the ``Inference-Header-Content-Length``."""
    view = memoryview(body)
    if header_length is None:
        json_part, binary = view, view[len(view) :]
    else:
        size = _header_size(header_length, len(view))
        json_part, binary = view[:size], view[size:]
    document = _loads(json_part, binary_hint=header_length is None)
    if not isinstance(document, dict):
        raise ProtocolError(f"the request must be a JSON object, got {_kind(document)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id must be a string, got {_kind(request_id)}")
    parameters = _parameters(document.get("parameters"), "parameters")
    if "binary_data_output" in parameters and not isinstance(
        parameters["binary_data_output"], bool
    ):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    inputs = document.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise ProtocolError("inputs must be a non-empty array of tensors")
    tensors: list[Tensor] = []
    offset = 0
    for index, spec in enumerate(inputs):
        tensor, used = _input(
            spec, index, binary[offset:], binary_allowed=header_length is not None
        )
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise ProtocolError(
            f"the body holds {len(binary) - offset} bytes of binary data that no input claims "
            "(each binary input gives its size in parameters.binary_data_size)"
        )
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ProtocolError("each input name may appear only once")
    return InferenceRequest(
        id=request_id,
        inputs=tuple(tensors),
        outputs=_requested_outputs(document.get("outputs")),
        parameters=parameters,
    )


def encode_response(
    *,
    model_name: str,
    model_version: str,
    outputs: Sequence[OutputTensor],
    request_id: str | None = None,
    parameters: dict | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    described = []
    raw: list[bytes] = []
    for output in outputs:
        entry: dict[str, Any] = {
            "name": output.name,
            "datatype": output.datatype,
            "shape": output.shape,
        }
        if output.binary:
            data = _to_binary(output)
            entry["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        elif isinstance(output.data, np.ndarray):
            entry["data"] = np.ascontiguousarray(output.data).reshape(-1)
        else:
            entry["data"] = list(output.data)
        described.append(entry)
    document["outputs"] = described
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)


def encode_bytes(values: Sequence[str | bytes]) -> bytes:
    """``BYTES`` elements as binary data: each a 4-byte little-endian length, then the bytes."""
    parts = []
    for value in values:
        data = value.encode() if isinstance(value, str) else bytes(value)
        parts += (_LENGTH.pack(len(data)), data)
    return b"".join(parts)


def decode_bytes(data: memoryview | bytes, count: int, where: str) -> np.ndarray:
    """Split binary ``BYTES`` data into ``count`` elements; ProtocolError if it does not fit."""
    view = memoryview(data)
    items = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise ProtocolError(f"{where}: the BYTES data ends before element {i}")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise ProtocolError(f"{where}: BYTES element {i} is longer than the data left")
        items[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise ProtocolError(f"{where}: {len(view) - offset} bytes follow the last BYTES element")
    return items


def _header_size(value: str, body_size: int) -> int:
    text = value.strip()
    if not text.isdigit() or not text.isascii():
        raise ProtocolError(f"Inference-Header-Content-Length must be a number, got {value!r}")
    size = int(text)
    if size == 0 or size > body_size:
        raise ProtocolError(
            f"Inference-Header-Content-Length is {size} but the body holds {body_size} bytes"
        )
    return size


def _loads(data: memoryview, *, binary_hint: bool) -> Any:
    if not bytes(data[:1024]).strip():
        raise ProtocolError("the request body is empty; send a JSON inference request")
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        message = str(exc)
        at = bytes(data[exc.pos : exc.pos + 10]).lstrip()
        if "infinity when parsed" in message or at.startswith(_NON_FINITE_TOKENS):
            raise ProtocolError(
                "Malformed JSON: NaN, Infinity and numbers beyond the float range are not "
                f"finite numbers ({message})."
            ) from None
        hint = (
            " (a body with binary tensors needs the Inference-Header-Content-Length header)"
            if binary_hint
            else ""
        )
        raise ProtocolError(f"Malformed JSON: {message}.{hint}") from None
    if too_deep(data, value):
        raise ProtocolError(TOO_DEEP)
    return value


def _parameters(value: object, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object, got {_kind(value)}")
    for key in _SHARED_MEMORY:
        if key in value:
            raise ProtocolError(f"{where}.{key}: the shared-memory extension is not supported")
    return value


def _input(
    spec: object, index: int, binary: memoryview, *, binary_allowed: bool
) -> tuple[Tensor, int]:
    """One input tensor and how many bytes of binary data it used."""
    where = f"inputs[{index}]"
    if not isinstance(spec, dict):
        raise ProtocolError(f"{where} must be an object, got {_kind(spec)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name must be a non-empty string")
    where = f"input {name!r}"
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}"
        )
    shape = _shape(spec.get("shape"), where)
    parameters = _parameters(spec.get("parameters"), f"{where} parameters")
    size = parameters.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise ProtocolError(f"{where} has neither data nor parameters.binary_data_size")
        data = _from_json(spec["data"], datatype, shape, where)
        return Tensor(name, datatype, shape, data, parameters), 0
    if "data" in spec:
        raise ProtocolError(f"{where} has both data and parameters.binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{where}: binary_data_size must be a number of bytes")
    if not binary_allowed:
        raise ProtocolError(
            f"{where} gives binary_data_size but the request has no "
            "Inference-Header-Content-Length header saying where the binary data starts"
        )
    if size > len(binary):
        raise ProtocolError(
            f"{where}: binary_data_size is {size} bytes but only {len(binary)} bytes of "
            "binary data are left in the body (truncated?)"
        )
    data = _from_binary(binary[:size], datatype, shape, where)
    return Tensor(name, datatype, shape, data, parameters), size


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        type(d) is int and d >= 0
        for d in value  # noqa: E721 - bool is not a dimension
    ):
        raise ProtocolError(f"{where}: shape must be an array of non-negative integers")
    return tuple(value)


def _flatten(data: object, where: str) -> list:
    if type(data) is not list:
        raise ProtocolError(f"{where}: data must be an array, got {_kind(data)}")
    flat = data
    while flat and type(flat[0]) is list:
        if not all(type(item) is list for item in flat):
            raise ProtocolError(f"{where}: data mixes arrays and values at the same depth")
        if len(set(map(len, flat))) != 1:
            raise ProtocolError(f"{where}: nested data arrays must all have the same length")
        flat = list(chain.from_iterable(flat))
    return flat


def _from_json(data: object, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    flat = _flatten(data, where)
    expected = math.prod(shape)
    if len(flat) != expected:
        raise ProtocolError(
            f"{where}: shape {list(shape)} holds {expected} values but data has {len(flat)}"
        )
    if datatype == BYTES:
        for i, value in enumerate(flat):
            if type(value) is not str:
                raise ProtocolError(f"{where}.data[{i}] must be a string, got {_kind(value)}")
        items = np.empty(len(flat), dtype=object)
        items[:] = [value.encode() for value in flat]
        return items.reshape(shape)
    dtype = DTYPES[datatype]
    if datatype == "BOOL":
        _check_types(flat, {bool}, "true or false", where)
        return np.array(flat, dtype=dtype).reshape(shape)
    if dtype.kind in "iu":
        _check_types(flat, {int}, "an integer", where)
        info = np.iinfo(dtype)
        for i, value in enumerate(flat):
            if not info.min <= value <= info.max:
                raise ProtocolError(f"{where}.data[{i}] is out of range for {datatype}")
        return np.array(flat, dtype=dtype).reshape(shape)
    _check_types(flat, _NUMBERS, "a number", where)
    try:
        return np.array(flat, dtype=np.float64).reshape(shape)
    except OverflowError:  # an integer too large for a float
        for i, value in enumerate(flat):
            try:
                float(value)
            except OverflowError:
                raise ProtocolError(f"{where}.data[{i}] is not a finite number") from None
        raise


def _check_types(flat: list, allowed: set, what: str, where: str) -> None:
    if set(map(type, flat)) <= allowed:
        return
    for i, value in enumerate(flat):
        if type(value) not in allowed:
            raise ProtocolError(f"{where}.data[{i}] must be {what}, got {_kind(value)}")


def _from_binary(raw: memoryview, datatype: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == BYTES:
        return decode_bytes(raw, count, where).reshape(shape)
    dtype = DTYPES[datatype]
    needed = count * dtype.itemsize
    if len(raw) != needed:
        raise ProtocolError(
            f"{where}: binary_data_size is {len(raw)} bytes but shape {list(shape)} of "
            f"{datatype} takes {needed}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def _requested_outputs(value: object) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError(f"outputs must be an array, got {_kind(value)}")
    requested = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a name")
        parameters = _parameters(spec.get("parameters"), f"output {spec['name']!r} parameters")
        if parameters.get("classification"):
            raise ProtocolError(
                "the classification extension is not supported: the label and confidence "
                "outputs give the top class"
            )
        binary = parameters.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(
                f"output {spec['name']!r}: parameters.binary_data must be true or false"
            )
        requested.append(RequestedOutput(spec["name"], binary))
    names = [r.name for r in requested]
    if len(set(names)) != len(names):
        raise ProtocolError("each output name may be requested only once")
    return tuple(requested)


def _to_binary(output: OutputTensor) -> bytes:
    if output.datatype == BYTES:
        return encode_bytes(output.data)
    dtype = DTYPES[output.datatype]
    return np.ascontiguousarray(output.data, dtype=dtype).tobytes()


def _kind(value: object) -> str:
    """Name a value's type as a JSON client would know it."""
    for kind, name in _JSON_KINDS.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, int | float):
        return "number"
    return type(value).__name__
