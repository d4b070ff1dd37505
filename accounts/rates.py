"""Rates such as ``600/m`` and the per-principal overrides written in the admin."""

import re

from django.core.exceptions import ValidationError

GROUPS = ("auth", "predict", "batch", "stream", "api")
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*)\s*([smhd])\s*$")
_PERIOD_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_rate(rate: str) -> tuple[int, int]:
    """``"600/m"`` -> (600, 60); ``"100/5m"`` -> (100, 300). ValueError when malformed."""
    match = _RATE.match(rate) if isinstance(rate, str) else None
    if match is None:
        raise ValueError(f"{rate!r} is not a rate such as 600/m (periods: s, m, h, d)")
    count, multiple, period = match.groups()
    seconds = _PERIOD_SECONDS[period] * (int(multiple) if multiple else 1)
    if int(count) < 1 or seconds < 1:
        raise ValueError(f"{rate!r}: the count and the period must be at least 1")
    return int(count), seconds


def parse_overrides(text: str) -> dict[str, str]:
    """An override field: ``"1200/m"`` (the predict group) or ``"predict=1200/m, batch=10/h"``.

    Raises ValueError naming the first problem.
    """
    overrides: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        group, sep, rate = part.rpartition("=")
        group = group.strip() if sep else "predict"
        if group not in GROUPS:
            raise ValueError(f"unknown group {group!r} (groups: {', '.join(GROUPS)})")
        if group in overrides:
            raise ValueError(f"group {group!r} is given twice")
        parse_rate(rate)
        overrides[group] = rate.strip()
    return overrides


def validate_overrides(value: str) -> None:
    """Model-field validator for ``rate_limits`` (a clear admin error when malformed)."""
    try:
        parse_overrides(value)
    except ValueError as exc:
        raise ValidationError(f"Rate limits: {exc}.") from None
