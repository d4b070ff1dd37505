"""Health and readiness probes, the landing page, the API root, docs and JSON error pages."""

import re
from html import unescape

import pytest
from rest_framework.test import APIClient

from mlplatform.middleware import FORM_BYTES
from predictions.models import ModelVersion


@pytest.fixture
def anonymous():
    return APIClient()


def test_health_answers_healthy_with_a_timestamp(anonymous, db):
    body = anonymous.get("/health").json()

    assert body["status"] == "healthy"
    assert body["timestamp"].startswith("20")


@pytest.mark.usefixtures("demo_models")
def test_ready_checks_database_cache_broker_and_models(anonymous):
    response = anonymous.get("/ready")

    assert response.status_code == 200
    checks = response.json()["checks"]
    assert set(checks) == {"database", "cache", "broker", "models"}
    assert all(c["status"] == "ok" for c in checks.values())


@pytest.mark.usefixtures("demo_models")
def test_ready_is_503_when_no_model_can_serve(anonymous):
    from predictions.catalogue.versions import registry_touch

    ModelVersion.objects.update(status="retired")
    registry_touch()

    response = anonymous.get("/ready/")

    assert response.status_code == 503
    assert response.json()["checks"]["models"]["status"] == "error"
    assert "no model has an active version" in response.json()["checks"]["models"]["error"]


def _links(html: str) -> list[str]:
    return [unescape(href) for href in re.findall(r'<a href="([^"]+)"', html)]


@pytest.mark.usefixtures("demo_models")
def test_landing_page_links_everything_and_lists_models(anonymous):
    html = anonymous.get("/").content.decode()

    # Everything the README's map of the API and docs/api.md list outside /api/v1.
    for link in (
        "/api/v1/",
        "/api/docs/",
        "/api/schema/",
        "/admin/",
        "/admin/dashboard/",
        "/health",
        "/ready",
        "/metrics",
        "/graphql",
        "/v2",
        "/api/v1/predict",
    ):
        assert link in _links(html), link
    assert "<code>digits</code>" in html


@pytest.mark.usefixtures("demo_models")
def test_every_link_of_the_landing_page_answers_a_signed_out_visitor(anonymous):
    links = _links(anonymous.get("/").content.decode())

    assert len(links) > 15
    for link in links:
        response = anonymous.get(link, HTTP_ACCEPT="text/html,*/*;q=0.8")
        if response.status_code == 302:  # the admin, its dashboard and GraphiQL: sign in first
            assert "login/?next=" in response["Location"], link
        else:
            # The API's pages that need a login say so: 401 with the browsable page's login
            # link, or 200.
            assert response.status_code in (200, 401), (link, response.status_code)


def test_api_root_lists_the_entry_points(anonymous, db):
    body = anonymous.get("/api/v1/").json()

    assert body["predict"].endswith("/api/v1/predict")
    assert body["docs"].endswith("/api/docs/")


def test_openapi_schema_documents_the_api_once_per_route_with_security(anonymous, db):
    response = anonymous.get("/api/schema/", HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    schema = response.json()
    paths = schema["paths"]
    assert "/api/v1/predict" in paths and "/api/v1/predict/" not in paths
    assert "/api/v1/keys/{id}" in paths
    assert "/api/v1/predictions" in paths
    request_body = paths["/api/v1/predict"]["post"]["requestBody"]["content"]
    assert "application/json" in request_body
    assert "ApiKeyAuth" in schema["components"]["securitySchemes"]


def test_swagger_ui_is_served_from_this_server_without_a_cdn(anonymous, db):
    html = anonymous.get("/api/docs/").content.decode()

    assert "/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js" in html
    assert "cdn" not in html.lower()


def test_unknown_routes_answer_json_404(anonymous, db):
    response = anonymous.get("/api/v1/nothing-here")

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def test_metrics_are_exposed_in_prometheus_text(anonymous, db):
    response = anonymous.get("/metrics")

    assert response.status_code == 200
    assert b"django_http_responses_total_by_status_view_method_total" in response.content


def test_the_api_body_limit_does_not_apply_to_admin_uploads(settings, client, db):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BODY_BYTES": 100, "MAX_ARTIFACT_BYTES": 10_000}
    body = "x" * 1000

    api = client.post("/api/v1/predict", body, content_type="application/json")
    admin_ok = client.post("/admin/login/", body, content_type="text/plain")
    # The admin takes an artifact of MAX_ARTIFACT_BYTES and the rest of its form.
    too_large = "x" * (10_000 + FORM_BYTES + 1)
    admin_too_large = client.post("/admin/login/", too_large, content_type="text/plain")

    assert api.status_code == 413
    assert admin_ok.status_code != 413
    assert admin_too_large.status_code == 413


def test_a_redis_that_does_not_answer_gives_503_not_500(settings, key_client, demo_models):
    # Nothing listens on port 1: django-redis fails to connect, as when Redis is down.
    settings.CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": "redis://127.0.0.1:1/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5},
        }
    }

    response = key_client.post(
        "/api/v1/predict", {"input_data": [5.1, 3.5, 1.4, 0.2]}, format="json"
    )

    assert response.status_code == 503
    assert response.json()["code"] == "cache_unavailable"
    assert response["Retry-After"] == "5"
