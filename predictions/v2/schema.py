"""OpenAPI descriptions of the V2 answers (they are built by hand in the views, not serialized)."""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers

_ERROR = inline_serializer("V2Error", {"error": serializers.CharField()})
_ERRORS = {status: _ERROR for status in (400, 401, 403, 404, 413, 415, 503, 504)}


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
        503: inline_serializer(
            "V2NotReady", {"ready": serializers.BooleanField(), "error": serializers.CharField()}
        ),
    },
)
model_metadata = extend_schema(
    tags=["v2"],
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
        **_ERRORS,
    },
)
model_ready = extend_schema(
    tags=["v2"],
    responses={
        200: inline_serializer(
            "V2ModelReady",
            {
                "name": serializers.CharField(),
                "version": serializers.CharField(),
                "ready": serializers.BooleanField(),
            },
        ),
        **_ERRORS,
    },
)
infer = extend_schema(
    tags=["v2"],
    description=(
        "An Open Inference Protocol request: JSON tensors, or a JSON header of "
        "Inference-Header-Content-Length bytes followed by binary tensor data. See docs/v2.md."
    ),
    request=OpenApiTypes.OBJECT,
    responses={
        200: OpenApiResponse(
            OpenApiTypes.OBJECT,
            description="JSON, or application/octet-stream with binary outputs after the header.",
        ),
        **_ERRORS,
    },
)
