"""Every setting of the platform, declared once: its environment variable, type, default and
what it does.

Two kinds. ``ENVIRONMENT`` holds the variables ``settings.py`` turns into Django's settings
(``env(name)`` reads one). ``KNOBS`` are the platform's own, read with ``platform_setting(name)``
from ``settings.PLATFORM``, whose defaults they give; each is also set from the environment as
``MLPLATFORM_<NAME>``. docs/settings.md is rendered from these declarations (``python -m
mlplatform.conf``), and a test keeps the two in step. Nothing else reads the environment but
the web server's own start-up (``manage.py serve``, ``mlplatform/asgi.py``) and
``register_model``, for the variable its operator names to hold a remote server's credential.
"""

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Profiled:
    """A default that differs between the embedded and the production profile."""

    embedded: Any
    production: Any


@dataclass(frozen=True, slots=True)
class Setting:
    name: str
    kind: str  # bool, int, float, str, choice, list, ints, rates
    default: Any
    help: str
    env: str = ""  # the environment variable: the name itself, or MLPLATFORM_<name> for knobs
    choices: tuple[str, ...] = ()
    bound: str = ""  # ">0" or ">=0": what a number must be
    shown: str = ""  # the default as the docs state it, when code computes it


def _bool(value: str) -> bool:
    if value.lower() in {"1", "true", "yes", "on"}:
        return True
    if value.lower() in {"0", "false", "no", "off"}:
        return False
    raise ValueError("must be a boolean (1/0, true/false)")


def _list(value: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in value.split(",") if item.strip())


def _rates(value: str) -> dict[str, str]:
    pairs = [part.split("=", 1) for part in _list(value)]
    if any(len(pair) != 2 for pair in pairs):
        raise ValueError("must be group=rate pairs, e.g. predict=1200/m,auth=5/m")
    return {group.strip(): rate.strip() for group, rate in pairs}


_PARSERS: dict[str, Callable[[str], Any]] = {
    "bool": _bool,
    "int": int,
    "float": float,
    "str": str,
    "choice": str,
    "list": _list,
    "ints": lambda value: tuple(int(item) for item in _list(value)),
    "rates": _rates,
}


def _variable(name, kind, default, help, **extra) -> Setting:
    return Setting(name, kind, default, help, env=name, **extra)


ENVIRONMENT: tuple[Setting, ...] = (
    # --- Profile, storage and secrets
    _variable("DATABASE_URL", "str", "", "PostgreSQL, as `postgres://user:pass@host:5432/name`; set, it chooses the production profile."),
    _variable("REDIS_URL", "str", "", "Redis for the cache and the rate-limit counters, as `redis://host:6379/0`; required on the production profile."),
    _variable("MLPLATFORM_VAR_DIR", "str", "var", "Directory (from the project's) of the embedded profile's database, its generated secrets, and the static and media files."),
    _variable("SECRET_KEY", "str", "", "Django's secret key: required on the production profile (32 characters or more); generated into the var directory otherwise."),
    _variable("JWT_SIGNING_KEY", "str", "", "The key that signs JWTs, with the same rules as `SECRET_KEY`, from which it must differ."),
    _variable("DEBUG", "bool", False, "Django's debug mode; the production profile refuses to start with it."),
    _variable("STATIC_ROOT", "str", "", "Where `collectstatic` writes the static files.", shown="`<var>/static`"),
    _variable("MEDIA_ROOT", "str", "", "Where uploaded and generated files are kept (the file system storage).", shown="`<var>/media`"),
    # --- Web server and database connections
    _variable("WEB_CONCURRENCY", "int", Profiled(1, 0), "Web processes of `manage.py serve`; 0: one per core."),
    _variable("WEB_THREADS", "int", 8, "Threads of a web process that run Django's views.", bound=">0" ),
    _variable("DB_POOL_MAX", "int", None, "Connections of a web process's pool (at least `WEB_THREADS` + 2); 0: a connection per thread.", shown="`WEB_THREADS` + 2"),
    _variable("DB_POOL_TIMEOUT", "int", 5, "Seconds a request waits for a pooled connection before its 503.", bound=">0"),
    _variable("DB_CONN_MAX_AGE", "int", Profiled(600, 60), "Seconds a thread keeps its own database connection (without the pool).", bound=">=0"),
    _variable("SQLITE_SYNCHRONOUS", "choice", "NORMAL", "SQLite's `synchronous` pragma: NORMAL survives a crash of the process, FULL a power loss too.", choices=("OFF", "NORMAL", "FULL", "EXTRA")),
    _variable("CACHE_KEY_PREFIX", "str", "mlplatform", "Prefix of the platform's keys in Redis."),
    _variable("Q_WORKERS", "int", Profiled(1, 2), "django-q2 worker processes of one `qcluster`.", bound=">0"),
    _variable("Q_TIMEOUT", "int", 45, "Seconds a background task may run before it is stopped.", bound=">0"),
    _variable("Q_RETRY", "int", 60, "Seconds after which a task no worker acknowledged is handed out again (more than `Q_TIMEOUT`).", bound=">0"),
    # --- HTTP and security
    _variable("ALLOWED_HOSTS", "list", ("localhost", "127.0.0.1", "[::1]"), "Host names the server answers, comma-separated."),
    _variable("CSRF_TRUSTED_ORIGINS", "list", (), "Origins trusted for the admin's and the browsable API's forms, comma-separated."),
    _variable("CORS_ALLOWED_ORIGINS", "list", (), "Origins whose browser apps may call `/api/v1`, `/v2` and `/graphql` (`*`: any), comma-separated."),
    _variable("SECURE_SSL_REDIRECT", "bool", Profiled(False, True), "Redirect plain HTTP to HTTPS (the probes and `/metrics` excepted)."),
    _variable("SESSION_COOKIE_SECURE", "bool", Profiled(False, True), "Send the session cookie over HTTPS only."),
    _variable("CSRF_COOKIE_SECURE", "bool", Profiled(False, True), "Send the CSRF cookie over HTTPS only." ),
    _variable("SECURE_HSTS_SECONDS", "int", Profiled(0, 31_536_000), "HSTS max-age in seconds (0: no HSTS header).", bound=">=0"),
    _variable("SECURE_HSTS_INCLUDE_SUBDOMAINS", "bool", Profiled(False, True), "HSTS covers the subdomains."),
    _variable("SECURE_HSTS_PRELOAD", "bool", Profiled(False, True), "HSTS's preload flag (nothing happens until the domain is submitted to the browsers' list)."),
    _variable("SECURE_PROXY_SSL_HEADER", "str", "", "The header a TLS-terminating proxy sets to `https`, e.g. `HTTP_X_FORWARDED_PROTO`."),
    _variable("TRUSTED_PROXY_COUNT", "int", 0, "Proxies in front of the server: the client address is that many entries from the right of `CLIENT_IP_HEADER`.", bound=">=0"),
    _variable("CLIENT_IP_HEADER", "str", "X-Forwarded-For", "The header the trusted proxies append client addresses to."),
    _variable("RATELIMIT_ENABLE", "bool", True, "Rate limits on; off only for load tests of the server itself."),
    _variable("JWT_ACCESS_MINUTES", "int", 10, "Lifetime of an access token, in minutes.", bound=">0" ),
    _variable("JWT_REFRESH_DAYS", "int", 1, "Lifetime of a refresh token, in days.", bound=">0"),
    _variable("WEBHOOK_ALLOWED_HOSTS", "list", (), "Host names, addresses or networks that webhooks may reach although they are private, comma-separated."),
    # --- Logs and traces
    _variable("LOG_FORMAT", "choice", "", "Log lines as JSON objects or as text.", choices=("json", "text"), shown="json (text with `DEBUG`)"),
    _variable("LOG_LEVEL", "str", "INFO", "The root logger's level."),
    _variable("OTEL_EXPORTER_OTLP_ENDPOINT", "str", "", "OpenTelemetry traces go to this OTLP/HTTP endpoint (needs the `otel` extra); unset: no tracing."),
    _variable("OTEL_SERVICE_NAME", "str", "mlplatform", "The service name on the traces."),
    # --- Set by `manage.py serve` for the processes it starts
    _variable("PROMETHEUS_MULTIPROC_DIR", "str", "", "Where the processes write their metric samples, added up by `/metrics`; a temporary directory when unset."),
    _variable("MLPLATFORM_DB_POOL", "bool", False, "Set for web processes only: their threads share a connection pool (forked workers must not inherit one)."),
    _variable("MLPLATFORM_DRAINING_FLAG", "str", "", "A file whose presence makes `/ready` answer 503 while the server drains."),
)  # fmt: skip


def _knob(name, kind, default, help, **extra) -> Setting:
    return Setting(name, kind, default, help, env=extra.pop("env", f"MLPLATFORM_{name}"), **extra)


KNOBS: tuple[Setting, ...] = (
    _knob("DEFAULT_MODEL", "str", "iris", "Model served when a request names none."),
    _knob("LEAN_HANDLERS", "bool", True, "The web server's lean handlers serve the common case of `/predict` and V2 `infer`; off, every request goes through Django and DRF."),
    _knob("INSTRUMENTATION", "bool", True, "Metrics, request log lines and usage tallies; off only to measure what they cost."),
    _knob("MAX_BODY_BYTES", "int", MiB, "Largest JSON request body (413 beyond).", bound=">0"),
    _knob("MAX_ARTIFACT_BYTES", "int", 2048 * MiB, "Largest model artifact, however it is registered: REST, the admin or `register_model` (413 beyond). A single-file ONNX graph cannot pass 2 GiB anyway (protobuf).", bound=">0"),
    _knob("MAX_FEATURES", "int", 10_000, "Most features a model may take (so the widest row a request may send).", bound=">0"),
    _knob("MAX_ACTIVE_API_KEYS", "int", 25, "Most active API keys one user may hold (409 beyond).", bound=">0"),
    _knob("DEFAULT_TIMEOUT", "float", 30.0, "Seconds an inference may take when the request sets no `timeout`.", bound=">0"),
    _knob("MAX_TIMEOUT", "float", 300.0, "The longest `timeout` a request may ask for.", bound=">0" ),
    _knob("REGISTRY_REFRESH_SECONDS", "float", 1.0, "How often each process asks the database whether the model registry changed.", bound=">=0"),
    _knob("API_KEY_CACHE_SECONDS", "float", 1.0, "How long a process answers for a verified key (and its owner's scopes) from memory.", bound=">=0"),
    _knob("API_KEY_TOUCH_SECONDS", "int", 60, "An API key's `last_used_at` is written at most this often.", bound=">0"),
    _knob("RATE_LIMITS", "rates", {"auth": "10/m", "predict": "600/m", "batch": "30/m", "stream": "30/m", "api": "1200/m"}, "Requests per principal (API key, else user, else client IP) and period, by group; the environment gives `group=rate` pairs, the rest keep their defaults."),
    _knob("USER_RATE_LIMITS", "rates", {"auth": "40/m", "predict": "2400/m", "batch": "120/m", "stream": "120/m", "api": "4800/m"}, "The ceiling of one user's requests by group, all of their keys and tokens together."),
    _knob("PAGE_SIZE", "int", 50, "Items on a page of a list.", bound=">0"),
    _knob("MAX_PAGE_SIZE", "int", 500, "The largest `page_size` a list takes.", bound=">0"),
    _knob("MAX_UPLOAD_BYTES", "int", 512 * MiB, "Largest batch job upload (413 beyond).", bound=">0" ),
    _knob("MAX_BATCH_JSON_ROWS", "int", 10_000, "Most rows a batch job may send as JSON.", bound=">0" ),
    _knob("MAX_BATCH_ROWS", "int", 20_000_000, "Most rows in one batch job.", bound=">0"),
    _knob("MAX_ACTIVE_BATCH_JOBS", "int", 5, "Most unfinished batch jobs per user (429 beyond).", bound=">0"),
    _knob("BATCH_CHUNK_ROWS", "int", 100_000, "Rows a worker predicts and stores at a time.", bound=">0"),
    _knob("BATCH_TASK_SECONDS", "float", 15.0, "Seconds one task works on a job before it queues the rest as a new task (well below `Q_TIMEOUT`).", bound=">=0"),
    _knob("BATCH_PARALLEL_TASKS", "int", 2, "Tasks that work on one job at once, each on every n-th chunk.", bound=">0"),
    _knob("BATCH_RETENTION_DAYS", "float", 30, "Days an ended job (its rows, results and files) is kept; 0: for ever.", bound=">=0"),
    _knob("WEBHOOK_TIMEOUT", "float", 10.0, "Seconds to wait for a webhook's receiver (at most 15).", bound=">0"),
    _knob("WEBHOOK_MAX_ATTEMPTS", "int", 6, "Attempts to deliver a webhook, in all.", bound=">0"),
    _knob("WEBHOOK_RETRY_DELAYS", "ints", (5, 30, 120, 600, 3600), "Seconds to wait after failed attempts 1, 2, ... (the last one repeats)."),
    _knob("PUBLIC_BASE_URL", "str", "", "Prefix of absolute links in webhook payloads (empty: relative links)."),
    _knob("MAX_STREAM_ROWS", "int", 1000, "Most rows in one prediction stream.", bound=">0"),
    _knob("STREAM_HEARTBEAT_SECONDS", "float", 15.0, "Seconds between keep-alive comments of an idle event stream.", bound=">0"),
    _knob("MAX_OPEN_STREAMS", "int", 128, "Most event streams and WebSockets a web process holds open (503 beyond).", bound=">0"),
    _knob("MAX_OPEN_STREAMS_PER_USER", "int", 16, "Most open streams and WebSockets of one user (429 beyond).", bound=">0"),
    _knob("STREAM_SEND_TIMEOUT", "float", 30.0, "Seconds a client may leave an event unread before its stream is dropped.", bound=">0"),
    _knob("WS_MAX_MESSAGE_BYTES", "int", MiB, "Largest WebSocket message (closed with 1009 beyond).", bound=">0"),
    _knob("WS_MAX_IN_FLIGHT", "int", 64, "Rows of one socket being predicted or waiting to be sent; no message is read beyond.", bound=">0"),
    _knob("WS_IDLE_SECONDS", "float", 300.0, "Seconds without a message or an answer before the server closes a socket (4408).", bound=">0"),
    _knob("WS_PING_SECONDS", "float", 20.0, "Seconds between the server's pings; a pong must come within as long (1011).", bound=">0"),
    _knob("WS_RATE_LIMIT_GRACE", "int", 10, "Rows refused for the rate limit one after another before a socket is closed (4429).", bound=">0"),
    _knob("READY_TIMEOUT", "float", 1.5, "Seconds `/ready` waits for its checks before it answers 503.", bound=">0"),
    _knob("DRAIN_SECONDS", "float", Profiled(0.0, 5.0), "Seconds `manage.py serve` keeps serving after SIGTERM with `/ready` answering 503, for the load balancer to notice.", bound=">=0"),
    _knob("GRAPHQL_MAX_DEPTH", "int", 8, "Deepest selection of a GraphQL document.", bound=">0"),
    _knob("GRAPHQL_MAX_ALIASES", "int", 15, "Most aliases in a GraphQL document.", bound=">0"),
    _knob("GRAPHQL_MAX_TOKENS", "int", 1000, "Most tokens in a GraphQL document.", bound=">0"),
    _knob("METRICS_ACCESS", "choice", "network", "Who may read `/metrics`: anyone, a bearer of `METRICS_TOKEN`, or clients inside `METRICS_ALLOWED_NETWORKS`.", choices=("open", "token", "network")),
    _knob("METRICS_TOKEN", "str", "", "The bearer token of `/metrics` in token mode (16 characters or more)."),
    _knob("METRICS_ALLOWED_NETWORKS", "list", ("127.0.0.0/8", "::1/128"), "Networks whose clients may read `/metrics` in network mode.", env="MLPLATFORM_METRICS_NETWORKS"),
    _knob("USAGE_FLUSH_SECONDS", "float", 2.0, "Seconds between writes of a process's request tallies (`/api/v1/stats`, the dashboard); 0: every request.", bound=">=0"),
)  # fmt: skip

_BY_ENV = {setting.env: setting for setting in ENVIRONMENT + KNOBS}
KNOB = {knob.name: knob for knob in KNOBS}


def profile() -> str:
    return "production" if os.environ.get("DATABASE_URL") else "embedded"


def default(setting: Setting) -> Any:
    value = setting.default
    if isinstance(value, Profiled):
        return getattr(value, profile())
    return value


def env(name: str) -> Any:
    """An environment variable's value, parsed by its declared type; its default when unset."""
    setting = _BY_ENV[name]
    raw = os.environ.get(name, "")
    if raw == "":
        return default(setting)
    try:
        value = _PARSERS[setting.kind](raw)
    except ValueError as exc:
        reason = {"int": "must be an integer", "float": "must be a number"}.get(
            setting.kind, "must be a list of integers" if setting.kind == "ints" else str(exc)
        )
        raise ImproperlyConfigured(f"{name} {reason}, got {raw!r}") from None
    if setting.choices:
        value = next((c for c in setting.choices if c.lower() == value.lower()), None)
        if value is None:
            raise ImproperlyConfigured(f"{name} must be one of {', '.join(setting.choices)}")
    if setting.kind == "rates":
        value = {**default(setting), **value}
    return value


def knobs_from_environment() -> dict[str, Any]:
    """``settings.PLATFORM``: the knobs the environment sets (``MLPLATFORM_<NAME>``)."""
    return {knob.name: env(knob.env) for knob in KNOBS if os.environ.get(knob.env)}


DEFAULTS: dict[str, Any] = {knob.name: default(knob) for knob in KNOBS}
_merged: dict[str, Any] | None = None


def platform_setting(name: str) -> Any:
    """Read one platform knob: ``settings.PLATFORM``'s value, else the default.

    The merged dict is kept until a setting changes (``setting_changed``, which tests'
    ``override_settings`` send), as DRF keeps ``api_settings``: the request path reads several
    knobs, and Django's settings object is slower to read than a dict.
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


# --- The reference in docs/settings.md --------------------------------------------------


def _shown(setting: Setting) -> str:
    if setting.shown:
        return setting.shown
    value = setting.default
    if isinstance(value, Profiled):
        return f"{_literal(value.embedded)} (embedded), {_literal(value.production)} (production)"
    return _literal(value)


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, dict):
        return "`" + ",".join(f"{group}={rate}" for group, rate in value.items()) + "`"
    if isinstance(value, tuple):
        return "`" + ",".join(str(item) for item in value) + "`" if value else "empty"
    if value == "":
        return "empty"
    if isinstance(value, int) and value >= MiB and value % MiB == 0:
        return f"`{value}` ({value // MiB} MiB)"
    return f"`{value}`"


def _kind(setting: Setting) -> str:
    if setting.choices:
        return " \\| ".join(setting.choices)
    return {"list": "list", "ints": "list of int", "rates": "group=rate list"}.get(
        setting.kind, setting.kind
    )


def reference() -> str:
    """The tables of docs/settings.md."""
    lines = [
        "### Environment",
        "",
        "| variable | type | default | what it does |",
        "|---|---|---|---|",
        *(f"| `{s.env}` | {_kind(s)} | {_shown(s)} | {s.help} |" for s in ENVIRONMENT),
        "",
        "### Platform knobs",
        "",
        "| `settings.PLATFORM` key | environment | type | default | what it does |",
        "|---|---|---|---|---|",
        *(f"| `{s.name}` | `{s.env}` | {_kind(s)} | {_shown(s)} | {s.help} |" for s in KNOBS),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(reference(), end="")
