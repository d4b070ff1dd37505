"""Liveness and readiness probes."""

import os
import time
import uuid

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from mlplatform.conf import platform_setting
from predictions.registry import registry

# Set by ``manage.py serve`` for its web processes: the path of a file whose presence means the
# server is draining (stopping after DRAIN_SECONDS), so /ready must fail while requests are
# still served.
DRAINING_FLAG_VARIABLE = "MLPLATFORM_DRAINING_FLAG"


@require_GET
def health(request):
    """Liveness: the process answers."""
    return JsonResponse({"status": "healthy", "timestamp": timezone.now().isoformat()})


def _check_database() -> None:
    pool = getattr(connection, "pool", None)
    if pool is None:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        return
    # Borrowed from the pool directly, to wait READY_TIMEOUT for a connection rather than the
    # requests' DB_POOL_TIMEOUT: a probe times out within a few seconds. (Django opens its pool
    # at the first connection; the probe may come first.)
    pool.open()
    with pool.connection(timeout=platform_setting("READY_TIMEOUT")) as borrowed:
        borrowed.execute("SELECT 1")


def _check_cache() -> None:
    key = f"ready:{uuid.uuid4().hex}"
    cache.set(key, "1", 5)
    if cache.get(key) != "1":
        raise RuntimeError("the cache did not return what was written")
    cache.delete(key)


def _check_broker() -> None:
    if not get_broker().ping():
        raise RuntimeError("the task broker did not answer")


def _check_models() -> None:
    entries = registry.models()
    if not any(m.active_versions for m in entries):
        raise RuntimeError("no model has an active version")
    for model in entries:
        for version in model.active_versions:
            registry.predictor(version)


CHECKS = {
    "database": _check_database,
    "cache": _check_cache,
    "broker": _check_broker,
    "models": _check_models,
}
# Checks that read the database (the broker is django-q2's ORM broker): not run without it,
# where each would wait out the pool's timeout.
NEED_THE_DATABASE = ("broker", "models")


@require_GET
def ready(request):
    """Readiness: database, cache, broker and models all answer; 503 otherwise, within about
    ``READY_TIMEOUT`` seconds when the database is gone, and while the server drains. The
    upstreams of remote versions are reported under ``remote`` without deciding readiness."""
    flag = os.environ.get(DRAINING_FLAG_VARIABLE)
    if flag and os.path.exists(flag):
        body = {"status": "draining", "timestamp": timezone.now().isoformat(), "checks": {}}
        return JsonResponse(body, status=503)
    results = {}
    for name, check in CHECKS.items():
        if name in NEED_THE_DATABASE and results["database"]["status"] != "ok":
            results[name] = {"status": "error", "error": "not checked: no database"}
            continue
        started = time.perf_counter()
        try:
            check()
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready", reported by name
            results[name] = {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        else:
            results[name] = {
                "status": "ok",
                "duration_ms": round((time.perf_counter() - started) * 1000, 2),
            }
    ok = all(result["status"] == "ok" for result in results.values())
    body = {
        "status": "ready" if ok else "not_ready",
        "timestamp": timezone.now().isoformat(),
        "checks": results,
    }
    if results["models"]["status"] == "ok":
        # Shown, not counted: a remote server that is down fails its own version's requests
        # (502), while this process goes on serving everything else.
        from predictions.services.remote import remote_versions_health

        if remote := remote_versions_health(timeout=platform_setting("READY_TIMEOUT") * 2 / 3):
            body["remote"] = remote
    return JsonResponse(body, status=200 if ok else 503)
