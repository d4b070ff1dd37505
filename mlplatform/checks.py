"""System checks for the platform's own settings."""

import ipaddress

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from mlplatform.conf import DEFAULTS

_POSITIVE_NUMBERS = (
    "MAX_BODY_BYTES",
    "MAX_ARTIFACT_BYTES",
    "MAX_UPLOAD_BYTES",
    "MAX_BATCH_JSON_ROWS",
    "MAX_BATCH_ROWS",
    "MAX_ACTIVE_BATCH_JOBS",
    "MAX_ACTIVE_API_KEYS",
    "BATCH_CHUNK_ROWS",
    "BATCH_PARALLEL_TASKS",
    "WEBHOOK_TIMEOUT",
    "WEBHOOK_MAX_ATTEMPTS",
    "DEFAULT_TIMEOUT",
    "MAX_TIMEOUT",
    "API_KEY_TOUCH_SECONDS",
    "PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_FEATURES",
    "MAX_OPEN_STREAMS",
    "MAX_OPEN_STREAMS_PER_USER",
    "STREAM_SEND_TIMEOUT",
    "WS_MAX_MESSAGE_BYTES",
    "WS_MAX_IN_FLIGHT",
    "WS_IDLE_SECONDS",
    "WS_PING_SECONDS",
    "WS_RATE_LIMIT_GRACE",
    "READY_TIMEOUT",
)


@register()
def check_platform_settings(app_configs, **kwargs):
    """Refuse unknown knobs and values of the wrong kind in ``settings.PLATFORM``."""
    errors = []
    overrides = getattr(settings, "PLATFORM", {})
    if not isinstance(overrides, dict):
        return [Error("settings.PLATFORM must be a dict", id="mlplatform.E001")]
    for name in overrides:
        if name not in DEFAULTS:
            errors.append(
                Error(
                    f"settings.PLATFORM has an unknown key {name!r}",
                    hint=f"Known keys: {', '.join(sorted(DEFAULTS))}",
                    id="mlplatform.E002",
                )
            )
    merged = {**DEFAULTS, **overrides}
    for name in _POSITIVE_NUMBERS:
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            errors.append(
                Error(
                    f"settings.PLATFORM[{name!r}] must be a positive number", id="mlplatform.E003"
                )
            )
    for name in (
        "REGISTRY_REFRESH_SECONDS",
        "API_KEY_CACHE_SECONDS",
        "BATCH_TASK_SECONDS",
        "BATCH_RETENTION_DAYS",
        "DRAIN_SECONDS",
    ):
        value = merged[name]
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            errors.append(Error(f"settings.PLATFORM[{name!r}] must be >= 0", id="mlplatform.E004"))
    if not isinstance(merged["DEFAULT_MODEL"], str) or not merged["DEFAULT_MODEL"]:
        errors.append(
            Error("settings.PLATFORM['DEFAULT_MODEL'] must be a model name", id="mlplatform.E005")
        )
    return errors


@register(Tags.security, deploy=True)
def check_metrics_access(app_configs, **kwargs):
    """``check --deploy``: warn when anyone who reaches the server could read ``/metrics``."""
    observability = getattr(settings, "OBSERVABILITY", {})
    mode = observability.get("METRICS_ACCESS", "network")
    if mode == "open":
        return [
            Warning(
                "/metrics is open to every client (MLPLATFORM_METRICS_ACCESS=open).",
                hint="Use network (the default) or token access.",
                id="mlplatform.W001",
            )
        ]
    if mode != "network":
        return []
    public = []
    for spec in observability.get("METRICS_ALLOWED_NETWORKS", ()):
        network = ipaddress.ip_network(spec, strict=False)
        if not (network.is_private or network.is_loopback or network.is_link_local):
            public.append(spec)
    if public:
        return [
            Warning(
                f"/metrics is served to public addresses: {', '.join(public)}.",
                hint="Allow only the scraper's networks (MLPLATFORM_METRICS_NETWORKS), or use "
                "token access.",
                id="mlplatform.W002",
            )
        ]
    return []
