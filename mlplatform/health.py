"""Liveness and readiness probes."""

import os
import time
import uuid
from collections.abc import Callable

from django.core.cache import cache
from django.db import connection
from django.http import JsonResponse
from django.utils import timezone
from django.views.decorators.http import require_GET
from django_q.brokers import get_broker

from mlplatform.conf import env, platform_setting

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


CHECKS: dict[str, Callable[[], None]] = {
    "database": _check_database,
    "cache": _check_cache,
    "broker": _check_broker,
}
# Checks that read the database (the broker is django-q2's ORM broker): not run without it,
# where each would wait out the pool's timeout.
NEED_THE_DATABASE = {"broker"}


# Shown in /ready's body under their name, without deciding readiness (the upstreams of remote
# versions: one that is down fails its own versions' requests, not the process).
REPORTS: dict[str, Callable[[float], dict | None]] = {}


def readiness_check(name: str, check: Callable[[], None], *, needs_database: bool) -> None:
    """Add an app's check to ``/ready``: ``check`` raises when the process is not ready."""
    CHECKS[name] = check
    if needs_database:
        NEED_THE_DATABASE.add(name)


def readiness_report(name: str, report: Callable[[float], dict | None]) -> None:
    """Add an app's report to ``/ready``: ``report(timeout=...)`` gives what to show, or None."""
    REPORTS[name] = report


@require_GET
def ready(request):
    """Readiness: database, cache, broker and the apps' checks (models) all answer; 503
    otherwise, within about ``READY_TIMEOUT`` seconds when the database is gone, and while the
    server drains. The apps' reports (remote versions' upstreams) are shown when every check
    passed, without deciding readiness."""
    flag = env(DRAINING_FLAG_VARIABLE)
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
    if ok:
        for name, report in REPORTS.items():
            if shown := report(timeout=platform_setting("READY_TIMEOUT") * 2 / 3):
                body[name] = shown
    return JsonResponse(body, status=200 if ok else 503)
