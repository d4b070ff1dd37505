"""Who is asking: the REST API's authenticators and scope permissions, run for GraphQL."""

from dataclasses import dataclass, field

from rest_framework import exceptions
from rest_framework.parsers import BaseParser
from rest_framework.request import Request
from rest_framework.settings import api_settings
from strawberry.django.context import StrawberryDjangoContext
from strawberry.types import Info

from accounts.models import ApiKey, User
from accounts.permissions import any_scope_required, scope_required
from predictions.graphql.limits import rate_limit


class _BodyLeftAlone(BaseParser):
    """Strawberry reads the body; the CSRF check of a session (which looks for a form token
    when the header is missing) must find nothing rather than consume it."""

    media_type = "*/*"

    def parse(self, stream, media_type=None, parser_context=None) -> dict:
        return {}


@dataclass
class GraphQLContext(StrawberryDjangoContext):
    """The Django request and response, plus the caller as the REST API's authenticators see it.

    Authentication runs once, when the context is made; its failure (a revoked key, an expired
    token, a session without its CSRF token on a POST) is kept and raised by the first field
    that needs a caller, so a query that needs none (introspection) still answers.
    """

    api_request: Request | None = None
    auth_error: exceptions.APIException | None = field(default=None)

    @classmethod
    def for_request(cls, request, response) -> "GraphQLContext":
        api_request = Request(
            request,
            parsers=[_BodyLeftAlone()],
            authenticators=[auth() for auth in api_settings.DEFAULT_AUTHENTICATION_CLASSES],
        )
        error = None
        try:
            api_request.user  # noqa: B018 -- authenticates
        except exceptions.APIException as exc:
            error = exc
        return cls(request=request, response=response, api_request=api_request, auth_error=error)


def caller(info: Info, *scopes: str, group: str = "") -> tuple[User, ApiKey | None]:
    """The authenticated user and key, holding one of ``scopes``; else the REST API's error.

    ``group`` is the rate-limit group of the REST endpoint that does the same (see
    ``limits.rate_limit``).
    """
    context: GraphQLContext = info.context
    if context.auth_error is not None:
        raise context.auth_error
    request = context.api_request
    if not (request.user and request.user.is_authenticated):
        raise exceptions.NotAuthenticated()
    if scopes:
        permission = (
            scope_required(scopes[0]) if len(scopes) == 1 else any_scope_required(*scopes)
        )()
        if not permission.has_permission(request, None):
            raise exceptions.PermissionDenied(permission.message, code=permission.code)
    if group:
        rate_limit(request, group)
    api_key = request.auth if isinstance(request.auth, ApiKey) else None
    return request.user, api_key
