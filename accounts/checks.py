"""System checks for the rate-limit tiers in ``settings.PLATFORM``."""

from django.conf import settings
from django.core.checks import Error, register

from accounts.rates import GROUPS, parse_rate
from mlplatform.conf import DEFAULTS


@register()
def check_rate_limits(app_configs, **kwargs):
    """Every group has a rate, and every rate parses (``MLPLATFORM_<name>`` included)."""
    overrides = getattr(settings, "PLATFORM", {})
    if not isinstance(overrides, dict):
        return []  # mlplatform.E001 says so
    return [
        error
        for name in ("RATE_LIMITS", "USER_RATE_LIMITS")
        for error in _check_rate_limits(name, overrides.get(name, DEFAULTS[name]))
    ]


def _check_rate_limits(name: str, tiers) -> list[Error]:
    if not isinstance(tiers, dict):
        return [Error(f"settings.PLATFORM[{name!r}] must be a dict", id="accounts.E001")]
    errors = []
    for group in sorted(set(tiers) | set(GROUPS)):
        if group not in GROUPS:
            errors.append(
                Error(
                    f"settings.PLATFORM[{name!r}] has an unknown group {group!r}",
                    hint=f"Groups: {', '.join(GROUPS)}",
                    id="accounts.E001",
                )
            )
            continue
        try:
            parse_rate(tiers.get(group))
        except ValueError as exc:
            errors.append(
                Error(f"settings.PLATFORM[{name!r}][{group!r}]: {exc}", id="accounts.E001")
            )
    return errors
