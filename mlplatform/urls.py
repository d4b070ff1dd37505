"""Top-level routes: the v1 API, probes, metrics, docs, admin and the landing page."""

from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from accounts.login import ratelimit_login_form
from mlplatform import health, views
from mlplatform.metrics import metrics_view
from predictions import pages
from predictions.dashboard import dashboard_view
from predictions.graphql.schema import schema as graphql_schema
from predictions.graphql.views import PlatformGraphQLView

api_v1 = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    path("health", health.health, name="api-health"),  # the tutorial's path under the base URL
    path("health/", health.health),
    path("", include("accounts.urls")),
    path("", include("accounts.webhook_urls")),
    path("", include("predictions.rest.urls")),
    path("", include("predictions.streams.urls")),
]

# The browsable API's session login and logout, as ``include("rest_framework.urls")`` routes
# them, but with the password form counted in the ``auth`` rate limits like the API's login.
browsable_api_auth = [
    path(
        "login/",
        ratelimit_login_form(
            auth_views.LoginView.as_view(template_name="rest_framework/login.html")
        ),
        name="login",
    ),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
]

urlpatterns = [
    path("", pages.landing, name="landing"),
    path("api/v1/", include(api_v1)),
    path("health", health.health, name="health"),
    path("health/", health.health),
    path("ready", health.ready, name="ready"),
    path("ready/", health.ready),
    path("", include("predictions.v2.urls")),  # /v2/...: the Open Inference Protocol
    path("graphql", PlatformGraphQLView.as_view(schema=graphql_schema), name="graphql"),
    path("graphql/", PlatformGraphQLView.as_view(schema=graphql_schema)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("api-auth/", include((browsable_api_auth, "rest_framework"))),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
    path("demo/websocket", pages.websocket_demo, name="websocket-demo"),
]

handler400 = "mlplatform.views.bad_request"
handler403 = "mlplatform.views.permission_denied"
handler404 = "mlplatform.views.not_found"
handler500 = "mlplatform.views.server_error"
