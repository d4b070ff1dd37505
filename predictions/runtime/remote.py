"""The `remote` runtime: a model served by an Open Inference Protocol (V2) server over HTTP.

Triton, KServe and MLServer all answer the V2 REST protocol: ``POST /v2/models/{name}[/versions/
{version}]/infer`` with input tensors, ``GET`` of the same path for the model's metadata and of
``.../ready`` for its readiness. A `RemotePredictor` has the interface of the local predictors
(rows in, one row of outputs per row out), so batching, ensembles, deadlines and the finiteness
check apply to it as to any version.

- Rows go as one FP32 (or FP64) tensor ``[n_rows, n_features]``; the answer is one numeric output
  tensor ``[n_rows]`` or ``[n_rows, n_outputs]``. Requests of at most ``JSON_MAX_VALUES`` numbers
  are JSON; larger ones (batch chunks) use the binary tensor data extension
  (``Inference-Header-Content-Length``) when the server lists ``binary_tensor_data`` among its
  extensions, else JSON.
- One pool of keep-alive connections per upstream; each request may take ``timeout`` seconds.
  Errors before a request is sent (refused, reset, no route) are retried up to ``CONNECT_RETRIES``
  times; nothing is retried once a request was sent, so an upstream is never asked twice.
- Failures raise `UpstreamError` (the platform answers 502) or `UpstreamTimeout` (504), whose
  message names the upstream (base URL, model, version) and never holds the credential.
"""

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import numpy as np
import orjson
import urllib3
from urllib3.exceptions import (
    HTTPError,
    MaxRetryError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from predictions.runtime import v2codec
from predictions.runtime.errors import UpstreamError, UpstreamTimeout
from predictions.runtime.v2codec import DTYPES, HEADER_LENGTH, OutgoingTensor

CONNECT_RETRIES = 2
JSON_MAX_VALUES = 4096
POOL_SIZE = 8
BINARY_EXTENSION = "binary_tensor_data"
INPUT_DATATYPES = {"FP32": DTYPES["FP32"], "FP64": DTYPES["FP64"]}
OUTPUT_DATATYPES = frozenset(DTYPES) - {"BOOL"}
# Output names that hold class probabilities, as Triton (skl2onnx graphs), MLServer (scikit-learn)
# and KServe name them; a classifier's registration prefers them over a label output.
PROBABILITY_NAMES = ("probabilities", "predict_proba", "output_probability", "probability")
_ERROR_TEXT = 300


@dataclass(frozen=True, slots=True)
class RemoteTarget:
    """Where a model is served: a V2 server's base URL, the model's name there, its version."""

    url: str
    model: str
    version: str = ""
    timeout: float = 10.0
    credential: str = field(default="", repr=False)
    credential_header: str = "Authorization"

    def __post_init__(self) -> None:
        problem = url_problem(self.url)
        if problem:
            raise ValueError(problem)
        if not self.model:
            raise ValueError("the upstream model's name is empty")
        if not (math.isfinite(self.timeout) and self.timeout > 0):
            raise ValueError("the timeout must be a positive number of seconds")

    @property
    def upstream(self) -> str:
        """How errors and logs name it: ``model 'iris' (version 2) at http://host:8000``."""
        version = f" (version {self.version})" if self.version else ""
        return f"model {self.model!r}{version} at {self.url.rstrip('/')}"

    def model_path(self, suffix: str = "") -> str:
        base = urlsplit(self.url).path.rstrip("/")
        path = f"{base}/v2/models/{quote(self.model, safe='')}"
        if self.version:
            path += f"/versions/{quote(self.version, safe='')}"
        return path + suffix

    def server_path(self) -> str:
        return urlsplit(self.url).path.rstrip("/") + "/v2"

    def headers(self) -> dict[str, str]:
        if not self.credential:
            return {}
        value = self.credential
        if self.credential_header.lower() == "authorization" and " " not in value:
            value = f"Bearer {value}"
        return {self.credential_header: value}


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable base URL (``http(s)://host[:port][/prefix]``), else None."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return f"{url!r} is not a URL"
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "the URL must start with http:// or https:// and name a host"
    if parts.username or parts.password:
        return "the URL must not hold a user or password; give the credential on its own"
    if parts.query or parts.fragment:
        return "the URL must be a base URL, without a query or fragment"
    return None


@dataclass(frozen=True, slots=True)
class RemoteSignature:
    """How to call the upstream: its input tensor, the output that is the answer, its width."""

    input_name: str
    datatype: str
    output_name: str
    n_outputs: int
    binary: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "input": self.input_name,
            "datatype": self.datatype,
            "output": self.output_name,
            "n_outputs": self.n_outputs,
            "binary": self.binary,
        }

    @classmethod
    def from_dict(cls, value: dict[str, Any]) -> "RemoteSignature":
        return cls(
            input_name=value["input"],
            datatype=value["datatype"],
            output_name=value["output"],
            n_outputs=int(value["n_outputs"]),
            binary=bool(value.get("binary", False)),
        )


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    headers: Any
    data: bytes

    def json(self, target: RemoteTarget, what: str) -> Any:
        try:
            return orjson.loads(self.data)
        except orjson.JSONDecodeError:
            raise UpstreamError(f"{target.upstream} answered {what} with no JSON") from None


class V2Client:
    """HTTP requests to one V2 server: pooled keep-alive connections, a timeout, and a bounded
    retry of errors that happen before a request is sent."""

    def __init__(self, target: RemoteTarget, *, pool_size: int = POOL_SIZE) -> None:
        self.target = target
        self._pool = urllib3.connection_from_url(
            target.url,
            maxsize=pool_size,
            block=False,
            headers={"User-Agent": "mlplatform", **target.headers()},
        )
        self._retries = urllib3.Retry(
            total=None,
            connect=CONNECT_RETRIES,
            read=0,
            redirect=0,
            status=0,
            other=0,
            backoff_factor=0.05,
            raise_on_status=False,
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        timeout: float | None = None,
    ) -> Answer:
        seconds = timeout or self.target.timeout
        try:
            response = self._pool.urlopen(
                method,
                path,
                body=body,
                headers={**self._pool.headers, **(headers or {})},
                retries=self._retries,
                timeout=urllib3.Timeout(total=seconds),
                assert_same_host=False,
            )
        except MaxRetryError as exc:
            raise self._failure(exc.reason, seconds) from None
        except HTTPError as exc:
            raise self._failure(exc, seconds) from None
        return Answer(response.status, response.headers, response.data)

    def _failure(self, exc: BaseException | None, seconds: float) -> UpstreamError:
        upstream = self.target.upstream
        # NewConnectionError is a kind of ConnectTimeoutError in urllib3: it comes first.
        if isinstance(exc, NewConnectionError):
            tries = CONNECT_RETRIES + 1
            return UpstreamError(f"cannot connect to {upstream} ({tries} attempts): {_cause(exc)}")
        if isinstance(exc, ReadTimeoutError | Urllib3Timeout):
            return UpstreamTimeout(f"{upstream} did not answer within {seconds:g} s")
        if isinstance(exc, SSLError):
            return UpstreamError(f"TLS with {upstream} failed: {_cause(exc)}")
        if isinstance(exc, ProtocolError):
            return UpstreamError(f"{upstream} closed the connection without an answer")
        return UpstreamError(f"the request to {upstream} failed: {type(exc).__name__}")

    def close(self) -> None:
        self._pool.close()


def _cause(exc: BaseException) -> str:
    """The operating system's words for a connection error (``Connection refused``)."""
    inner = exc.__context__ or exc.__cause__
    while inner is not None and getattr(inner, "strerror", None) is None:
        inner = inner.__context__ or inner.__cause__
    if inner is not None and inner.strerror:
        return inner.strerror
    text = str(exc)
    return text.rsplit(": ", 1)[-1][:_ERROR_TEXT] if text else type(exc).__name__


class RemotePredictor:
    """Rows to outputs through a V2 server's ``infer`` endpoint, with the local interface."""

    def __init__(
        self, target: RemoteTarget, signature: RemoteSignature, *, n_inputs: int, client=None
    ) -> None:
        if signature.datatype not in INPUT_DATATYPES:
            raise ValueError(f"input datatype {signature.datatype!r} is not FP32 or FP64")
        self.target = target
        self.signature = signature
        self.n_inputs = n_inputs
        self.n_outputs = signature.n_outputs
        self.client = client or V2Client(target)
        self._dtype = INPUT_DATATYPES[signature.datatype]
        self._infer_path = target.model_path("/infer")

    def __repr__(self) -> str:
        return f"<RemotePredictor {self.target.upstream}>"

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Return the upstream's outputs for each row of `X` as float32 (n_rows, n_outputs)."""
        X = np.ascontiguousarray(X, dtype=self._dtype)
        if X.ndim != 2 or X.shape[1] != self.n_inputs:
            raise ValueError(f"expected an array of shape (n_rows, {self.n_inputs}), got {X.shape}")
        outputs = infer(self.client, X, self.signature, path=self._infer_path)
        if outputs.shape[1] != self.n_outputs:
            raise UpstreamError(
                f"{self.target.upstream} gave {outputs.shape[1]} outputs per row; this version "
                f"was registered with {self.n_outputs}"
            )
        return outputs

    def ready(self, *, timeout: float | None = None) -> str | None:
        """None when the upstream says the model is ready, else why not."""
        return model_ready(self.client, timeout=timeout)

    def close(self) -> None:
        self.client.close()


def model_ready(client: V2Client, *, timeout: float | None = None) -> str | None:
    """None when the server says the model is ready (``GET .../ready``), else why not."""
    try:
        answer = client.request("GET", client.target.model_path("/ready"), timeout=timeout)
    except UpstreamError as exc:
        return str(exc)
    if answer.status == 200:
        return None
    return f"{client.target.upstream} is not ready (HTTP {answer.status})"


def encode_request(X: np.ndarray, signature: RemoteSignature) -> tuple[bytes, dict[str, str]]:
    """The body and headers of an ``infer`` request for the rows of ``X`` (JSON, or binary
    tensors beyond ``JSON_MAX_VALUES`` numbers when the server takes them)."""
    binary = signature.binary and X.size > JSON_MAX_VALUES
    inputs, raw = v2codec.encode_tensors(
        [OutgoingTensor(signature.input_name, signature.datatype, X, binary)]
    )
    output: dict[str, Any] = {"name": signature.output_name}
    if binary:
        output["parameters"] = {"binary_data": True}
    body, header_length = v2codec.join_body({"inputs": inputs, "outputs": [output]}, raw)
    if header_length is None:
        return body, {"Content-Type": "application/json"}
    return body, {"Content-Type": "application/octet-stream", HEADER_LENGTH: str(header_length)}


def infer(
    client: V2Client, X: np.ndarray, signature: RemoteSignature, *, path: str | None = None
) -> np.ndarray:
    """One ``infer`` call: the rows of ``X`` in, the named output as float32 rows out."""
    target = client.target
    body, headers = encode_request(X, signature)
    answer = client.request("POST", path or target.model_path("/infer"), body=body, headers=headers)
    if answer.status != 200:
        said = _said(answer)
        if target.credential:  # a server that echoes the request's headers must not leak it
            said = said.replace(target.credential, "[credential]")
        raise UpstreamError(f"{target.upstream} answered HTTP {answer.status}: {said}")
    return decode_outputs(answer, target, signature.output_name, n_rows=X.shape[0])


def _said(answer: Answer) -> str:
    """The upstream's error message (V2: ``{"error": "..."}``), shortened."""
    try:
        document = orjson.loads(answer.data)
    except orjson.JSONDecodeError:
        text = answer.data[:_ERROR_TEXT].decode("utf-8", "replace").strip()
        return text or "(no body)"
    if isinstance(document, dict):
        for key in ("error", "detail", "message"):
            if isinstance(document.get(key), str):
                return document[key][:_ERROR_TEXT]
    return orjson.dumps(document)[:_ERROR_TEXT].decode("utf-8", "replace")


def decode_outputs(answer: Answer, target: RemoteTarget, name: str, *, n_rows: int) -> np.ndarray:
    """The output ``name`` of an ``infer`` answer (JSON or binary) as float32 rows."""
    upstream = target.upstream
    try:
        outputs = v2codec.decode_response(answer.data, answer.headers.get(HEADER_LENGTH))
    except v2codec.ProtocolError as exc:
        raise UpstreamError(f"{upstream} sent an answer that is not a V2 response: {exc}") from None
    tensor = next((t for t in outputs if t.name == name or len(outputs) == 1), None)
    if tensor is None:
        raise UpstreamError(f"{upstream} sent no output {name!r}")
    if tensor.datatype not in OUTPUT_DATATYPES:
        raise UpstreamError(
            f"{upstream}: output {tensor.name!r} is {tensor.datatype}, not numbers; name a "
            "numeric output (class probabilities or values)"
        )
    if not tensor.shape or tensor.shape[0] != n_rows:
        raise UpstreamError(
            f"{upstream}: output {tensor.name!r} has shape {list(tensor.shape)} for {n_rows} rows"
        )
    rows = tensor.data.reshape(n_rows, math.prod(tensor.shape[1:]))
    return np.ascontiguousarray(rows, dtype=np.float32)


def model_metadata(client: V2Client) -> dict[str, Any]:
    """The upstream's metadata of the model (``GET /v2/models/{name}[/versions/{v}]``)."""
    answer = client.request("GET", client.target.model_path())
    if answer.status == 404:
        raise UpstreamError(f"{client.target.upstream} does not exist there (HTTP 404)")
    if answer.status != 200:
        raise UpstreamError(
            f"{client.target.upstream} answered HTTP {answer.status} to a metadata request: "
            f"{_said(answer)}"
        )
    document = answer.json(client.target, "its metadata")
    if not isinstance(document, dict):
        raise UpstreamError(f"{client.target.upstream} sent metadata that is not an object")
    return document


def server_extensions(client: V2Client) -> tuple[str, ...]:
    """The protocol extensions the server lists (``GET /v2``); none if it does not say."""
    try:
        answer = client.request("GET", client.target.server_path())
    except UpstreamError:
        return ()
    if answer.status != 200:
        return ()
    try:
        extensions = orjson.loads(answer.data).get("extensions")
    except (orjson.JSONDecodeError, AttributeError):
        return ()
    return tuple(e for e in extensions or () if isinstance(e, str))


@dataclass(frozen=True, slots=True)
class Discovery:
    """What the upstream's metadata says: how to call it, and the input's width if it fixes it."""

    input_name: str
    datatype: str
    output_name: str
    binary: bool
    n_features: int | None
    platform: str


def discover(
    client: V2Client, *, output_name: str = "", prefer_probabilities: bool = True
) -> Discovery:
    """Read the model's metadata and the server's extensions: the input to send, the output
    that is the answer (a probability output for a classifier, unless ``output_name`` says)."""
    upstream = client.target.upstream
    metadata = model_metadata(client)
    inputs = [i for i in metadata.get("inputs") or () if isinstance(i, dict)]
    outputs = [o for o in metadata.get("outputs") or () if isinstance(o, dict)]
    if len(inputs) > 1:
        names = ", ".join(repr(i.get("name")) for i in inputs)
        raise UpstreamError(
            f"{upstream} takes {len(inputs)} inputs ({names}); a remote version sends one "
            "tensor [rows, features]"
        )
    input_name, datatype, width = "input", "FP32", None
    if inputs:
        spec = inputs[0]
        input_name = str(spec.get("name") or input_name)
        datatype = str(spec.get("datatype") or datatype)
        if datatype not in INPUT_DATATYPES:
            raise UpstreamError(
                f"{upstream}: input {input_name!r} is {datatype}; a remote version sends FP32 "
                "or FP64 rows"
            )
        shape = spec.get("shape") or []
        if len(shape) == 2 and isinstance(shape[1], int) and shape[1] > 0:
            width = shape[1]
    if not output_name:
        names = [str(o.get("name")) for o in outputs if o.get("name")]
        probable = [n for n in names if n.lower() in PROBABILITY_NAMES]
        numeric = [str(o.get("name")) for o in outputs if o.get("datatype") in OUTPUT_DATATYPES]
        if prefer_probabilities and probable:
            output_name = probable[0]
        elif numeric:
            output_name = numeric[0]
        elif names:
            output_name = names[0]
        else:
            # MLServer's scikit-learn runtime lists no outputs unless its settings declare them.
            output_name = "predict_proba" if prefer_probabilities else "predict"
    return Discovery(
        input_name=input_name,
        datatype=datatype,
        output_name=output_name,
        binary=BINARY_EXTENSION in server_extensions(client),
        n_features=width,
        platform=str(metadata.get("platform") or ""),
    )


def probe(client: V2Client, found: Discovery, *, n_features: int) -> RemoteSignature:
    """Infer two rows of zeros: the call works, and the answer's width is the output count."""
    signature = RemoteSignature(
        found.input_name, found.datatype, found.output_name, n_outputs=0, binary=found.binary
    )
    zeros = np.zeros((2, n_features), dtype=INPUT_DATATYPES[found.datatype])
    outputs = infer(client, zeros, signature)
    return RemoteSignature(
        found.input_name, found.datatype, found.output_name, outputs.shape[1], found.binary
    )
