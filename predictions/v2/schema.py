"""OpenAPI descriptions of the V2 operations: their answers are built by hand in the views.

Every error a V2 operation gives is the protocol's ``{"error": "..."}`` (``V2Error``); each
operation documents the statuses it can answer, with the headers the REST API documents for
them (``WWW-Authenticate`` on 401, ``Retry-After`` and ``X-RateLimit-*`` on 429).
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiExample,
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    inline_serializer,
)
from rest_framework import serializers

from predictions.runtime.v2codec import DATATYPES

_ERROR = inline_serializer(
    "V2Error", {"error": serializers.CharField(help_text="What went wrong, in words.")}
)
_DESCRIPTIONS = {
    400: "The request is malformed or does not fit the model; the error names the problem.",
    401: "Missing, malformed, expired or revoked credentials.",
    403: "The credentials lack the 'predict' scope.",
    404: "No such model, or no such (or a retired) version.",
    413: "The body, or the body once decompressed, is larger than the limit.",
    415: "A Content-Encoding other than gzip, deflate or identity.",
    429: "The rate limit was reached.",
    503: "The version's artifact no longer loads, or the database or cache is unavailable.",
    501: "Not supported by this server.",
    504: "Inference took longer than the request's timeout parameter.",
}
_HEADERS = [
    OpenApiParameter(
        "WWW-Authenticate",
        str,
        OpenApiParameter.HEADER,
        required=True,
        response=[401],
        description="The accepted schemes: Bearer, and ApiKey in the X-API-Key header.",
    ),
    OpenApiParameter(
        "Retry-After",
        str,
        OpenApiParameter.HEADER,
        response=[429, 503],
        description="Seconds to wait before retrying.",
    ),
    *(
        OpenApiParameter(name, str, OpenApiParameter.HEADER, response=[429], description=what)
        for name, what in (
            ("X-RateLimit-Limit", "Requests allowed per window."),
            ("X-RateLimit-Remaining", "Requests left in the window."),
            ("X-RateLimit-Reset", "Unix time at which the window ends."),
        )
    ),
]


def _errors(*statuses: int) -> dict:
    return {status: OpenApiResponse(_ERROR, _DESCRIPTIONS[status]) for status in statuses}


def _parameters():
    return serializers.DictField(required=False, help_text="Protocol parameters.")


def _tensor_spec(name: str):
    return inline_serializer(
        name,
        {
            "name": serializers.CharField(),
            "datatype": serializers.CharField(),
            "shape": serializers.ListField(child=serializers.IntegerField()),
        },
        many=True,
    )


server_metadata = extend_schema(
    tags=["v2"],
    responses=inline_serializer(
        "V2ServerMetadata",
        {
            "name": serializers.CharField(),
            "version": serializers.CharField(),
            "extensions": serializers.ListField(child=serializers.CharField()),
        },
    ),
)
live = extend_schema(
    tags=["v2"], responses=inline_serializer("V2Live", {"live": serializers.BooleanField()})
)
ready = extend_schema(
    tags=["v2"],
    responses={
        200: inline_serializer("V2Ready", {"ready": serializers.BooleanField()}),
        503: OpenApiResponse(
            inline_serializer(
                "V2NotReady",
                {"ready": serializers.BooleanField(), "error": serializers.CharField()},
            ),
            "The database does not answer, no model can serve, or an active version does not load.",
        ),
    },
)
model_metadata = extend_schema(
    tags=["v2"],
    parameters=_HEADERS,
    responses={
        200: inline_serializer(
            "V2ModelMetadata",
            {
                "name": serializers.CharField(),
                "versions": serializers.ListField(child=serializers.CharField()),
                "platform": serializers.CharField(),
                "inputs": _tensor_spec("V2InputSpec"),
                "outputs": _tensor_spec("V2OutputSpec"),
                "parameters": serializers.JSONField(),
            },
        ),
        **_errors(401, 404, 429, 503),
    },
)


def _config_tensors(name: str):
    return inline_serializer(
        name,
        {
            "name": serializers.CharField(),
            "data_type": serializers.CharField(),
            "dims": serializers.ListField(child=serializers.IntegerField()),
        },
        many=True,
    )


model_config = extend_schema(
    tags=["v2"],
    parameters=_HEADERS,
    responses={
        200: inline_serializer(
            "V2ModelConfig",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(),
                "platform": serializers.CharField(),
                "max_batch_size": serializers.IntegerField(
                    help_text="Most rows one call of the model answers (1: no batching)."
                ),
                "input": _config_tensors("V2ConfigInput"),
                "output": _config_tensors("V2ConfigOutput"),
                "dynamic_batching": inline_serializer(
                    "V2DynamicBatching",
                    {"max_queue_delay_microseconds": serializers.IntegerField()},
                ),
            },
        ),
        **_errors(401, 404, 429, 503),
    },
)
model_ready = extend_schema(
    tags=["v2"],
    description=(
        "Readiness of a version, or without one of every version the model's traffic split may "
        "choose. No credentials and no rate limit: a probe learns ready or not, nothing else."
    ),
    responses={
        200: inline_serializer(
            "V2ModelReady",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(required=False, help_text="As the path names it."),
                "ready": serializers.BooleanField(),
            },
        ),
        404: OpenApiResponse(
            _ERROR,
            "Not ready: the same answer for an unknown model or version, a retired version, a "
            "model with nothing to serve and a version whose artifact does not load.",
        ),
        503: OpenApiResponse(_ERROR, "The database is unavailable."),
    },
)
model_list = extend_schema(
    tags=["v2"],
    operation_id="v2_models_list",
    description="KServe's model list: the models with a version that is not retired.",
    parameters=_HEADERS,
    responses={
        200: inline_serializer(
            "V2ModelList", {"models": serializers.ListField(child=serializers.CharField())}
        ),
        **_errors(401, 429, 503),
    },
)

_DURATION = inline_serializer(
    "V2StatDuration",
    {
        "count": serializers.IntegerField(),
        "ns": serializers.IntegerField(help_text="Cumulative duration in nanoseconds."),
    },
)


_STATISTICS = inline_serializer(
    "V2ModelStatistics",
    {
        "model_stats": inline_serializer(
            "V2ModelStat",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(),
                "last_inference": serializers.IntegerField(
                    help_text="Milliseconds since the epoch of the latest prediction (0: none)."
                ),
                "inference_count": serializers.IntegerField(
                    help_text="Rows predicted by the model (cache hits excluded)."
                ),
                "execution_count": serializers.IntegerField(help_text="Not measured: 0."),
                "inference_stats": inline_serializer(
                    "V2InferenceStats",
                    {
                        name: _DURATION
                        for name in (
                            "success",
                            "fail",
                            "queue",
                            "compute_input",
                            "compute_infer",
                            "compute_output",
                            "cache_hit",
                            "cache_miss",
                        )
                    },
                ),
                "batch_stats": serializers.ListField(
                    child=serializers.DictField(), help_text="Not measured: empty."
                ),
            },
            many=True,
        )
    },
)


def _stats(*, everything: bool = False):
    return extend_schema(
        operation_id="v2_stats_retrieve" if everything else None,
        tags=["v2"],
        description=(
            "Triton's statistics extension, from the stored predictions the caller may read (their "
            "own; staff: everyone's), counted per predicted row. Retired versions are left out. "
            "Fields the platform does not measure are zero: see docs/v2.md."
        ),
        parameters=_HEADERS,
        responses={
            200: _STATISTICS,
            **_errors(401),
            403: OpenApiResponse(_ERROR, "The credentials lack the 'read' scope."),
            **_errors(*([429, 503] if everything else [404, 429, 503])),
        },
    )


model_stats = _stats()
# Its own operation id: /v2/models/stats would take that of /v2/models/{name}/stats.
all_stats = _stats(everything=True)


repository_index = extend_schema(
    tags=["v2"],
    description=(
        "Triton's repository index: every version of every model. Active and staged versions "
        "are READY when their artifact loads (else UNAVAILABLE, the reason saying why); retired "
        "ones are UNAVAILABLE with the reason 'retired'."
    ),
    parameters=_HEADERS,
    request=inline_serializer(
        "V2RepositoryIndex",
        {
            "ready": serializers.BooleanField(
                required=False, help_text="Only the versions that are READY (default false)."
            )
        },
    ),
    responses={
        200: inline_serializer(
            "V2RepositoryModel",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(
                    required=False, help_text="Absent for a model without versions."
                ),
                "state": serializers.ChoiceField(choices=["READY", "UNAVAILABLE"]),
                "reason": serializers.CharField(allow_blank=True),
            },
            many=True,
        ),
        **_errors(400, 401, 413, 415, 429, 503),
    },
)
repository_control = extend_schema(
    tags=["v2"],
    description="Not supported: a version is served while its status is active or staged.",
    parameters=_HEADERS,
    request=None,
    responses=_errors(401, 429, 501),
)


_INFER_REQUEST = inline_serializer(
    "V2Inference",  # V2InferenceRequest in the schema, as every request body is named
    {
        "id": serializers.CharField(required=False, help_text="Echoed in the answer."),
        "parameters": _parameters(),
        "inputs": inline_serializer(
            "V2InputTensor",
            {
                "name": serializers.CharField(),
                "shape": serializers.ListField(child=serializers.IntegerField(min_value=0)),
                "datatype": serializers.ChoiceField(choices=DATATYPES),
                "parameters": _parameters(),
                "data": serializers.JSONField(
                    required=False, help_text="Row-major, flat or nested; absent for binary data."
                ),
            },
            many=True,
        ),
        "outputs": inline_serializer(
            "V2RequestedOutput",
            {"name": serializers.CharField(), "parameters": _parameters()},
            many=True,
            required=False,
        ),
    },
)
_INFER_RESPONSE = inline_serializer(
    "V2InferenceResponse",
    {
        "model_name": serializers.CharField(),
        "model_version": serializers.CharField(),
        "id": serializers.CharField(required=False),
        "parameters": _parameters(),
        "outputs": inline_serializer(
            "V2ResponseOutput",
            {
                "name": serializers.CharField(),
                "datatype": serializers.CharField(),
                "shape": serializers.ListField(child=serializers.IntegerField()),
                "parameters": _parameters(),
                "data": serializers.ListField(
                    required=False, help_text="Flat, row-major; absent for binary data."
                ),
            },
            many=True,
        ),
    },
)
_INFERRED = (
    "The outputs: JSON, or (when any output is asked for in binary) the JSON header of "
    "Inference-Header-Content-Length bytes followed by the binary outputs."
)
infer = extend_schema(
    tags=["v2"],
    description=(
        "An Open Inference Protocol request: JSON tensors, or a JSON header of "
        "Inference-Header-Content-Length bytes followed by binary tensor data. See docs/v2.md."
    ),
    parameters=[
        OpenApiParameter(
            "Inference-Header-Content-Length",
            int,
            OpenApiParameter.HEADER,
            description="With binary inputs: the length of the JSON header before them.",
        ),
        OpenApiParameter(
            "Inference-Header-Content-Length",
            int,
            OpenApiParameter.HEADER,
            response=[200],
            description="With binary outputs: the length of the JSON header before them.",
        ),
        *_HEADERS,
    ],
    request={
        "application/json": _INFER_REQUEST,
        "application/octet-stream": OpenApiTypes.BINARY,
    },
    examples=[
        OpenApiExample(
            "iris",
            request_only=True,
            media_type="application/json",
            value={
                "id": "req-1",
                "inputs": [
                    {
                        "name": "input",
                        "shape": [1, 4],
                        "datatype": "FP32",
                        "data": [5.1, 3.5, 1.4, 0.2],
                    }
                ],
            },
        )
    ],
    responses={
        (200, "application/json"): OpenApiResponse(_INFER_RESPONSE, _INFERRED),
        (200, "application/octet-stream"): OpenApiResponse(OpenApiTypes.BINARY, _INFERRED),
        **_errors(400, 401, 403, 404, 413, 415, 429, 503, 504),
    },
)
