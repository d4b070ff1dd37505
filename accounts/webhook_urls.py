"""Routes of the webhook secret API (under /api/v1)."""

from accounts import webhook_views
from mlplatform.api.routes import route

urlpatterns = [
    *route("webhooks/secret", webhook_views.WebhookSecretView.as_view(), "webhook-secret"),
    *route(
        "webhooks/secret/rotate",
        webhook_views.WebhookSecretRotateView.as_view(),
        "webhook-secret-rotate",
    ),
]
