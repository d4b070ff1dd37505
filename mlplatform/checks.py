"""System checks for the platform's own settings."""

import ipaddress

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register

from mlplatform.conf import DEFAULTS, KNOB, KNOBS, platform_setting


@register()
def check_platform_settings(app_configs, **kwargs):
    """Refuse unknown knobs and values of the wrong kind in ``settings.PLATFORM``."""
    overrides = getattr(settings, "PLATFORM", {})
    if not isinstance(overrides, dict):
        return [Error("settings.PLATFORM must be a dict", id="mlplatform.E001")]
    errors = []
    for name in overrides:
        if name not in KNOB:
            errors.append(
                Error(
                    f"settings.PLATFORM has an unknown key {name!r}",
                    hint=f"Known keys: {', '.join(sorted(KNOB))}",
                    id="mlplatform.E002",
                )
            )
    merged = {**DEFAULTS, **overrides}
    for knob in KNOBS:
        value = merged[knob.name]
        if knob.bound and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or (value <= 0 if knob.bound == ">0" else value < 0)
        ):
            kind = "a positive number" if knob.bound == ">0" else ">= 0"
            errors.append(
                Error(f"settings.PLATFORM[{knob.name!r}] must be {kind}", id="mlplatform.E003")
            )
        if knob.choices and value not in knob.choices:
            errors.append(
                Error(
                    f"settings.PLATFORM[{knob.name!r}] must be one of {', '.join(knob.choices)}",
                    id="mlplatform.E004",
                )
            )
    if not isinstance(merged["DEFAULT_MODEL"], str) or not merged["DEFAULT_MODEL"]:
        errors.append(
            Error("settings.PLATFORM['DEFAULT_MODEL'] must be a model name", id="mlplatform.E005")
        )
    return errors


@register(Tags.security, deploy=True)
def check_metrics_access(app_configs, **kwargs):
    """``check --deploy``: warn when anyone who reaches the server could read ``/metrics``."""
    mode = platform_setting("METRICS_ACCESS")
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
    for spec in platform_setting("METRICS_ALLOWED_NETWORKS"):
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
