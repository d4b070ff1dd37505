"""Request-wide middleware: request ids and request log lines, the body size limit, compression."""

import re
import time

import orjson
from django.http import JsonResponse
from django.middleware.gzip import GZipMiddleware
from uuid_utils.compat import uuid7

from mlplatform.conf import platform_setting
from mlplatform.errors import error_body
from mlplatform.logging import log_context, request_finished
from mlplatform.metrics import instrumented

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_ARTIFACT_UPLOAD = re.compile(r"^/api/v1/models/[^/]+/versions/?$")
# Room beside an artifact of the largest size for the form's other fields and multipart framing:
# a file within MAX_ARTIFACT_BYTES is never refused for its envelope.
FORM_BYTES = 1024 * 1024


def body_limit(path: str) -> int:
    """The largest body a path accepts: uploads (batch files, artifacts) get their own limits."""
    if path.startswith("/api/v1/predict/batch"):
        return platform_setting("MAX_UPLOAD_BYTES")
    if path.startswith("/admin/") or _ARTIFACT_UPLOAD.match(path):
        return platform_setting("MAX_ARTIFACT_BYTES") + FORM_BYTES
    return platform_setting("MAX_BODY_BYTES")


def speaks_v2(path: str) -> bool:
    """Whether a path is under /v2, where errors take the Open Inference Protocol's shape."""
    return path == "/v2" or path.startswith("/v2/")


def request_id_from(incoming: str) -> str:
    """The client's ``X-Request-ID`` when it is sane, else a new one.

    New ids are time-ordered (UUIDv7), as stored rows' indexes of them take them best.
    """
    return incoming if _VALID_REQUEST_ID.match(incoming) else uuid7().hex


def error_content(path: str, detail: str, code: str) -> bytes:
    """An error's JSON body in the shape its path's clients read (see ``error_response``)."""
    if speaks_v2(path):
        return orjson.dumps({"error": detail})
    return orjson.dumps(error_body(detail, code))


def too_large_message(limit: int) -> str:
    return f"Request body is larger than the limit of {limit} bytes."


def error_response(request, detail: str, code: str, *, status: int) -> JsonResponse:
    """An error answered outside the API's views, in the shape its path's clients read.

    Under /v2 that is the protocol's ``{"error": detail}`` (tritonclient and the KServe SDK read
    nothing else); elsewhere the API's ``{"detail", "code", "request_id"}``.
    """
    if speaks_v2(request.path):
        return JsonResponse({"error": detail}, status=status)
    return JsonResponse(error_body(detail, code), status=status)


class RequestIdMiddleware:
    """Honour a sane ``X-Request-ID`` or make one; expose it on the request and the response."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.request_id = request_id_from(request.headers.get("X-Request-ID", ""))
        started = time.perf_counter()
        # Every log line of the request carries its id; one line sums the request up.
        with log_context(request_id=request.request_id):
            response = self.get_response(request)
            if instrumented():
                request_finished(request, response, started)
        response["X-Request-ID"] = request.request_id
        return response


class BodySizeLimitMiddleware:
    """Refuse a body whose declared length passes the limit before anything reads it (413)."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        declared = request.META.get("CONTENT_LENGTH") or "0"
        limit = body_limit(request.path)
        try:
            too_large = int(declared) > limit
        except ValueError:
            return error_response(
                request, "Content-Length is not a number.", "invalid_header", status=400
            )
        if too_large:
            return error_response(
                request, too_large_message(limit), "request_too_large", status=413
            )
        return self.get_response(request)


class SelectiveGZipMiddleware(GZipMiddleware):
    """Gzip large data answers to reads; never a page or an answer that carries a secret.

    Compressing a response that holds a secret next to text an attacker can influence leaks
    the secret through the compressed size (BREACH). Only answers to GET of JSON, CSV or JSON
    Lines are compressed (lists, result pages); HTML (forms with CSRF tokens), answers marked
    ``Cache-Control: no-store`` (new API keys, webhook secrets) and streamed answers never are:
    event streams must reach the client as they are written, and compressing a download would
    cost several times the CPU of formatting it.
    """

    COMPRESSIBLE = ("application/json", "text/csv", "application/x-ndjson", "application/jsonl")

    def process_response(self, request, response):
        content_type = response.get("Content-Type", "").split(";")[0].strip()
        if (
            request.method not in ("GET", "HEAD")
            or response.streaming
            or content_type not in self.COMPRESSIBLE
            or "no-store" in response.get("Cache-Control", "")
        ):
            return response
        return super().process_response(request, response)
