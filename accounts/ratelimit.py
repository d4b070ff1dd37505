"""Rate limits per principal, counted by django-ratelimit in the shared cache.

Every API view belongs to a *group* (``ratelimit_group`` on the view; ``api`` when it names
none). A request is counted against its principal: the API key, else the user, else the
client's IP address (anonymous endpoints such as token and login); a user's requests also
count against the user's ceiling (``USER_RATE_LIMITS``), whichever key or token they carry.
The rate of a group comes from, in order: the key's own override, its owner's override, the
platform default (the ``RATE_LIMITS`` knob). The password forms outside the API
count their POSTs in the ``auth`` group too (``accounts/login.py``).

Counters live in the Django cache: Redis on the production profile, so every process and host
shares them; the process-local memory cache on the embedded profile, where the one web process
is the sharing unit.
"""

import asyncio
import functools
import math
import time
import weakref
from dataclasses import dataclass
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import caches
from django_ratelimit.core import ALL, EXPIRATION_FUDGE, _get_window, _make_cache_key, get_usage
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import RedisError
from rest_framework import exceptions
from rest_framework.throttling import BaseThrottle

from accounts.models import ApiKey
from accounts.rates import parse_overrides, parse_rate
from mlplatform.clients import client_ip
from mlplatform.conf import platform_setting

DEFAULT_GROUP = "api"
_PERIOD_WORDS = {1: "second", 60: "minute", 3600: "hour", 86400: "day"}


def principal_key(user, api_key, request) -> str:
    if api_key is not None:
        return f"key:{api_key.pk}"
    if user is not None and user.is_authenticated:
        return f"user:{user.pk}"
    return f"ip:{client_ip(request)}"


def rate_for(group: str, user, api_key) -> tuple[int, int]:
    """The rate (count, seconds) that applies to this principal in this group."""
    for holder in (api_key, user if user is not None and user.is_authenticated else None):
        text = getattr(holder, "rate_limits", "") if holder is not None else ""
        if text:
            rate = _overrides(text).get(group)
            if rate:
                return rate
    return _parsed(platform_setting("RATE_LIMITS")[group])


@functools.lru_cache(maxsize=4096)
def _overrides(text: str) -> dict[str, tuple[int, int]]:
    """A principal's overrides, parsed once (each request of theirs reads them)."""
    return {group: _parsed(rate) for group, rate in parse_overrides(text).items()}


@functools.lru_cache(maxsize=256)
def _parsed(rate: str) -> tuple[int, int]:
    return parse_rate(rate)


@dataclass(frozen=True, slots=True)
class Usage:
    group: str
    limit: int
    period: int
    count: int
    reset_at: int  # Unix time at which the window ends

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.count)

    @property
    def limited(self) -> bool:
        return self.count > self.limit

    @property
    def retry_after(self) -> int:
        return max(1, self.reset_at - int(time.time()))

    def headers(self) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_at),
        }

    def describe(self) -> str:
        per = _PERIOD_WORDS.get(self.period, f"{self.period} seconds")
        return (
            f"Rate limit of {self.limit} requests per {per} for {self.group!r} exceeded; "
            f"retry in {self.retry_after} s."
        )


def count(group: str, *, principal: str, user=None, api_key=None) -> Usage | None:
    """Count one request of ``group`` for ``principal`` (``principal_key``); the usage after
    counting it, or None when rate limiting is switched off (``RATELIMIT_ENABLE``).

    A user's request (with a key or a token) counts for the user too: ``USER_RATE_LIMITS`` is
    a ceiling over all of their keys and tokens together. The usage returned is the tighter.
    """
    counters = _counters(group, principal, user, api_key)
    usages = []
    for counter_principal, (limit, period) in counters:
        usage = get_usage(
            None,  # the counter's key is the principal's; django-ratelimit needs no request
            group=group,
            key=lambda _group, _request, p=counter_principal: p,
            rate=(limit, period),
            increment=True,
        )
        if usage is None:
            return None
        reset_at = int(time.time()) + max(0, usage["time_left"])
        usages.append(Usage(group, limit, period, usage["count"], reset_at))
    return _tightest(usages)


async def acount(group: str, *, principal: str, user=None, api_key=None) -> Usage | None:
    """``count`` for the event loop, on the same counters.

    In memory (the embedded profile's cache) it counts at once. In Redis it counts every
    counter in one command of the loop's own client (``_COUNT``), where django-ratelimit
    through django-redis takes two commands per counter and a thread: the keys and their
    expiry are the ones ``get_usage`` uses, so both count the same requests. When Redis fails
    it counts as ``count`` does, which raises what the view would.
    """
    redis = _async_redis()
    if redis is None or not settings.RATELIMIT_ENABLE:
        return count(group, principal=principal, user=user, api_key=api_key)
    counters = _counters(group, principal, user, api_key)
    cache = caches[settings.RATELIMIT_USE_CACHE]
    windows, keys, expiries = [], [], []
    for counter_principal, (limit, period) in counters:
        window = _get_window(counter_principal, period)
        windows.append(window)
        keys.append(
            cache.make_key(_make_cache_key(group, window, (limit, period), counter_principal, ALL))
        )
        expiries.append(period + EXPIRATION_FUDGE)
    try:
        counts = await _count_script(redis)(keys=keys, args=expiries)
    except RedisError:
        counted = sync_to_async(count, thread_sensitive=False)
        return await counted(group, principal=principal, user=user, api_key=api_key)
    return _tightest(
        [
            Usage(group, limit, period, counts[i], reset_at=windows[i])
            for i, (_, (limit, period)) in enumerate(counters)
        ]
    )


# Each key counts one more; a key that this creates expires when its window is over (as
# django-ratelimit's ``add`` then ``incr``), in the same atomic step.
_COUNT = """
local counts = {}
for i, key in ipairs(KEYS) do
    counts[i] = redis.call("INCR", key)
    if counts[i] == 1 then
        redis.call("EXPIRE", key, ARGV[i])
    end
end
return counts
"""


def _count_script(redis: "AsyncRedis"):
    script = _scripts.get(redis)
    if script is None:
        script = _scripts[redis] = redis.register_script(_COUNT)
    return script


def _counters(group: str, principal: str, user, api_key) -> list[tuple[str, tuple[int, int]]]:
    """The counters a request adds to: its principal's, and its user's ceiling."""
    counters = [(principal, rate_for(group, user, api_key))]
    if user is not None and user.is_authenticated:
        ceiling = _parsed(platform_setting("USER_RATE_LIMITS")[group])
        counters.append((f"user-all:{user.pk}", ceiling))
    return counters


def _tightest(usages: list[Usage]) -> Usage:
    """The usage that limits: one over its limit, else the one with the least remaining."""
    return min(usages, key=lambda usage: (not usage.limited, usage.remaining))


_clients: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis]" = (
    weakref.WeakKeyDictionary()
)
_scripts: "weakref.WeakKeyDictionary[AsyncRedis, Any]" = weakref.WeakKeyDictionary()


def _async_redis() -> "AsyncRedis | None":
    """The running loop's client of the rate-limit cache's Redis; None for any other cache."""
    cache = settings.CACHES[settings.RATELIMIT_USE_CACHE]
    if cache["BACKEND"] != "django_redis.cache.RedisCache":
        return None
    loop = asyncio.get_running_loop()
    client = _clients.get(loop)
    if client is None:
        options = cache.get("OPTIONS", {})
        client = _clients[loop] = AsyncRedis.from_url(
            cache["LOCATION"],
            socket_connect_timeout=options.get("SOCKET_CONNECT_TIMEOUT"),
            socket_timeout=options.get("SOCKET_TIMEOUT"),
        )
    return client


def consume(request, group: str, *, user=None, api_key=None) -> Usage | None:
    """``count`` a Django request; its ``ratelimit`` attribute receives the usage, for the
    response headers."""
    principal = principal_key(user, api_key, request)
    usage = count(group, principal=principal, user=user, api_key=api_key)
    if usage is not None:
        request.ratelimit = usage
    return usage


class RateLimited(exceptions.Throttled):
    default_code = "rate_limited"

    def __init__(self, usage: Usage):
        # The detail already says when to retry; DRF would add its own sentence for ``wait``.
        super().__init__(detail=usage.describe(), code="rate_limited")
        self.wait = usage.retry_after  # the Retry-After header
        self.usage = usage


class PlatformRateThrottle(BaseThrottle):
    """DRF throttle: counts every authenticated (or anonymous) call in the view's group."""

    def allow_request(self, request, view) -> bool:
        group = getattr(view, "ratelimit_group", None) or DEFAULT_GROUP
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        usage = consume(request._request, group, user=request.user, api_key=api_key)
        if usage is not None and usage.limited:
            raise RateLimited(usage)
        return True


class RateLimitHeadersMiddleware:
    """``X-RateLimit-*`` on every response of a rate-limited endpoint."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        usage: Usage | None = getattr(request, "ratelimit", None)
        if usage is not None:
            for name, value in usage.headers().items():
                response[name] = value
            if usage.limited and "Retry-After" not in response:
                response["Retry-After"] = str(math.ceil(usage.retry_after))
        return response
