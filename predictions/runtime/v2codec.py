"""Open Inference Protocol (V2) tensors as bytes: JSON data and the binary tensor data extension.

Both ends of the protocol use it: the platform's V2 endpoints (``predictions.v2``) read requests
and write responses, the client of a remote model's server (``predictions.runtime.remote``)
writes requests and reads responses.

A message is a JSON document; with the binary tensor data extension it is a JSON document of
``Inference-Header-Content-Length`` bytes followed by the raw data of every tensor whose
``parameters`` give a ``binary_data_size``, in the order of the tensors. Raw numbers are
little-endian; ``BYTES`` elements are each a 4-byte little-endian length and the bytes. JSON
``data`` is row-major, flat or nested.
"""

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import numpy as np
import orjson

from predictions.runtime.inputs import json_kind

HEADER_LENGTH = "Inference-Header-Content-Length"
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
_SHARED_MEMORY = ("shared_memory_region", "shared_memory_byte_size", "shared_memory_offset")
_LENGTH = struct.Struct("<I")


class ProtocolError(ValueError):
    """A message the protocol cannot accept; the message names the problem (HTTP 400)."""

    status_code = 400


@dataclass(frozen=True, slots=True)
class Tensor:
    """A tensor read from a message: ``data`` has ``shape``.

    JSON numbers of float datatypes are kept as float64, exactly as sent; binary data keeps its
    datatype. ``BYTES`` data is an object array of ``bytes``.
    """

    name: str
    datatype: str
    shape: tuple[int, ...]
    data: np.ndarray
    parameters: dict = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutgoingTensor:
    """A tensor to send (a response's output, a request's input): numbers as an array,
    ``BYTES`` as a list of strings; ``binary`` sends it as binary data."""

    name: str
    datatype: str
    data: np.ndarray | Sequence[str]
    binary: bool

    @property
    def shape(self) -> list[int]:
        if isinstance(self.data, np.ndarray):
            return list(self.data.shape)
        return [len(self.data)]


def split_body(body: bytes, header_length: str | None) -> tuple[memoryview, memoryview]:
    """A message's JSON document and the binary data after it, as
    ``Inference-Header-Content-Length`` (``header_length``) divides them."""
    view = memoryview(body)
    if header_length is None:
        return view, view[len(view) :]
    text = header_length.strip()
    if not text.isdigit() or not text.isascii():
        raise ProtocolError(f"{HEADER_LENGTH} must be a number, got {header_length!r}")
    size = int(text)
    if size == 0 or size > len(view):
        raise ProtocolError(f"{HEADER_LENGTH} is {size} but the body holds {len(view)} bytes")
    return view[:size], view[size:]


def join_body(document: dict[str, Any], raw: Sequence[bytes]) -> tuple[bytes, int | None]:
    """A message's body, and its JSON document's length when binary data follows it."""
    header = orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)
    if not raw:
        return header, None
    return b"".join([header, *raw]), len(header)


def encode_tensors(tensors: Sequence[OutgoingTensor]) -> tuple[list[dict[str, Any]], list[bytes]]:
    """The JSON entries of ``tensors``, and the binary data of those sent as binary, in order."""
    entries = []
    raw: list[bytes] = []
    for tensor in tensors:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if tensor.binary:
            data = _to_binary(tensor)
            entry["parameters"] = {"binary_data_size": len(data)}
            raw.append(data)
        elif isinstance(tensor.data, np.ndarray):
            entry["data"] = np.ascontiguousarray(tensor.data).reshape(-1)
        else:
            entry["data"] = list(tensor.data)
        entries.append(entry)
    return entries, raw


def encode_response(
    *,
    model_name: str,
    model_version: str,
    outputs: Sequence[OutgoingTensor],
    request_id: str | None = None,
    parameters: dict | None = None,
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    document: dict[str, Any] = {"model_name": model_name, "model_version": model_version}
    if request_id is not None:
        document["id"] = request_id
    if parameters:
        document["parameters"] = parameters
    document["outputs"], raw = encode_tensors(outputs)
    return join_body(document, raw)


def decode_response(body: bytes, header_length: str | None = None) -> tuple[Tensor, ...]:
    """The output tensors of a response body; ``header_length`` is its
    ``Inference-Header-Content-Length``."""
    json_part, binary = split_body(body, header_length)
    try:
        document = orjson.loads(json_part)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(f"Malformed JSON: {exc}.") from None
    if not isinstance(document, dict):
        raise ProtocolError(f"the response must be a JSON object, got {json_kind(document)}")
    return decode_tensors(document.get("outputs"), binary, kind="output", binary_allowed=True)


def decode_tensors(
    specs: object, binary: memoryview, *, kind: str, binary_allowed: bool
) -> tuple[Tensor, ...]:
    """The tensors a message lists as its ``inputs`` or ``outputs`` (``kind``: input, output),
    binary ones read from ``binary`` in turn; ``binary_allowed`` is False when the message has no
    ``Inference-Header-Content-Length``."""
    if not isinstance(specs, list) or not specs:
        raise ProtocolError(f"{kind}s must be a non-empty array of tensors")
    tensors: list[Tensor] = []
    offset = 0
    for index, spec in enumerate(specs):
        tensor, used = _tensor(
            spec, f"{kind}s[{index}]", kind, binary[offset:], binary_allowed=binary_allowed
        )
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise ProtocolError(
            f"the body holds {len(binary) - offset} bytes of binary data that no {kind} claims "
            f"(each binary {kind} gives its size in parameters.binary_data_size)"
        )
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise ProtocolError(f"each {kind} name may appear only once")
    return tuple(tensors)


def parameters(value: object, where: str) -> dict:
    """A ``parameters`` object (none: empty); the shared-memory extension is refused."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"{where} must be an object, got {json_kind(value)}")
    for key in _SHARED_MEMORY:
        if key in value:
            raise ProtocolError(f"{where}.{key}: the shared-memory extension is not supported")
    return value


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


def _tensor(
    spec: object, where: str, kind: str, binary: memoryview, *, binary_allowed: bool
) -> tuple[Tensor, int]:
    """One tensor and how many bytes of binary data it used."""
    if not isinstance(spec, dict):
        raise ProtocolError(f"{where} must be an object, got {json_kind(spec)}")
    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise ProtocolError(f"{where}.name must be a non-empty string")
    where = f"{kind} {name!r}"
    datatype = spec.get("datatype")
    if datatype not in DATATYPES:
        raise ProtocolError(
            f"{where}: datatype must be one of {', '.join(DATATYPES)}, got {datatype!r}"
        )
    shape = _shape(spec.get("shape"), where)
    given = parameters(spec.get("parameters"), f"{where} parameters")
    size = given.get("binary_data_size")
    if size is None:
        if "data" not in spec:
            raise ProtocolError(f"{where} has neither data nor parameters.binary_data_size")
        data = _from_json(spec["data"], datatype, shape, where)
        return Tensor(name, datatype, shape, data, given), 0
    if "data" in spec:
        raise ProtocolError(f"{where} has both data and parameters.binary_data_size")
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{where}: binary_data_size must be a number of bytes")
    if not binary_allowed:
        raise ProtocolError(
            f"{where} gives binary_data_size but the request has no "
            f"{HEADER_LENGTH} header saying where the binary data starts"
        )
    if size > len(binary):
        raise ProtocolError(
            f"{where}: binary_data_size is {size} bytes but only {len(binary)} bytes of "
            "binary data are left in the body (truncated?)"
        )
    data = _from_binary(binary[:size], datatype, shape, where)
    return Tensor(name, datatype, shape, data, given), size


def _shape(value: object, where: str) -> tuple[int, ...]:
    if not isinstance(value, list) or not all(
        type(d) is int and d >= 0
        for d in value  # noqa: E721 - bool is not a dimension
    ):
        raise ProtocolError(f"{where}: shape must be an array of non-negative integers")
    return tuple(value)


def _flatten(data: object, where: str) -> list:
    if type(data) is not list:
        raise ProtocolError(f"{where}: data must be an array, got {json_kind(data)}")
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
                raise ProtocolError(f"{where}.data[{i}] must be a string, got {json_kind(value)}")
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
            raise ProtocolError(f"{where}.data[{i}] must be {what}, got {json_kind(value)}")


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


def _to_binary(tensor: OutgoingTensor) -> bytes:
    if tensor.datatype == BYTES:
        return encode_bytes(tensor.data)
    dtype = DTYPES[tensor.datatype]
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()
