"""Top-level routes: the v1 API, probes, metrics, docs, admin and the landing page."""

from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from mlplatform import health, views
from mlplatform.dashboard import dashboard_view
from mlplatform.metrics import metrics_view
from predictions.graphql.schema import schema as graphql_schema
from predictions.graphql.views import PlatformGraphQLView

admin.site.site_header = "ML platform"
admin.site.site_title = "ML platform admin"
admin.site.index_title = "Control room"

api_v1 = [
    path("", views.ApiRootView.as_view(), name="api-root"),
    path("", include("accounts.urls")),
    path("", include("accounts.webhook_urls")),
    path("", include("predictions.urls")),
]

urlpatterns = [
    path("", views.landing, name="landing"),
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
    path("api-auth/", include("rest_framework.urls")),
    path("admin/dashboard/", admin.site.admin_view(dashboard_view), name="admin-dashboard"),
    path("admin/", admin.site.urls),
    path("metrics", metrics_view, name="metrics"),
]

handler400 = "mlplatform.views.bad_request"
handler403 = "mlplatform.views.permission_denied"
handler404 = "mlplatform.views.not_found"
handler500 = "mlplatform.views.server_error"
