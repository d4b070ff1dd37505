"""Thin views of the V2 protocol: read the body, call a service, encode the answer.

Authentication and scopes are those of the REST API (``X-API-Key`` or ``Authorization: Bearer``;
inference needs the ``predict`` scope, statistics the ``read`` scope; model metadata, the
model list and the repository index any credentials). The server's health and metadata and a
model's readiness answer without credentials and outside the rate limits, as probes need.
Errors are answered as the protocol says: the status and ``{"error": "..."}`` with the REST
API's message.
"""

import zlib
from importlib import metadata

import orjson
from django.http import HttpResponse
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.models import ApiKey
from accounts.permissions import scope_required
from mlplatform.api.exceptions import exception_handler as platform_exception_handler
from mlplatform.api.parsers import read_limited
from mlplatform.api.renderers import ORJSONRenderer
from mlplatform.errors import PayloadTooLarge
from mlplatform.health import CHECKS
from mlplatform.middleware import body_limit
from predictions.models import ModelVersion
from predictions.pipeline import Served, principal_id, route
from predictions.runtime.v2codec import HEADER_LENGTH, ProtocolError
from predictions.v2 import repository, schema, services
from predictions.v2.codec import decode_request
from predictions.v2.signature import PLATFORMS
from predictions.v2.statistics import model_statistics

SERVER_NAME = "mlplatform"
# Triton's names. ``model_repository``: the index is served; load and unload answer 501, as
# Triton's own do when its models are not under explicit control.
EXTENSIONS = [
    "binary_tensor_data",
    "parameters",
    "model_configuration",
    "model_repository",
    "statistics",
]
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


class UnsupportedEncoding(ProtocolError):
    status_code = 415


class NotReady(ProtocolError):
    status_code = 404


class Unsupported(ProtocolError):
    status_code = 501


def v2_exception_handler(exc, context):
    """The platform's handler, answering ``{"error": message}`` as the protocol says."""
    if isinstance(exc, ProtocolError):
        return Response({"error": str(exc)}, status=exc.status_code)
    response = platform_exception_handler(exc, context)
    if response is not None:
        response.data = {"error": response.data.get("detail", "error")}
    return response


class JsonOnly(BaseContentNegotiation):
    """Always JSON (errors and metadata), whatever ``Accept`` says: clients parse nothing else."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class V2View(APIView):
    renderer_classes = [ORJSONRenderer]
    parser_classes: list = []
    content_negotiation_class = JsonOnly
    permission_classes = [IsAuthenticated]

    def get_exception_handler(self):
        return v2_exception_handler


class ProbeView(V2View):
    """Answers without credentials and without counting against any rate limit."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []


def _server_version() -> str:
    try:
        return metadata.version(SERVER_NAME)
    except metadata.PackageNotFoundError:
        return "unknown"


class ServerMetadataView(ProbeView):
    """The server's name, version and protocol extensions."""

    @schema.server_metadata
    def get(self, request):
        return Response(
            {"name": SERVER_NAME, "version": _server_version(), "extensions": EXTENSIONS}
        )


class ServerLiveView(ProbeView):
    """Liveness: 200 ``{"live": true}`` while the process answers."""

    @schema.live
    def get(self, request):
        return Response({"live": True})


class ServerReadyView(ProbeView):
    """Readiness: the database answers and every active version loads; 503 otherwise."""

    @schema.ready
    def get(self, request):
        for name in ("database", "models"):
            try:
                CHECKS[name]()
            except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
                return Response(
                    {"ready": False, "error": f"{name}: {type(exc).__name__}: {exc}"[:300]},
                    status=503,
                )
        return Response({"ready": True})


def _served(request, name: str, version: str | None) -> Served:
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    return route(name, version, principal=principal_id(request.user, api_key))


class ModelMetadataView(V2View):
    """A model's (or version's) platform, versions and tensors; ``-1`` is the batch dimension.

    Without a version, the version that would serve the caller (the traffic split).
    """

    @schema.model_metadata
    def get(self, request, name: str, version: str | None = None):
        served = _served(request, name, version)
        signature = services.signature_for(served)
        return Response(
            {
                "name": served.model.name,
                "versions": [
                    label
                    for label, entry in served.model.versions.items()
                    if entry.status != ModelVersion.Status.RETIRED
                ],
                "platform": PLATFORMS.get(served.version.runtime, served.version.runtime),
                "inputs": [spec.as_dict() for spec in signature.inputs],
                "outputs": [spec.as_dict() for spec in signature.outputs],
                "parameters": {
                    "version": served.version.label,
                    "task": served.model.task,
                    "feature_names": list(served.model.feature_names),
                    "labels": list(served.model.labels),
                },
            }
        )


class ModelConfigView(V2View):
    """A version's configuration as Triton's model configuration extension gives it.

    ``max_batch_size`` is the version's (the most rows one call of the model answers, requests
    batched together up to it) and ``dynamic_batching`` its ``batch_wait_ms``; tensor ``dims``
    leave out the batch dimension, as Triton's do when ``max_batch_size`` is above 0.
    """

    @schema.model_config
    def get(self, request, name: str, version: str | None = None):
        served = _served(request, name, version)
        signature = services.signature_for(served)
        entry = served.version

        def tensors(specs) -> list[dict]:
            return [
                {"name": spec.name, "data_type": f"TYPE_{spec.datatype}", "dims": spec.shape[1:]}
                for spec in specs
            ]

        return Response(
            {
                "name": served.model.name,
                "version": entry.label,
                "platform": PLATFORMS.get(entry.runtime, entry.runtime),
                "max_batch_size": entry.max_batch_size,
                "input": tensors(signature.inputs),
                "output": tensors(signature.outputs),
                "dynamic_batching": {
                    "max_queue_delay_microseconds": round(entry.batch_wait_ms * 1000)
                },
            }
        )


class ModelReadyView(ProbeView):
    """200 ``{"name", "ready": true}`` when the version (without one: every version the model's
    traffic split may choose) loads; one 404 for every other case, so that a probe learns only
    whether the model is ready."""

    @schema.model_ready
    def get(self, request, name: str, version: str | None = None):
        if not repository.model_ready(name, version):
            which = f"Version {version!r} of model {name!r}" if version else f"Model {name!r}"
            raise NotReady(f"{which} is not ready.")
        body = {"name": name, "ready": True}
        if version:
            body["version"] = version
        return Response(body)


class ModelListView(V2View):
    """KServe's model list: the names of the models with a version that is not retired."""

    @schema.model_list
    def get(self, request):
        return Response({"models": repository.served_model_names()})


class ModelStatsView(V2View):
    """Triton's statistics of every version, a model's versions, or one version."""

    permission_classes = [scope_required("read")]

    @schema.model_stats
    def get(self, request, name: str | None = None, version: str | None = None):
        stats = model_statistics(user=request.user, name=name, version=version)
        return Response({"model_stats": stats})


class AllStatsView(ModelStatsView):
    """Triton's statistics of every version of every model."""

    @schema.all_stats
    def get(self, request):
        return super().get(request)


class RepositoryIndexView(V2View):
    """Triton's repository index: each version's name, state and reason."""

    @schema.repository_index
    def post(self, request):
        data = _body(request)
        try:
            document = orjson.loads(data) if data.strip() else {}
        except orjson.JSONDecodeError as exc:
            raise ProtocolError(f"the body is not valid JSON: {exc}") from None
        if not isinstance(document, dict):
            raise ProtocolError('the body must be a JSON object, such as {"ready": true}')
        ready = document.get("ready", False)
        if not isinstance(ready, bool):
            raise ProtocolError("Invalid value for 'ready': expected a boolean")
        return Response(repository.repository_index(ready_only=ready))


class RepositoryControlView(V2View):
    """Load and unload: not supported, versions are served by their status (501)."""

    action = ""  # "load" or "unload", set by the route

    @schema.repository_control
    def post(self, request, name: str):
        raise Unsupported(
            f"Model {self.action} is not supported: a version is served while its status is active "
            "or staged, and its status is set in the admin."
        )


def _decompressed(data: bytes, encoding: str, limit: int) -> bytes:
    wbits = _WBITS.get(encoding)
    if wbits is None:
        raise UnsupportedEncoding(
            f"Content-Encoding {encoding!r} is not supported (use gzip or deflate)"
        )
    decompressor = zlib.decompressobj(wbits)
    try:
        plain = decompressor.decompress(data, limit + 1)
    except zlib.error as exc:
        raise ProtocolError(f"the {encoding} body cannot be decompressed: {exc}") from None
    if len(plain) > limit:
        raise PayloadTooLarge(f"The decompressed body is larger than the limit of {limit} bytes.")
    if not decompressor.eof:
        raise ProtocolError(f"the {encoding} body is truncated")
    return plain


def _body(request) -> bytes:
    """The raw body within the size limit, decompressed (gzip, deflate) if it says so."""
    limit = body_limit(request.path)
    data = read_limited(request.stream, limit)
    encoding = request.headers.get("Content-Encoding", "").strip().lower()
    if encoding and encoding != "identity":
        data = _decompressed(data, encoding, limit)
    return data


class InferView(V2View):
    """Predict the rows of one input tensor; each row is stored as a prediction."""

    permission_classes = [scope_required("predict")]
    ratelimit_group = "predict"

    @schema.infer
    def post(self, request, name: str, version: str | None = None):
        inference = decode_request(_body(request), request.headers.get(HEADER_LENGTH))
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        answer = services.tensor_predictions_create(
            user=request.user,
            api_key=api_key,
            model_name=name,
            version_label=version,
            request=inference,
            request_id=request.request_id,
        )
        body, header_length = services.answer_encoded(answer, inference)
        if header_length is None:
            return HttpResponse(body, content_type="application/json")
        response = HttpResponse(body, content_type="application/octet-stream")
        response[HEADER_LENGTH] = str(header_length)
        return response
