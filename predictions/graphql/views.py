"""The /graphql endpoint: strawberry's Django view with the REST API's auth and error shapes."""

import re

import orjson
from cross_web import HTTPException
from django.conf import settings
from django.contrib.auth.views import redirect_to_login
from django.http import JsonResponse
from django.middleware.csrf import get_token
from django.templatetags.static import static
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import csrf_exempt
from rest_framework.exceptions import ParseError
from strawberry.django.views import GraphQLView
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from mlplatform.api.parsers import loads
from predictions.graphql.auth import GraphQLContext
from predictions.graphql.errors import platform_error

LOGIN_URL = "/api-auth/login/"

# strawberry's GraphiQL page loads React, GraphiQL and its plugin from unpkg.com.
_CDN_URL = re.compile(r"https://unpkg\.com/(@?[^@\"]+)@([^/\"]+)/([^\"]+)")
_CDN_ATTRIBUTES = re.compile(r'\s+(?:integrity="[^"]*"|crossorigin(?==|\s|>)(?:="[^"]*")?)')


def same_origin(page: str) -> str:
    """The GraphiQL page with each file it loads from the CDN served by this server instead:
    the same package version, vendored as ``predictions/static/graphiql/<package>-<version>/``,
    so that GraphiQL works offline."""

    def local(match: re.Match) -> str:
        package, version, file = match.groups()
        return static(f"graphiql/{package.lstrip('@').replace('/', '-')}-{version}/{file}")

    # The integrity hashes name the CDN's bytes: the vendored files leave out the comment that
    # points at their source maps, which are not shipped.
    return _CDN_ATTRIBUTES.sub("", _CDN_URL.sub(local, page))


# CSRF is checked where it matters, as in DRF: by SessionAuthentication, for callers that use a
# session cookie. API keys and bearer tokens carry no ambient credentials to forge.
@method_decorator(csrf_exempt, name="dispatch")
class PlatformGraphQLView(GraphQLView):
    """GraphQL over HTTP; GraphiQL (GET from a browser) for signed-in users, or any in DEBUG."""

    graphql_ide = "graphiql"

    def get_context(self, request, response) -> GraphQLContext:
        return GraphQLContext.for_request(request, response)

    def render_graphql_ide(self, request):
        if settings.DEBUG or request.user.is_authenticated:
            get_token(request)  # GraphiQL sends the CSRF cookie back as X-CSRFToken
            response = super().render_graphql_ide(request)
            response.content = same_origin(response.content.decode())
            return response
        return redirect_to_login(request.get_full_path(), LOGIN_URL)

    def decode_json(self, data: str | bytes) -> object:
        # As the REST API parses: orjson, with its limits and their messages.
        try:
            return loads(data.encode() if isinstance(data, str) else data)
        except ParseError as exc:
            raise HTTPException(400, str(exc.detail)) from None

    def encode_json(self, data: object) -> bytes:
        # Results are plain JSON values by now (scalars are serialized); orjson is faster.
        return orjson.dumps(data, default=str)

    def process_result(self, request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if result.errors:
            result.errors = [platform_error(error) for error in result.errors]
        return super().process_result(request, result)

    def dispatch(self, request, *args, **kwargs):
        response = super().dispatch(request, *args, **kwargs)
        if (
            response.get("Content-Type", "").startswith("text/plain")
            and response.status_code >= 400
        ):
            # strawberry answers a request it cannot run (bad JSON, no query, a mutation over
            # GET) in plain text: give it the GraphQL shape, keeping the status.
            message = response.content.decode(errors="replace")
            body = {"errors": [{"message": message, "extensions": {"code": "bad_request"}}]}
            return JsonResponse(body, status=response.status_code)
        return response
