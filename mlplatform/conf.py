"""The platform's own settings: one namespaced dict, ``settings.PLATFORM``, with defaults."""

import os
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

DEFAULTS: dict[str, Any] = {
    # Model served when a request names none.
    "DEFAULT_MODEL": "iris",
    # Whether the web server's lean handlers serve the common case of their endpoints
    # (settings.LEAN_HANDLERS); off, every request goes through Django and DRF.
    "LEAN_HANDLERS": True,
    # Largest request body accepted by the JSON API, in bytes (413 beyond it).
    "MAX_BODY_BYTES": 1024 * 1024,
    # Largest artifact file a version may have, in bytes (413 beyond), whichever way it comes:
    # REST, the admin or register_model. A single-file ONNX graph cannot pass 2 GiB (protobuf).
    "MAX_ARTIFACT_BYTES": 2 * 1024**3,
    # Most active (not revoked, not expired) API keys one user may hold (409 beyond).
    "MAX_ACTIVE_API_KEYS": 25,
    # Batch jobs: largest upload (413 beyond), most rows sent as JSON, most rows in one job,
    # most unfinished jobs per user, and the rows a worker predicts and stores at a time.
    "MAX_UPLOAD_BYTES": 512 * 1024 * 1024,
    "MAX_BATCH_JSON_ROWS": 10_000,
    "MAX_BATCH_ROWS": 20_000_000,
    "MAX_ACTIVE_BATCH_JOBS": 5,
    "BATCH_CHUNK_ROWS": 100_000,
    # Seconds one task works on a job before it queues the rest as a new task: tasks stay
    # short, so a dead worker's task is handed out again after Q_RETRY (60 s), not after the
    # length of a whole job.
    "BATCH_TASK_SECONDS": 15.0,
    # Tasks that work on one job at once, each on every n-th chunk: the job's parts run on as
    # many workers as are free.
    "BATCH_PARALLEL_TASKS": 2,
    # Days an ended job (its rows, results and files) is kept after it ended; 0: for ever.
    "BATCH_RETENTION_DAYS": 30,
    # Webhooks: seconds to wait for a receiver (capped at 15), attempts in all, and the waits
    # after failed attempts 1, 2, ... (the last one repeats).
    "WEBHOOK_TIMEOUT": 10.0,
    "WEBHOOK_MAX_ATTEMPTS": 6,
    "WEBHOOK_RETRY_DELAYS": (5, 30, 120, 600, 3600),
    # Prefix for absolute links in webhook payloads ("" = relative links).
    "PUBLIC_BASE_URL": "",
    # Seconds an inference may take when the request sets no ``timeout``, and the most it may ask.
    "DEFAULT_TIMEOUT": 30.0,
    "MAX_TIMEOUT": 300.0,
    # How often each process asks the database whether the model registry changed.
    "REGISTRY_REFRESH_SECONDS": 1.0,
    # How long a process may answer for a verified key (and its owner's scopes) from memory.
    "API_KEY_CACHE_SECONDS": 1.0,
    # ``last_used_at`` of an API key is written at most this often.
    "API_KEY_TOUCH_SECONDS": 60,
    # Requests per principal (API key, else user, else client IP) and period, by group:
    # ``auth`` token and login (per IP: brute force), ``predict`` one-row predictions,
    # ``batch`` job submissions, ``stream`` prediction streams, ``api`` everything else.
    # A key's or user's ``rate_limits`` (admin) overrides these for that principal.
    "RATE_LIMITS": {
        "auth": "10/m",
        "predict": "600/m",
        "batch": "30/m",
        "stream": "30/m",
        "api": "1200/m",
    },
    # The ceiling of one user's requests by group, all of their keys and tokens together
    # (``auth`` is counted per IP, never per user).
    "USER_RATE_LIMITS": {
        "auth": "40/m",
        "predict": "2400/m",
        "batch": "120/m",
        "stream": "120/m",
        "api": "4800/m",
    },
    # Most features a model may take (so the widest row any request may send).
    "MAX_FEATURES": 10_000,
    # Pagination of lists.
    "PAGE_SIZE": 50,
    "MAX_PAGE_SIZE": 500,
    # Server-Sent Events (POST /predict/stream, batch job events): most rows in one prediction
    # stream, seconds between keep-alive comments of an idle stream, the most streams one web
    # process holds open at once (503 beyond) and for one user (429 beyond), and the seconds a
    # client may leave an event unread before its stream is dropped. The environment sets them
    # for a server's processes, as tests and benchmarks do.
    "MAX_STREAM_ROWS": int(os.environ.get("MLPLATFORM_MAX_STREAM_ROWS") or 1000),
    "STREAM_HEARTBEAT_SECONDS": float(os.environ.get("MLPLATFORM_STREAM_HEARTBEAT_SECONDS") or 15),
    "MAX_OPEN_STREAMS": int(os.environ.get("MLPLATFORM_MAX_OPEN_STREAMS") or 128),
    "MAX_OPEN_STREAMS_PER_USER": int(os.environ.get("MLPLATFORM_MAX_OPEN_STREAMS_PER_USER") or 16),
    "STREAM_SEND_TIMEOUT": float(os.environ.get("MLPLATFORM_STREAM_SEND_TIMEOUT") or 30),
    # WebSocket predictions (/api/v1/predict/ws; an open socket takes a stream slot above):
    # largest message in bytes (closed with 1009 beyond), rows of one socket being predicted or
    # waiting to be sent (no further message is read meanwhile), seconds without a message or
    # an answer before the server closes the socket (4408), seconds between the server's pings
    # (a pong must come within as long: 1011 if not), and rows refused for the rate limit one
    # after another before the socket is closed (4429).
    "WS_MAX_MESSAGE_BYTES": int(os.environ.get("MLPLATFORM_WS_MAX_MESSAGE_BYTES") or 1024 * 1024),
    "WS_MAX_IN_FLIGHT": int(os.environ.get("MLPLATFORM_WS_MAX_IN_FLIGHT") or 64),
    "WS_IDLE_SECONDS": float(os.environ.get("MLPLATFORM_WS_IDLE_SECONDS") or 300),
    "WS_PING_SECONDS": float(os.environ.get("MLPLATFORM_WS_PING_SECONDS") or 20),
    "WS_RATE_LIMIT_GRACE": int(os.environ.get("MLPLATFORM_WS_RATE_LIMIT_GRACE") or 10),
    # Seconds /ready waits for its checks before it answers 503 (probes time out at a few).
    "READY_TIMEOUT": 1.5,
    # Seconds ``manage.py serve`` keeps serving after SIGTERM with /ready answering 503, so a
    # load balancer's health checks take it out of rotation before it stops accepting
    # connections (at least its check interval times the failures it needs; 0: stop at once).
    "DRAIN_SECONDS": 0.0,
    # GraphQL (/graphql): deepest selection, most aliases and most tokens in one document.
    "GRAPHQL_MAX_DEPTH": 8,
    "GRAPHQL_MAX_ALIASES": 15,
    "GRAPHQL_MAX_TOKENS": 1000,
}


_merged: dict[str, Any] | None = None


def platform_setting(name: str) -> Any:
    """Read one platform knob: ``settings.PLATFORM``'s value, else the default.

    The merged dict is kept until a setting changes (``setting_changed``, which tests'
    ``override_settings`` send), as DRF keeps ``api_settings``: reading Django's settings
    object costs a microsecond an attribute, and the request path reads several knobs.
    """
    global _merged
    if _merged is None:
        _merged = {**DEFAULTS, **getattr(settings, "PLATFORM", {})}
    return _merged[name]


def _forget(*, setting: str, **kwargs: Any) -> None:
    global _merged
    if setting == "PLATFORM":
        _merged = None


setting_changed.connect(_forget)
