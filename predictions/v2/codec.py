"""V2 inference requests as the platform's endpoints read them: what a request asks for, and the
limits of this server (JSON depth, no shared memory, no classification extension).

The tensors themselves, JSON or binary, and the responses are `predictions.runtime.v2codec`'s.
An output is binary when the request asks for it (``outputs[i].parameters.binary_data``, or the
request parameter ``binary_data_output`` for outputs that say nothing).
"""

from dataclasses import dataclass
from typing import Any

import orjson

from mlplatform.jsondepth import TOO_DEEP, too_deep
from predictions.runtime.inputs import json_kind
from predictions.runtime.v2codec import (
    ProtocolError,
    Tensor,
    decode_tensors,
    parameters,
    split_body,
)

_NON_FINITE_TOKENS = (b"NaN", b"Infinity", b"-Infinity", b"+Infinity", b"nan", b"inf", b"-inf")


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


def decode_request(body: bytes, header_length: str | None = None) -> InferenceRequest:
    """Parse a request body; ``header_length`` is the ``Inference-Header-Content-Length``."""
    json_part, binary = split_body(body, header_length)
    document = _loads(json_part, binary_hint=header_length is None)
    if not isinstance(document, dict):
        raise ProtocolError(f"the request must be a JSON object, got {json_kind(document)}")
    request_id = document.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"id must be a string, got {json_kind(request_id)}")
    given = parameters(document.get("parameters"), "parameters")
    if "binary_data_output" in given and not isinstance(given["binary_data_output"], bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    inputs = decode_tensors(
        document.get("inputs"), binary, kind="input", binary_allowed=header_length is not None
    )
    return InferenceRequest(
        id=request_id,
        inputs=inputs,
        outputs=_requested_outputs(document.get("outputs")),
        parameters=given,
    )


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


def _requested_outputs(value: object) -> tuple[RequestedOutput, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError(f"outputs must be an array, got {json_kind(value)}")
    requested = []
    for index, spec in enumerate(value):
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise ProtocolError(f"outputs[{index}] must be an object with a name")
        given = parameters(spec.get("parameters"), f"output {spec['name']!r} parameters")
        if given.get("classification"):
            raise ProtocolError(
                "the classification extension is not supported: the label and confidence "
                "outputs give the top class"
            )
        binary = given.get("binary_data")
        if binary is not None and not isinstance(binary, bool):
            raise ProtocolError(
                f"output {spec['name']!r}: parameters.binary_data must be true or false"
            )
        requested.append(RequestedOutput(spec["name"], binary))
    names = [r.name for r in requested]
    if len(set(names)) != len(names):
        raise ProtocolError("each output name may be requested only once")
    return tuple(requested)
