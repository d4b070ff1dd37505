"""Writes of credentials: API keys (create, revoke, touch, rate-limit overrides), refresh
tokens (end them all), webhook secrets."""

from collections.abc import Iterable
from datetime import datetime, timedelta

from django.db import transaction
from django.db.models import Q
from django.utils import timezone
from rest_framework_simplejwt.token_blacklist.models import BlacklistedToken, OutstandingToken

from accounts import crypto
from accounts.keycache import verified_keys
from accounts.models import ApiKey, User
from accounts.rates import parse_overrides
from accounts.scopes import ALL_SCOPES, user_has_scope
from mlplatform.background import group_commit
from mlplatform.conf import platform_setting
from mlplatform.errors import Forbidden, InvalidInput, PlatformError


def api_key_create(
    *,
    owner: User,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
    rate_limits: str = "",
) -> tuple[ApiKey, str]:
    """Create a key and return it with its raw value, which is never available again."""
    rate_limits = _checked_rate_limits(rate_limits)
    scopes = list(dict.fromkeys(scopes))
    if not scopes:
        raise InvalidInput("scopes: give at least one scope.", code="invalid")
    unknown = [s for s in scopes if s not in ALL_SCOPES]
    if unknown:
        raise InvalidInput(
            f"scopes: unknown scope {unknown[0]!r}; choose from {', '.join(ALL_SCOPES)}.",
            code="invalid",
        )
    lacking = [s for s in scopes if not user_has_scope(owner, s)]
    if lacking:
        raise Forbidden(
            f"User {owner.get_username()!r} does not hold the {lacking[0]!r} scope, "
            "so no key of theirs can carry it.",
            code="scope_not_held",
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at: must be in the future.", code="invalid")
    generated = crypto.generate_key()
    with transaction.atomic():
        # Count and insert as one step per user (the owner's row locked on PostgreSQL; SQLite's
        # transactions never overlap).
        User.objects.select_for_update().get(pk=owner.pk)
        now = timezone.now()
        active = (
            ApiKey.objects.filter(owner=owner, revoked_at__isnull=True)
            .filter(Q(expires_at__isnull=True) | Q(expires_at__gt=now))
            .count()
        )
        limit = platform_setting("MAX_ACTIVE_API_KEYS")
        if active >= limit:
            raise PlatformError(
                f"User {owner.get_username()!r} holds {active} active API keys, the most "
                f"allowed ({limit}); revoke one first.",
                code="too_many_api_keys",
                status_code=409,
            )
        key = ApiKey.objects.create(
            owner=owner,
            name=name,
            lookup=generated.lookup,
            hashed_key=generated.hashed,
            scopes=scopes,
            expires_at=expires_at,
            rate_limits=rate_limits,
        )
    return key, generated.raw


def _checked_rate_limits(text: str) -> str:
    try:
        parse_overrides(text)
    except ValueError as exc:
        raise InvalidInput(f"rate_limits: {exc}.", code="invalid") from None
    return text.strip()


def api_key_set_rate_limits(*, key: ApiKey, rate_limits: str) -> ApiKey:
    """Change a key's rate-limit overrides; every process applies them within a second."""
    key.rate_limits = _checked_rate_limits(rate_limits)
    ApiKey.objects.filter(pk=key.pk).update(rate_limits=key.rate_limits)
    verified_keys.forget(key.lookup)
    return key


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke a key for good; revoking twice keeps the first time."""
    if key.revoked_at is None:
        now = timezone.now()
        ApiKey.objects.filter(pk=key.pk, revoked_at__isnull=True).update(revoked_at=now)
        key.refresh_from_db(fields=["revoked_at"])
    verified_keys.forget(key.lookup)
    return key


def api_key_touch(*, key: ApiKey, now: datetime, interval_seconds: float) -> None:
    """Record use at most once per interval: a busy key must not write on every request.

    The write goes with the process's group commit; the request does not wait for it.
    """
    stale_before = now - timedelta(seconds=interval_seconds)
    if key.last_used_at is not None and key.last_used_at > stale_before:
        return
    key.last_used_at = now

    def touch() -> None:
        ApiKey.objects.filter(pk=key.pk).filter(
            Q(last_used_at__isnull=True) | Q(last_used_at__lte=stale_before)
        ).update(last_used_at=now)

    group_commit.submit(call=touch)


def webhook_secret_rotate(*, user: User) -> str:
    """Give ``user`` a new webhook signing secret; events signed from now on use it."""
    user.webhook_secret = User._meta.get_field("webhook_secret").get_default()
    user.save(update_fields=["webhook_secret"])
    return user.webhook_secret


def refresh_tokens_revoke(*, user: User) -> int:
    """Blacklist every refresh token of ``user`` still in force ("log out everywhere");
    returns how many. Access tokens already issued live out their few minutes."""
    live = OutstandingToken.objects.filter(
        user=user, expires_at__gt=timezone.now(), blacklistedtoken__isnull=True
    )
    ended = BlacklistedToken.objects.bulk_create(
        [BlacklistedToken(token=token) for token in live], ignore_conflicts=True
    )
    return len(ended)
