"""OWASP API9:2023 Improper Inventory Management.

The OpenAPI schema at ``/api/schema/`` is the inventory of the HTTP API: every route of
``/api/v1`` and ``/v2`` with every method it serves is documented, nothing documented is
missing, and the security each operation documents is what the server enforces. Outside the
API there are only the known surfaces (probes, metrics, GraphQL, docs, admin, landing page):
no debug or forgotten routes.
"""

import re
import uuid

import pytest
from django.conf import settings
from django.urls import URLPattern, URLResolver, get_resolver
from rest_framework.test import APIClient

METHODS = ("get", "post", "put", "patch", "delete")
API_PREFIXES = ("api/v1/", "v2")
# Routes of the API that are deliberately not operations of the schema, and why.
UNDOCUMENTED = {
    "api/v1/": "the API root: an index of links for the browsable API",
    "api/v1/health": "the liveness probe /health under the tutorial's base URL",
}
# WebSockets, which are no Django routes and which OpenAPI cannot describe, and where they are.
SOCKETS = {"/api/v1/predict/ws": "docs/websockets.md"}
# Every public surface outside the API, by route prefix.
KNOWN_SURFACES = (
    "",  # the landing page
    "health",
    "ready",
    "metrics",
    "demo/websocket",
    "graphql",
    "api/schema/",
    "api/docs/",
    "api-auth/",
    "admin/",
)
SUSPICIOUS = re.compile(
    r"debug|__|silk|phpinfo|(^|/)tests?(/|$)|swagger-ui\.html|\.env|backup|dump|shell", re.I
)


def _routes(patterns=None, prefix: str = ""):
    """(route text, view or None) for every URL pattern, includes flattened."""
    for pattern in patterns if patterns is not None else get_resolver().url_patterns:
        text = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, text)
        elif isinstance(pattern, URLPattern):
            yield text, pattern.callback


def _normalised(route: str) -> str:
    """``api/v1/keys/<int:pk>/`` and ``/api/v1/keys/{id}`` both become ``api/v1/keys/{}``."""
    route = re.sub(r"<[^>]+>|\{[^}]+\}", "{}", route.lstrip("/").lstrip("^"))
    return route.rstrip("/") if route.rstrip("/") else route


def _served(patterns=None) -> dict[str, set[str]]:
    """API route -> the methods its view implements (regex fallbacks are not routes)."""
    served: dict[str, set[str]] = {}
    for route, callback in _routes(patterns):
        if not route.startswith(API_PREFIXES) or route.startswith("^"):
            continue
        view = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
        methods = {m for m in METHODS if view is not None and hasattr(view, m)}
        served.setdefault(_normalised(route), set()).update(methods)
    return served


@pytest.fixture
def schema(db) -> dict:
    response = APIClient().get("/api/schema/", HTTP_ACCEPT="application/vnd.oai.openapi+json")
    assert response.status_code == 200
    return response.json()


def _documented(schema: dict) -> dict[str, set[str]]:
    return {
        _normalised(path): {m for m in item if m in METHODS}
        for path, item in schema["paths"].items()
    }


def test_every_api_route_and_method_is_documented_and_nothing_else(schema):
    served = _served()
    documented = _documented(schema)
    for route in UNDOCUMENTED:
        served.pop(_normalised(route))

    assert len(served) >= 30
    assert {r: m for r, m in served.items() if documented.get(r) != m} == {}
    assert set(documented) == set(served)


def test_the_inventory_notices_a_route_that_is_not_documented(schema):
    """The control: an extra route shows up as a difference."""
    from django.urls import path

    patterns = [path("api/v1/forgotten", lambda request: None), *get_resolver().url_patterns]

    assert set(_served(patterns)) - set(_documented(schema)) == {"api/v1/forgotten"} | {
        _normalised(route) for route in UNDOCUMENTED
    }


def test_the_only_websockets_are_the_documented_ones():
    from importlib import import_module

    served = {}
    for dotted in settings.WEBSOCKET_HANDLERS:
        served.update(import_module(dotted).ROUTES)

    assert {path.rstrip("/") for path in served} == set(SOCKETS)
    for document in SOCKETS.values():
        assert (settings.BASE_DIR / document).is_file()


def test_outside_the_api_there_are_only_the_known_surfaces():
    unknown = [
        route
        for route, _ in _routes()
        if not route.startswith(API_PREFIXES)
        and not any(
            route == surface or (surface and route.startswith(surface))
            for surface in KNOWN_SURFACES
        )
    ]
    assert unknown == []


def test_no_debug_or_forgotten_routes_exist():
    suspicious = [route for route, _ in _routes() if SUSPICIOUS.search(route)]

    assert suspicious == []
    assert not settings.DEBUG
    assert not {"debug_toolbar", "silk", "django_extensions", "django.contrib.admindocs"} & set(
        settings.INSTALLED_APPS
    )


@pytest.mark.parametrize("url", ["/__debug__/", "/debug/", "/api/v0/predict", "/api/v2/predict"])
def test_unlisted_paths_answer_a_plain_404(db, url):
    response = APIClient().get(url)

    assert response.status_code == 404
    assert response.json()["code"] == "not_found"


def _example_path(path: str, operation: dict) -> str:
    """The path with its parameters filled in: a number or a UUID that names nothing."""
    for parameter in operation.get("parameters", ()):
        if parameter["in"] == "path":
            kind = parameter["schema"].get("type")
            value = "987654" if kind == "integer" else str(uuid.uuid4())
            path = path.replace("{" + parameter["name"] + "}", value)
    return path


def test_documented_security_is_what_the_server_enforces(schema):
    """Documented as needing credentials -> 401 without them; documented as open -> not 401."""
    mismatches = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in METHODS:
                continue
            security = operation.get("security") or [{}]
            public = {} in security
            response = getattr(APIClient(), method)(
                _example_path(path, operation), {}, format="json"
            )
            refused = response.status_code == 401
            if public == refused:
                mismatches.append((method.upper(), path, response.status_code))
    assert mismatches == []


def test_operations_closed_to_api_keys_do_not_document_them(schema, user, make_key):
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=make_key(user))
    mismatches = []
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            if method not in METHODS or not path.startswith("/api/v1/"):
                continue
            security = operation.get("security") or [{}]
            if {} in security:
                continue
            documented = any("ApiKeyAuth" in scheme for scheme in security)
            response = getattr(client, method)(_example_path(path, operation), {}, format="json")
            # Closed to keys: refused as credentials of the wrong kind, or not read at all.
            body = response.json() if response.content else None
            code = body.get("code") if isinstance(body, dict) else None
            refused = (response.status_code, code) in (
                (403, "user_credentials_required"),
                (401, "not_authenticated"),
            )
            if documented == refused:
                mismatches.append((method.upper(), path, response.status_code))
    assert mismatches == []


def test_every_api_v1_operation_documents_its_errors_in_the_one_shape(schema):
    error = schema["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"detail", "code"}
    missing = []
    for path, item in schema["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method, operation in item.items():
            responses = operation["responses"]
            for code in ("401", "429", "503"):
                content = responses.get(code, {}).get("content", {}).get("application/json", {})
                if content.get("schema", {}).get("$ref") != "#/components/schemas/Error":
                    missing.append((method.upper(), path, code))
            if "headers" not in responses.get("401", {}):
                missing.append((method.upper(), path, "WWW-Authenticate"))
    assert missing == []
