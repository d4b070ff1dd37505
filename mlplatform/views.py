"""The API root and the JSON error pages outside DRF views."""

from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from mlplatform.middleware import error_response


def not_found(request, exception=None):
    return error_response(request, f"No route matches {request.path!r}.", "not_found", status=404)


def server_error(request):
    return error_response(request, "Internal server error.", "server_error", status=500)


def bad_request(request, exception=None):
    return error_response(request, "Bad request.", "bad_request", status=400)


def permission_denied(request, exception=None):
    return error_response(request, "Permission denied.", "permission_denied", status=403)


class ApiRootView(APIView):
    """The v1 API's entry points."""

    permission_classes = [AllowAny]

    @extend_schema(exclude=True)
    def get(self, request):
        def link(name: str, **kwargs) -> str:
            return request.build_absolute_uri(reverse(name, kwargs=kwargs or None))

        return Response(
            {
                "predict": link("predict"),
                "predictions": link("prediction-list"),
                "models": link("model-list"),
                "keys": link("apikey-list"),
                "token": link("token-obtain"),
                "login": link("login"),
                "schema": link("schema"),
                "docs": link("docs"),
                "health": link("health"),
                "ready": link("ready"),
            }
        )
