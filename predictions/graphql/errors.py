"""GraphQL errors in the REST API's terms: its message, and its code and status as extensions."""

from django.db import InterfaceError, OperationalError
from graphql import GraphQLError
from rest_framework import exceptions

from mlplatform.api.exceptions import first_message
from mlplatform.errors import DatabaseUnavailable, PlatformError


def _described(exc: Exception) -> tuple[str, str, int] | None:
    """Message, code and HTTP status of an error the caller can act on; None if unexpected."""
    if isinstance(exc, PlatformError):
        return exc.detail, exc.code, exc.status_code
    if isinstance(exc, exceptions.ValidationError):
        return first_message(exc.detail), "invalid", 400
    if isinstance(exc, exceptions.APIException):
        codes = exc.get_codes()
        return str(exc.detail), codes if isinstance(codes, str) else "error", exc.status_code
    if isinstance(exc, OperationalError | InterfaceError):
        unavailable = DatabaseUnavailable()
        return unavailable.detail, unavailable.code, unavailable.status_code
    return None


def is_unexpected(error: GraphQLError) -> bool:
    """A failure of the server (logged), not of the request (syntax, limits, input, auth)."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return False
    return _described(original) is None


def platform_error(error: GraphQLError) -> GraphQLError:
    """The error as a client should see it: an unexpected one is masked."""
    original = error.original_error
    if original is None or isinstance(original, GraphQLError):
        return error  # syntax, validation and limit errors: graphql-core's own messages
    described = _described(original)
    if described is None:
        message, code, status = "Internal server error.", "server_error", 500
    else:
        message, code, status = described
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        extensions={"code": code, "status": status},
    )
