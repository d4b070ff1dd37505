"""OWASP API8:2023 Security Misconfiguration.

The production profile passes Django's deployment checklist, and fails it without a cache its
processes share for the rate-limit counters; it refuses to start in debug mode;
responses carry the security headers (HSTS over HTTPS); CORS admits only the configured origins
and never credentials; compression never touches an answer that carries a secret or a CSRF
token; errors never show a traceback.
"""

import gzip
import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings as django_settings
from rest_framework.test import APIClient

from tests.security.conftest import IRIS, jwt_client

ROOT = Path(django_settings.BASE_DIR)
ALLOWED_ORIGIN = "https://app.example.com"


# What an operator sets for a deployment; the defaults are under test, so the tests' own
# environment (CI serves plain HTTP) must not leak in.
_DEPLOYMENT_CHOICES = frozenset(
    {"DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CORS_ALLOWED_ORIGINS"}
)


def production_env(tmp_path, **extra) -> dict[str, str]:
    """The production variables (nothing needs to listen on those ports: port 1 is closed)."""
    clean = {
        k: v
        for k, v in os.environ.items()
        if k not in _DEPLOYMENT_CHOICES and not k.startswith("SECURE_")
    }
    return {
        **clean,
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
        "DATABASE_URL": "postgres://postgres@127.0.0.1:1/test",
        "REDIS_URL": "redis://127.0.0.1:1/13",
        "SECRET_KEY": secrets.token_urlsafe(64)[:50],
        "JWT_SIGNING_KEY": secrets.token_urlsafe(64)[:50],
        "ALLOWED_HOSTS": "api.example.com",
        "MLPLATFORM_VAR_DIR": str(tmp_path),
        **extra,
    }


def manage(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "manage.py"), *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


# --- The production profile -------------------------------------------------------------


@pytest.mark.parametrize(
    "database", ["postgres://postgres@127.0.0.1:5432/test", "postgres://postgres@127.0.0.1:1/test"]
)
def test_check_deploy_passes_on_production_without_reaching_the_database(tmp_path, database):
    env = production_env(tmp_path, DATABASE_URL=database, REDIS_URL="redis://127.0.0.1:6379/13")

    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert done.returncode == 0, done.stderr + done.stdout
    assert "no issues" in done.stdout


def test_check_deploy_fails_when_a_safeguard_is_turned_off(tmp_path):
    """The control: the check above can fail (HSTS off is a deployment warning)."""
    env = production_env(tmp_path, SECURE_HSTS_SECONDS="0")

    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert done.returncode != 0
    assert "security.W004" in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("access", "warning"),
    [
        ({"MLPLATFORM_METRICS_ACCESS": "open"}, "mlplatform.W001"),
        ({"MLPLATFORM_METRICS_NETWORKS": "127.0.0.0/8,0.0.0.0/0"}, "mlplatform.W002"),
    ],
)
def test_check_deploy_warns_when_metrics_would_be_open_to_the_world(tmp_path, access, warning):
    env = production_env(tmp_path, REDIS_URL="redis://127.0.0.1:6379/13", **access)

    done = manage(env, "check", "--deploy", "--fail-level", "WARNING")

    assert done.returncode != 0
    assert warning in done.stderr + done.stdout


def test_check_deploy_fails_on_production_without_redis(tmp_path):
    """A process per core, each counting in its own memory, would admit N requests per process."""
    env = production_env(tmp_path)
    del env["REDIS_URL"]

    deploy = manage(env, "check", "--deploy", "--fail-level", "WARNING")
    plain = manage(env, "check")

    assert deploy.returncode != 0
    assert "django_ratelimit.E003" in deploy.stderr + deploy.stdout
    assert "LocMemCache is not a shared cache" in deploy.stderr + deploy.stdout
    assert plain.returncode != 0  # an error, not only a deployment warning


def test_the_embedded_profile_silences_the_shared_cache_checks(tmp_path):
    """Its one web process counts every request in its memory: the checks do not apply."""
    env = {
        k: v for k, v in production_env(tmp_path).items() if k not in ("DATABASE_URL", "REDIS_URL")
    }

    done = manage(env, "check")

    assert done.returncode == 0, done.stderr + done.stdout
    assert "django_ratelimit" not in done.stderr + done.stdout


@pytest.mark.parametrize("debug", ["1", "true", "on"])
def test_production_refuses_to_start_with_debug_on(tmp_path, debug):
    done = manage(production_env(tmp_path, DEBUG=debug), "check")

    assert done.returncode != 0
    assert "DEBUG must be off" in done.stderr


def test_production_turns_on_https_safeguards_by_default(tmp_path):
    code = (
        "import django, json; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.DEBUG, s.SECURE_SSL_REDIRECT, s.SESSION_COOKIE_SECURE, "
        "s.CSRF_COOKIE_SECURE, s.SECURE_HSTS_SECONDS, s.SECURE_CONTENT_TYPE_NOSNIFF, "
        "s.X_FRAME_OPTIONS, s.CORS_ALLOW_CREDENTIALS, s.ALLOWED_HOSTS]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=production_env(tmp_path),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        False,
        True,
        True,
        True,
        31_536_000,
        True,
        "DENY",
        False,
        ["api.example.com"],
    ]


# --- Headers ----------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["/health", "/api/v1/models", "/api/v1/nothing", "/admin/login/"])
def test_security_headers_are_on_every_kind_of_answer(alice, url):
    response = alice.get(url)

    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"
    assert response["Referrer-Policy"] == "same-origin"


def test_hsts_is_sent_over_https_on_production_settings(alice, settings):
    settings.SECURE_HSTS_SECONDS = 31_536_000

    over_https = alice.get("/api/v1/models", secure=True)
    over_http = alice.get("/api/v1/models")

    assert over_https["Strict-Transport-Security"].startswith("max-age=31536000")
    assert "Strict-Transport-Security" not in over_http


def test_http_is_redirected_to_https_but_probes_are_not(db, settings):
    settings.SECURE_SSL_REDIRECT = True
    client = APIClient()

    redirected = client.get("/api/v1/models")
    probe = client.get("/health")

    assert redirected.status_code == 301
    assert redirected["Location"] == "https://testserver/api/v1/models"
    assert probe.status_code == 200


def test_errors_show_no_traceback_or_settings(alice):
    for response in (
        alice.get("/api/v1/nothing-here"),
        alice.get("/api/v1/predict/not-a-uuid"),
        alice.post("/api/v1/predict", b"{oops", content_type="application/json"),
    ):
        text = response.content.decode()
        assert 400 <= response.status_code < 500
        assert response["Content-Type"].startswith("application/json")
        assert "Traceback" not in text and "settings" not in text.lower()
        assert 'File "' not in text


# --- CORS -------------------------------------------------------------------------------


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [ALLOWED_ORIGIN]
    settings.CORS_ALLOW_ALL_ORIGINS = False
    return settings


def test_an_allowed_origin_is_answered_without_credentials(alice, cors):
    response = alice.get("/api/v1/models", HTTP_ORIGIN=ALLOWED_ORIGIN)

    assert response["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "Access-Control-Allow-Credentials" not in response
    assert "x-ratelimit-remaining" in response["Access-Control-Expose-Headers"]


def test_a_preflight_from_an_allowed_origin_admits_the_api_headers(db, cors):
    response = APIClient().options(
        "/api/v1/predict",
        HTTP_ORIGIN=ALLOWED_ORIGIN,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="x-api-key, content-type",
    )

    assert response.status_code == 200
    assert response["Access-Control-Allow-Origin"] == ALLOWED_ORIGIN
    assert "x-api-key" in response["Access-Control-Allow-Headers"]
    assert "Access-Control-Allow-Credentials" not in response


@pytest.mark.parametrize(
    "origin",
    [
        "https://evil.example",
        "https://app.example.com.evil.example",
        "null",
        "http://app.example.com",
    ],
)
def test_an_unknown_origin_gets_no_cors_headers(alice, cors, origin):
    simple = alice.get("/api/v1/models", HTTP_ORIGIN=origin)
    preflight = APIClient().options(
        "/api/v1/predict", HTTP_ORIGIN=origin, HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )

    for response in (simple, preflight):
        assert "Access-Control-Allow-Origin" not in response
        assert "Access-Control-Allow-Credentials" not in response


def test_cors_never_reaches_the_admin(db, cors):
    response = APIClient().get("/admin/login/", HTTP_ORIGIN=ALLOWED_ORIGIN)

    assert "Access-Control-Allow-Origin" not in response


def test_a_wildcard_origin_never_comes_with_credentials(alice, settings):
    settings.CORS_ALLOW_ALL_ORIGINS = True

    response = alice.get("/api/v1/models", HTTP_ORIGIN="https://anyone.example")

    assert response["Access-Control-Allow-Origin"] == "*"
    assert "Access-Control-Allow-Credentials" not in response


# --- Compression ------------------------------------------------------------------------


@pytest.mark.usefixtures("demo_models")
def test_a_large_list_is_gzipped_when_the_client_accepts_it(alice):
    for _ in range(10):
        alice.post("/api/v1/predict", {"input_data": IRIS}, format="json")

    zipped = alice.get("/api/v1/predictions", HTTP_ACCEPT_ENCODING="gzip")
    plain = alice.get("/api/v1/predictions")

    assert zipped["Content-Encoding"] == "gzip"
    assert "Accept-Encoding" in zipped["Vary"]
    assert json.loads(gzip.decompress(zipped.content)) == plain.json()
    assert "Content-Encoding" not in plain


def test_answers_with_secrets_are_never_gzipped(user):
    client, _ = jwt_client(user.username)
    for i in range(20):  # a list long enough to be worth compressing
        client.post("/api/v1/keys", {"name": f"key {i}", "scopes": ["read"]}, format="json")

    created = client.post(
        "/api/v1/keys",
        {"name": "x" * 90, "scopes": ["read"]},
        format="json",
        HTTP_ACCEPT_ENCODING="gzip",
    )
    secret = client.get("/api/v1/webhooks/secret", HTTP_ACCEPT_ENCODING="gzip")
    listed = client.get("/api/v1/keys?page_size=100", HTTP_ACCEPT_ENCODING="gzip")

    assert created.status_code == 201 and created["Cache-Control"] == "no-store"
    assert secret["Cache-Control"] == "no-store"
    assert "Content-Encoding" not in created
    assert "Content-Encoding" not in secret
    assert listed["Content-Encoding"] == "gzip"  # the control: the same client, no secret


@pytest.mark.parametrize("url", ["/admin/login/", "/api-auth/login/"])
def test_html_pages_with_csrf_tokens_are_never_gzipped(db, url):
    response = APIClient().get(url, HTTP_ACCEPT_ENCODING="gzip")

    assert response.status_code == 200
    assert "csrfmiddlewaretoken" in response.content.decode()
    assert len(response.content) > 500
    assert "Content-Encoding" not in response
