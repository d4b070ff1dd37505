"""Authentication by ``X-API-Key`` header and by JWT bearer token."""

from django.utils import timezone
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.authentication import JWTAuthentication

from accounts import crypto
from accounts.keycache import verified_keys
from accounts.models import ApiKey
from accounts.scopes import user_has_scope
from accounts.services import api_key_touch
from mlplatform.conf import platform_setting

CHALLENGE = 'Bearer realm="api", ApiKey realm="api" header="X-API-Key"'


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``X-API-Key: mlp_...``; the key acts for its owner within its scopes."""

    header = "HTTP_X_API_KEY"
    now = staticmethod(timezone.now)

    def authenticate(self, request):
        raw = request.META.get(self.header)
        if raw is None:
            return None
        key = api_key_verified(raw)
        return key.owner, key

    def authenticate_header(self, request) -> str:
        return CHALLENGE


def api_key_verified(raw: str) -> ApiKey:
    """The usable key ``raw`` (owner and scopes loaded); AuthenticationFailed naming why not."""
    lookup = crypto.parse_lookup(raw.strip())
    if lookup is None:
        raise exceptions.AuthenticationFailed("Malformed API key.", code="malformed_api_key")
    key = verified_keys.get(lookup)
    if key is None or not crypto.key_matches(raw.strip(), key.hashed_key):
        raise exceptions.AuthenticationFailed("Invalid API key.", code="invalid_api_key")
    now = ApiKeyAuthentication.now()
    if key.revoked_at is not None:
        raise exceptions.AuthenticationFailed("This API key was revoked.", code="revoked_api_key")
    if key.is_expired(now):
        raise exceptions.AuthenticationFailed("This API key has expired.", code="expired_api_key")
    if not key.owner.is_active:
        raise exceptions.AuthenticationFailed("The key's owner is inactive.", code="user_inactive")
    api_key_touch(key=key, now=now, interval_seconds=platform_setting("API_KEY_TOUCH_SECONDS"))
    return key


def cached_key(raw: str, scope: str) -> ApiKey | None:
    """For the event loop: the key ``raw`` when ``ApiKeyAuthentication`` would accept it from
    this process's cache and it holds ``scope``; else None (the DRF view decides, and reads)."""
    raw = raw.strip()
    lookup = crypto.parse_lookup(raw)
    key = verified_keys.fresh(lookup) if lookup is not None else None
    if key is None or not crypto.key_matches(raw, key.hashed_key):
        return None
    now = ApiKeyAuthentication.now()
    usable = key.revoked_at is None and not key.is_expired(now) and key.owner.is_active
    if not usable or scope not in key.scopes or not user_has_scope(key.owner, scope):
        return None
    api_key_touch(key=key, now=now, interval_seconds=platform_setting("API_KEY_TOUCH_SECONDS"))
    return key


class BearerJWTAuthentication(JWTAuthentication):
    """simplejwt's bearer tokens, with the platform's challenge header."""

    def authenticate_header(self, request) -> str:
        return CHALLENGE
