"""Every error of the API in one JSON shape: ``{"detail": "...", "code": "..."}``."""

import logging

from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError, InterfaceError, OperationalError
from django.http import Http404
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from mlplatform import metrics
from mlplatform.errors import DatabaseUnavailable, PlatformError, error_body

logger = logging.getLogger(__name__)


def first_message(errors, path: str = "") -> str:
    """The first message of a (nested) validation error, prefixed with where it was found."""
    if isinstance(errors, dict) and errors:
        key, value = next(iter(errors.items()))
        where = path if key == "non_field_errors" else (f"{path}.{key}" if path else str(key))
        return first_message(value, where)
    if isinstance(errors, list) and errors:
        return first_message(errors[0], path)
    return f"{path}: {errors}" if path else str(errors)


def exception_handler(exc, context):
    """Map platform, DRF and Django errors to the one error shape."""
    if isinstance(exc, PlatformError):
        return Response(error_body(exc.detail, exc.code), status=exc.status_code)
    if isinstance(exc, RequestDataTooBig):
        return Response(error_body(str(exc), "request_too_large"), status=413)
    if isinstance(exc, MemoryError):
        logger.warning("a request needed more memory than the process has: %r", exc)
        message = "The request needs more memory than the server has; send less at once."
        return Response(error_body(message, "request_too_large"), status=413)
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("database unavailable: %s", exc)
        unavailable = DatabaseUnavailable()
        return Response(
            error_body(unavailable.detail, unavailable.code),
            status=unavailable.status_code,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, DatabaseError):
        return None
    if isinstance(exc, ConnectionInterrupted | RedisError):
        # Redis holds the response cache and the rate-limit counters (production profile).
        logger.warning("cache unavailable: %s", exc)
        return Response(
            error_body("The cache is unavailable; try again shortly.", "cache_unavailable"),
            status=503,
            headers={"Retry-After": "5"},
        )
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()

    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    if isinstance(exc, exceptions.ValidationError):
        response.data = error_body(first_message(exc.detail), "invalid", errors=exc.detail)
        return response
    data = response.data
    detail = data.get("detail", data) if isinstance(data, dict) else data
    code = data.get("code") if isinstance(data, dict) and "code" in data else None
    if code is None:
        codes = exc.get_codes() if isinstance(exc, exceptions.APIException) else "error"
        code = codes if isinstance(codes, str) else "error"
    response.data = error_body(str(detail), str(code))
    if isinstance(exc, exceptions.AuthenticationFailed | exceptions.NotAuthenticated):
        metrics.auth_failed(str(code))
    return response
