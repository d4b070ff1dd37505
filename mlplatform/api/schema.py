"""OpenAPI schema: hooks, the error answers every v1 operation documents, request examples."""

import functools

from django.urls import path
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.openapi import AutoSchema
from rest_framework import serializers
from rest_framework.permissions import AllowAny


def drop_trailing_slash_duplicates(endpoints, **kwargs):
    """Each route is served with and without a trailing slash; document it once."""
    paths = {path for path, *_ in endpoints}
    return [
        (path, regex, method, callback)
        for path, regex, method, callback in endpoints
        if not (path.endswith("/") and path.rstrip("/") in paths)
    ]


def event_stream_schema(*events: str) -> dict:
    """The schema of one event of a ``text/event-stream`` answer (as schemathesis reads it)."""
    return {
        "type": "object",
        "description": "One Server-Sent Event; its data is a JSON document.",
        "properties": {
            "event": {"type": "string", "enum": list(events)},
            "id": {"type": "string"},
            # OpenAPI 3.0 has no contentMediaType: the encoding of data is said in words.
            "data": {"type": "string", "description": "A JSON document."},
        },
        "required": ["event", "data"],
    }


class ErrorSerializer(serializers.Serializer):
    """Documents ``mlplatform.api.exceptions.error_body``: the one error shape of the API."""

    detail = serializers.CharField(help_text="What went wrong, in words.")
    code = serializers.CharField(help_text="Machine-readable: invalid, not_found, rate_limited...")
    errors = serializers.DictField(
        required=False, help_text="Validation errors only: messages by field."
    )
    request_id = serializers.CharField(required=False, help_text="Quote it to an operator.")


_DESCRIPTIONS = {
    "400": "Invalid input; the detail names the problem.",
    "401": "Missing, malformed, expired or revoked credentials.",
    "403": "Valid credentials without the scope or kind of login this operation needs.",
    "404": "The object in the path does not exist or belongs to another principal; or there "
    "is no such page.",
    "413": "The body is larger than the configured limit.",
    "415": "The body's content type is not one this operation reads.",
    "429": "A rate limit (or a limit of unfinished jobs) was reached.",
    "503": "The database is unavailable; retry after a few seconds.",
}
_HEADER = {"schema": {"type": "string"}}
_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            **_HEADER,
            "required": True,
            "description": "The accepted schemes: Bearer, and ApiKey in the X-API-Key header.",
        }
    },
    "429": {
        "Retry-After": {**_HEADER, "description": "Seconds until the rate-limit window ends."},
        "X-RateLimit-Limit": {**_HEADER, "description": "Requests allowed per window."},
        "X-RateLimit-Remaining": {**_HEADER, "description": "Requests left in the window."},
        "X-RateLimit-Reset": {**_HEADER, "description": "Unix time at which the window ends."},
    },
    "503": {"Retry-After": {**_HEADER, "description": "Seconds to wait before retrying."}},
}


class PlatformAutoSchema(AutoSchema):
    """drf-spectacular's schema, plus the error answers a v1 operation can give.

    Every v1 view is rate limited and can meet an unavailable database; each can refuse
    credentials; a path parameter can name what does not exist (or is not the caller's); a body
    can be malformed, too large or of the wrong type. Operation-specific errors (a model named
    in the body, 409, 422, 504...) are declared on the views with ``ErrorSerializer``.
    """

    def get_operation(self, path, path_regex, path_prefix, method, registry):
        operation = super().get_operation(path, path_regex, path_prefix, method, registry)
        if operation is None or not path.startswith("/api/v1/"):
            return operation
        error = {
            "application/json": {"schema": self.resolve_serializer(ErrorSerializer, "response").ref}
        }
        responses = operation["responses"]
        for code in self._error_codes(operation):
            response = responses.setdefault(code, {"description": _DESCRIPTIONS[code]})
            response.setdefault("content", error)
            if code in _HEADERS:
                response.setdefault("headers", _HEADERS[code])
        return operation

    def get_auth(self):
        """As drf-spectacular says, but API keys are no way into operations they may not use."""
        auth = super().get_auth()
        if any(getattr(p, "refuses_api_keys", False) for p in self.view.permission_classes):
            auth = [scheme for scheme in auth if "ApiKeyAuth" not in scheme]
        return auth

    def _error_codes(self, operation) -> list[str]:
        codes = ["401", "429", "503"]
        has_body = "requestBody" in operation
        in_path = any(p["in"] == "path" for p in operation.get("parameters", ()))
        in_query = any(p["in"] in ("query", "header") for p in operation.get("parameters", ()))
        if has_body or in_query:
            codes.append("400")
        if not all(permission is AllowAny for permission in self.view.permission_classes):
            codes.append("403")
        if in_path or any(p["name"] == "page" for p in operation.get("parameters", ())):
            codes.append("404")
        if has_body:
            codes += ["413", "415"]
        return sorted(codes)


def request_example(route: str, view, method: str):
    """An example JSON body of ``method`` on the view at ``route``, as the OpenAPI schema
    documents it: its declared example, else one built from the body's schema; None when the
    operation takes no body."""
    return _request_example(route, view, method.lower())


@functools.cache
def _request_example(route: str, view, method: str):
    schema = SchemaGenerator(patterns=[path(route, view)]).get_schema(request=None, public=True)
    operation = next(iter(schema["paths"].values()), {}).get(method, {})
    content = operation.get("requestBody", {}).get("content", {})
    # A body documented only as a form (the login) has the same fields in JSON.
    body = content.get("application/json") or next(iter(content.values()), None)
    if body is None:
        return None
    if body.get("examples"):
        return next(iter(body["examples"].values()))["value"]
    return _example_of(body["schema"], schema.get("components", {}).get("schemas", {}))


def _example_of(schema: dict, components: dict, depth: int = 0):
    """A value of a JSON schema: its example or default, else required properties (and those
    with an example) filled the same way, else an empty value of its type."""
    if "$ref" in schema:
        if depth > 8:
            return None
        target = components.get(schema["$ref"].rsplit("/", 1)[-1], {})
        return _example_of(target, components, depth + 1)
    for key in ("example", "default"):
        if key in schema:
            return schema[key]
    if schema.get("enum"):
        return next((choice for choice in schema["enum"] if choice), schema["enum"][0])
    for key in ("oneOf", "anyOf", "allOf"):
        if schema.get(key):
            return _example_of(schema[key][0], components, depth + 1)
    kind = schema.get("type")
    if kind == "object":
        required = set(schema.get("required", ()))
        return {
            name: _example_of(prop, components, depth + 1)
            for name, prop in schema.get("properties", {}).items()
            if name in required or "example" in prop
        }
    if kind == "array":
        item = _example_of(schema.get("items", {}), components, depth + 1)
        return [] if item is None else [item]
    return _EMPTY.get(kind)


_EMPTY = {"string": "", "integer": 0, "number": 0, "boolean": False}
