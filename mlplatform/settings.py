"""Settings, read from the environment (12-factor).

Two profiles:

* embedded (default): SQLite in WAL mode, the in-process cache and the django-q2 ORM broker,
  everything under ``MLPLATFORM_VAR_DIR`` (``./var``); nothing to install but Python packages.
* production: chosen by ``DATABASE_URL`` (PostgreSQL), with ``REDIS_URL`` (Redis) for the cache
  and the rate-limit counters. It refuses to start with ``DEBUG`` on or without its own
  ``SECRET_KEY`` and ``JWT_SIGNING_KEY``; without ``REDIS_URL`` its system checks fail.
"""

import os
import secrets
import sys
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from mlplatform.conf import env, knobs_from_environment, profile

# BLAS runs one thread in each process: the platform's parallelism is its processes (web
# processes, workers, the parts of a batch job), and a BLAS thread per core in each of them
# would fight for the same cores. Set before the apps first import numpy.
for _name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

BASE_DIR = Path(__file__).resolve().parent.parent


VAR_DIR = (BASE_DIR / env("MLPLATFORM_VAR_DIR")).resolve()
DATABASE_URL = env("DATABASE_URL")
REDIS_URL = env("REDIS_URL")
PROFILE = profile()


def _local_secret(name: str) -> str:
    """A secret generated once and kept under VAR_DIR: the embedded profile needs no setup."""
    path = VAR_DIR / name
    if not path.exists():
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()


DEBUG = env("DEBUG")

if PROFILE == "production":
    if DEBUG:
        raise ImproperlyConfigured("DEBUG must be off on the production profile (DATABASE_URL)")
    SECRET_KEY = env("SECRET_KEY")
    JWT_SIGNING_KEY = env("JWT_SIGNING_KEY")
    for _name, _value in (("SECRET_KEY", SECRET_KEY), ("JWT_SIGNING_KEY", JWT_SIGNING_KEY)):
        if len(_value) < 32:
            raise ImproperlyConfigured(
                f"{_name} must be set to a random value of at least 32 characters on the "
                "production profile"
            )
    if SECRET_KEY == JWT_SIGNING_KEY:
        raise ImproperlyConfigured("JWT_SIGNING_KEY must differ from SECRET_KEY")
else:
    SECRET_KEY = env("SECRET_KEY") or _local_secret("secret_key")
    JWT_SIGNING_KEY = env("JWT_SIGNING_KEY") or _local_secret("jwt_signing_key")

ALLOWED_HOSTS = env("ALLOWED_HOSTS")
CSRF_TRUSTED_ORIGINS = env("CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "mlplatform.apps.PlatformAdminConfig",  # django.contrib.admin with the platform's admin site
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework_simplejwt.token_blacklist",
    "django_ratelimit",  # its system checks: the counters' cache must be shared
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_q",
    "django_prometheus",
    "corsheaders",
    "mlplatform",
    "accounts",
    "predictions",
]

MIDDLEWARE = [
    "mlplatform.middleware.RequestIdMiddleware",
    "mlplatform.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "corsheaders.middleware.CorsMiddleware",
    "mlplatform.middleware.SelectiveGZipMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # django-prometheus's request metrics, the ones that say something of their own.
    "mlplatform.metrics.RequestMetricsMiddleware",
    "accounts.ratelimit.RateLimitHeadersMiddleware",
]
# Metrics, request log lines and usage tallies; off (MLPLATFORM_INSTRUMENTATION=0) only to
# measure what they cost (python -m bench instrumentation): django-prometheus's middleware and
# database wrappers go too, and /api/v1/stats stops counting requests.
INSTRUMENTATION = env("MLPLATFORM_INSTRUMENTATION")
if not INSTRUMENTATION:
    MIDDLEWARE.remove("mlplatform.metrics.RequestMetricsMiddleware")

ROOT_URLCONF = "mlplatform.urls"
ASGI_APPLICATION = "mlplatform.asgi.application"
# The web server (mlplatform/asgi.py): modules of lean handlers (their ROUTES, exact paths, and
# PATTERNS, regular expressions, to handlers), which serve the common case of a DRF view's
# endpoint with the same contract (PLATFORM["LEAN_HANDLERS"]); and the paths whose views
# answer with event streams, served by Django's ASGI handler (every other view by its WSGI
# handler, on a pool of threads); and modules of WebSocket handlers (their ROUTES).
LEAN_HANDLERS = ["predictions.rest.lean", "predictions.v2.lean"]
STREAMING_PATHS = [r"^/api/v1/predict/stream/?$", r"^/api/v1/predict/batch/[^/]+/events/?$"]
WEBSOCKET_HANDLERS = ["predictions.streams.websocket"]
AUTH_USER_MODEL = "accounts.User"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Every API route answers with or without a trailing slash; no redirects.
APPEND_SLASH = False

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        # Before the apps' own: these override some of the admin's templates. Inside the
        # package, so an installed wheel (the container image) carries them.
        "DIRS": [BASE_DIR / "mlplatform" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------
# Statements are counted in django-prometheus's database metrics (django_db_*) through its
# backends, which are Django's own with a counting cursor (on SQLite, mlplatform/db/sqlite3
# makes that cursor's class once).
_BACKENDS = "django_prometheus.db.backends" if INSTRUMENTATION else "django.db.backends"
_SQLITE = "mlplatform.db.sqlite3" if INSTRUMENTATION else "django.db.backends.sqlite3"
# Threads of a web process that run Django's views (mlplatform/asgi.py).
WEB_THREADS = env("WEB_THREADS")
if DATABASE_URL:
    # The view threads of a web process borrow a connection from a pool of DB_POOL_MAX per
    # process (psycopg_pool) and give it back when the request ends. mlplatform/asgi.py turns
    # the pool on for web processes only: django-q2 forks its workers, which must not inherit
    # a pool's open connections. Elsewhere (or with DB_POOL_MAX=0) each thread keeps its own
    # persistent connection (DB_CONN_MAX_AGE seconds).
    # The pool has room for every view thread at once plus the group commit's thread and the
    # one that reads for the event loop: a view holds its connection while it waits for its
    # rows' commit or for an artifact another thread is loading, and those must still find one.
    _POOL_MAX = (
        (WEB_THREADS + 2 if env("DB_POOL_MAX") is None else env("DB_POOL_MAX"))
        if env("MLPLATFORM_DB_POOL")
        else 0
    )
    if 0 < _POOL_MAX < WEB_THREADS + 2:
        raise ImproperlyConfigured(
            f"DB_POOL_MAX ({_POOL_MAX}) must be at least WEB_THREADS + 2 ({WEB_THREADS + 2}): "
            "every view thread may hold a connection while the group commit and the event "
            "loop's reads need one each (or set DB_POOL_MAX=0 for a connection per thread)"
        )
    DATABASES = {
        "default": dj_database_url.parse(
            DATABASE_URL,
            engine=f"{_BACKENDS}.postgresql",
            conn_max_age=0 if _POOL_MAX else env("DB_CONN_MAX_AGE"),
            # With the pool: each connection is checked as it is borrowed (one empty round
            # trip), so a connection broken by an outage is replaced, never handed out.
            conn_health_checks=True,
        )
    }
    # Parameters travel apart from the statement, binary values as they are: not as literals
    # in its text, a hex copy twice the size of each bytea (docs/decisions/0005).
    DATABASES["default"].setdefault("OPTIONS", {})["server_side_binding"] = True
    if _POOL_MAX:
        DATABASES["default"]["OPTIONS"]["pool"] = {
            "min_size": min(2, _POOL_MAX),
            "max_size": _POOL_MAX,
            "timeout": env("DB_POOL_TIMEOUT"),  # then 503, as with no database
            # psycopg_pool retries a failed connection with doubling waits until this many
            # seconds have passed, then the next request starts over: kept short, so that
            # the pool reconnects within seconds of the database's return after any outage.
            "reconnect_timeout": 4,
        }
else:
    VAR_DIR.mkdir(parents=True, exist_ok=True)
    _SYNCHRONOUS = env("SQLITE_SYNCHRONOUS")
    DATABASES = {
        "default": {
            "ENGINE": _SQLITE,
            "NAME": VAR_DIR / "db.sqlite3",
            # Keep each thread's connection: opening one (a file and its pragmas) costs more
            # than a prediction's own work. The web server's threads live long (its pool, the
            # group commit); a stream's thread ends with the stream, and its connection with it.
            "CONN_MAX_AGE": env("DB_CONN_MAX_AGE"),
            "OPTIONS": {
                # WAL lets readers run beside the one writer; IMMEDIATE takes the write lock at
                # BEGIN, so two writers queue on the busy timeout instead of failing mid-way.
                "transaction_mode": "IMMEDIATE",
                "timeout": 20,
                # NORMAL: a committed prediction survives a crash of the process; FULL, which
                # syncs the disk at each commit, a power loss too, for more than the 5 % of
                # throughput that would make it the default (docs/decisions/0002; python -m
                # bench sqlite measures it).
                "init_command": f"PRAGMA journal_mode=WAL; PRAGMA synchronous={_SYNCHRONOUS};",
            },
            # Tests use a file too, not Django's shared in-memory database: there a second
            # writing thread (the group commit) fails at once with "table is locked" instead of
            # waiting its turn as it does on the profile users run.
            "TEST": {"NAME": VAR_DIR / "test.sqlite3"},
        }
    }

# --- Cache ------------------------------------------------------------------------------
# Also the rate-limit counters (django-ratelimit): django-redis increments them atomically and
# every process and host shares them.
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX"),
            "OPTIONS": {
                "SOCKET_CONNECT_TIMEOUT": 2,
                "SOCKET_TIMEOUT": 2,
            },
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # django-ratelimit's checks want a cache shared by processes. On the production profile
    # they stand: `serve` runs a web process per core there, each of which would keep its own
    # counters, so without REDIS_URL `manage.py check` (and migrate, serve) stops with E003.
    if PROFILE == "embedded":
        SILENCED_SYSTEM_CHECKS = [
            # The embedded profile runs one web process (manage.py serve), whose in-memory
            # cache therefore sees every request and counts it atomically (LocMemCache locks
            # around incr); set REDIS_URL to run more.
            "django_ratelimit.E003",
            "django_ratelimit.W001",
        ]

# --- Passwords, i18n, static, media -----------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(env("STATIC_ROOT") or VAR_DIR / "static")
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
MEDIA_ROOT = Path(env("MEDIA_ROOT") or VAR_DIR / "media")
# Serve static files straight from the apps when collectstatic has not run (embedded profile).
# collectstatic itself writes the manifest and compressed copies the servers then use.
WHITENOISE_USE_FINDERS = (
    sys.argv[1:2] != ["collectstatic"] and not (STATIC_ROOT / "staticfiles.json").exists()
)
if WHITENOISE_USE_FINDERS:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# --- Security ---------------------------------------------------------------------------
# The production profile is served over HTTPS: redirects, secure cookies and HSTS are on unless
# the environment turns them off (a TLS-terminating proxy that redirects by itself, or a test
# over plain HTTP on localhost). The probes answer over plain HTTP for load balancers.
_HTTPS = PROFILE == "production"
SECURE_SSL_REDIRECT = env("SECURE_SSL_REDIRECT")
SECURE_REDIRECT_EXEMPT = [r"^health/?$", r"^ready/?$", r"^metrics/?$"]
SESSION_COOKIE_SECURE = env("SESSION_COOKIE_SECURE")
CSRF_COOKIE_SECURE = env("CSRF_COOKIE_SECURE")
SECURE_HSTS_SECONDS = env("SECURE_HSTS_SECONDS")
SECURE_HSTS_INCLUDE_SUBDOMAINS = env("SECURE_HSTS_INCLUDE_SUBDOMAINS")
# Only a flag: nothing happens until the domain's owner submits it to the browsers' list.
SECURE_HSTS_PRELOAD = env("SECURE_HSTS_PRELOAD")
SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
if env("SECURE_PROXY_SSL_HEADER"):
    SECURE_PROXY_SSL_HEADER = (env("SECURE_PROXY_SSL_HEADER"), "https")

# Client addresses (rate limits of anonymous endpoints): with TRUSTED_PROXY_COUNT proxies in
# front, the client is that many entries from the right of CLIENT_IP_HEADER; with none,
# REMOTE_ADDR. Never trust the header without a proxy that sets it: clients can forge it.
TRUSTED_PROXY_COUNT = env("TRUSTED_PROXY_COUNT")
CLIENT_IP_HEADER = "HTTP_" + env("CLIENT_IP_HEADER").upper().replace("-", "_")

# --- Rate limits (django-ratelimit; groups and tiers in accounts/ratelimit.py) ----------
RATELIMIT_ENABLE = env("RATELIMIT_ENABLE")
RATELIMIT_USE_CACHE = "default"

# --- Cross-origin requests (django-cors-headers) ----------------------------------------
# Browser apps on these origins may call the API; none by default. Credentials (cookies) are
# never allowed cross-origin: API clients send a key or a bearer token in a header.
CORS_ALLOWED_ORIGINS = env("CORS_ALLOWED_ORIGINS")
if CORS_ALLOWED_ORIGINS == ("*",):  # any origin, which is safe only because of the next line
    CORS_ALLOWED_ORIGINS, CORS_ALLOW_ALL_ORIGINS = [], True
CORS_URLS_REGEX = r"^/(api/v1|v2|graphql)(/.*)?$"
CORS_ALLOW_CREDENTIALS = False
CORS_ALLOW_HEADERS = (
    "accept",
    "authorization",
    "content-type",
    "idempotency-key",
    "last-event-id",
    "x-api-key",
    "x-request-id",
)
CORS_EXPOSE_HEADERS = (
    "retry-after",
    "x-request-id",
    "x-ratelimit-limit",
    "x-ratelimit-remaining",
    "x-ratelimit-reset",
)

# --- Django REST framework --------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "accounts.authentication.ApiKeyAuthentication",
        "accounts.authentication.BearerJWTAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_RENDERER_CLASSES": [
        "mlplatform.api.renderers.ORJSONRenderer",
        "mlplatform.api.renderers.PlatformBrowsableAPIRenderer",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "mlplatform.api.parsers.ORJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "mlplatform.api.pagination.PageNumberPagination",
    "EXCEPTION_HANDLER": "mlplatform.api.exceptions.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["accounts.ratelimit.PlatformRateThrottle"],
    "DEFAULT_SCHEMA_CLASS": "mlplatform.api.schema.PlatformAutoSchema",
    "UNAUTHENTICATED_USER": "django.contrib.auth.models.AnonymousUser",
    # ?format= selects a download format of batch results, not a DRF renderer.
    "URL_FORMAT_OVERRIDE": None,
    # Serializers hand datetimes to the renderer, which writes them with a ``+00:00`` offset
    # (DRF's own format writes ``Z``, which ``datetime.fromisoformat`` reads only from 3.11).
    "DATETIME_FORMAT": None,
}

# --- djangorestframework-simplejwt ------------------------------------------------------
SIMPLE_JWT = {
    "ACCESS_TOKEN_LIFETIME": timedelta(minutes=env("JWT_ACCESS_MINUTES")),
    "REFRESH_TOKEN_LIFETIME": timedelta(days=env("JWT_REFRESH_DAYS")),
    "ROTATE_REFRESH_TOKENS": True,
    "BLACKLIST_AFTER_ROTATION": True,
    # Tokens carry a digest of the password hash: a password change ends them all.
    "CHECK_REVOKE_TOKEN": True,
    "TOKEN_REFRESH_SERIALIZER": "accounts.serializers.TokenRefreshSerializer",
    "UPDATE_LAST_LOGIN": False,
    "ALGORITHM": "HS256",
    "SIGNING_KEY": JWT_SIGNING_KEY,
    "AUTH_HEADER_TYPES": ("Bearer",),
}

# --- drf-spectacular --------------------------------------------------------------------
SPECTACULAR_SETTINGS = {
    "TITLE": "ML platform API",
    "DESCRIPTION": "Authenticated, stored machine-learning predictions.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PREPROCESSING_HOOKS": ["mlplatform.api.schema.drop_trailing_slash_duplicates"],
    "COMPONENT_SPLIT_REQUEST": True,
    # Bodies are documented as JSON only. The form parsers stay on (a form login, a token
    # obtained with a form post), but a form body would repeat the JSON schema under a type no
    # generated client can tell apart, and cannot carry the arrays most bodies hold. A view
    # whose contract is a form or an upload (login, batch files) lists its media types in
    # extend_schema(request={...}).
    "PARSER_WHITELIST": ["mlplatform.api.parsers.ORJSONParser"],
    # One name for each status enum that several bodies share.
    "ENUM_NAME_OVERRIDES": {
        "BatchJobStatusEnum": "predictions.models.BatchJob.Status",
        "ModelVersionStatusEnum": "predictions.models.ModelVersion.Status",
    },
}

# --- django-q2 --------------------------------------------------------------------------
# The ORM broker keeps a task until a worker acknowledges it, so a worker that dies loses
# nothing: the task is handed out again after "retry" seconds.
Q_CLUSTER = {
    "name": "mlplatform",
    "orm": "default",
    "workers": env("Q_WORKERS"),
    # A task running longer than "timeout" is stopped; one not acknowledged within "retry"
    # seconds (its worker died) is handed out again. A batch job runs as a chain of tasks of
    # about BATCH_TASK_SECONDS each, so both can be short.
    "timeout": env("Q_TIMEOUT"),
    "retry": env("Q_RETRY"),
    "max_attempts": 5,
    "catch_up": False,
    # Seconds between a cluster's looks at the queue: a job waits at most this long to start.
    "poll": 0.2,
    "label": "Background tasks",
}

# --- The platform's own knobs (declared, with their defaults, in mlplatform/conf.py) ------
# The environment sets any of them as MLPLATFORM_<NAME>; a settings module may set more here.
PLATFORM = knobs_from_environment()
if PLATFORM.get("METRICS_ACCESS") == "token" and len(PLATFORM.get("METRICS_TOKEN", "")) < 16:
    raise ImproperlyConfigured(
        "MLPLATFORM_METRICS_ACCESS=token needs MLPLATFORM_METRICS_TOKEN of 16 characters or more"
    )
# django-prometheus's request latency buckets: finer below 10 ms, where predictions answer.
PROMETHEUS_LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    float("inf"),
)  # fmt: skip

# --- Logging ----------------------------------------------------------------------------
# One JSON object per line (request lines from mlplatform.request); human-readable text when
# DEBUG is on. LOG_FORMAT=json|text overrides.
LOG_FORMAT = env("LOG_FORMAT") or ("text" if DEBUG else "json")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "mlplatform.logging.ContextFilter"}},
    "formatters": {
        "json": {"()": "mlplatform.logging.JSONFormatter"},
        "text": {"()": "mlplatform.logging.TextFormatter"},
    },
    "handlers": {
        "console": {
            "()": "mlplatform.logging.QueuedStreamHandler",
            "formatter": LOG_FORMAT,
            "filters": ["context"],
        }
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL")},
    "loggers": {"django.request": {"level": "ERROR"}},
}
