"""Thin views: read and rotate your webhook signing secret."""

from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.permissions import UserCredentialsOnly
from accounts.services import webhook_secret_rotate

SECRET_RESPONSE = inline_serializer(
    "WebhookSecret",
    {"secret": serializers.CharField(help_text="whsec_ + base64 of the 32-byte HMAC key.")},
)


class WebhookSecretPermission(UserCredentialsOnly):
    """The secret signs events for the user: like API keys, it needs the user's own login."""

    message = "API keys cannot read or rotate the webhook secret; use a JWT or a session."


def _secret_response(secret: str) -> Response:
    response = Response({"secret": secret})
    response["Cache-Control"] = "no-store"
    return response


class WebhookSecretView(APIView):
    """Your webhook signing secret: every event sent to your callback URLs is signed with it."""

    permission_classes = [IsAuthenticated, WebhookSecretPermission]

    @extend_schema(responses=SECRET_RESPONSE)
    def get(self, request):
        return _secret_response(request.user.webhook_secret)


class WebhookSecretRotateView(APIView):
    """Replace your webhook signing secret; events signed from now on use the new one."""

    permission_classes = [IsAuthenticated, WebhookSecretPermission]

    @extend_schema(request=None, responses=SECRET_RESPONSE)
    def post(self, request):
        return _secret_response(webhook_secret_rotate(user=request.user))
