"""Answering an API request on the event loop as Django's middleware and DRF would.

A lean handler (``settings.LEAN_HANDLERS``) serves the common case of a DRF view's endpoint
without Django's request, its middleware or the view, and hands every other request to them.
What any such handler needs lives here: the request read from the ASGI scope, with its body
read within a limit and handed on unchanged when the request goes to Django; the checks that
tell a plain JSON API call from one whose answer depends on more (a browser's ``Accept``, CORS,
cookies, an HTTPS redirect, an ``Idempotency-Key``); and the answer, with the headers the
middleware stack and DRF give the view's answer, logged, tallied and counted as
``RequestIdMiddleware`` and ``RequestMetricsMiddleware`` do.
"""

import functools
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from django.conf import settings
from django.core.signals import setting_changed

from mlplatform import metrics
from mlplatform.api.renderers import ORJSONRenderer
from mlplatform.errors import PlatformError, error_body
from mlplatform.logging import request_logged
from mlplatform.middleware import request_id_from

logger = logging.getLogger(__name__)

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]

_JSON_TYPES = {"application/json", "application/json; charset=utf-8"}
_ACCEPTED = {"*/*", "application/*", "application/json"}
_RENDER = ORJSONRenderer().render


class LeanRequest:
    """An HTTP request as the ASGI server gave it, and what a lean handler makes of it."""

    def __init__(self, scope: dict, receive: Receive) -> None:
        self.scope = scope
        self.path: str = scope["path"]
        self.method: str = scope["method"]
        self.headers: dict[bytes, bytes] = dict(scope["headers"])
        self.request_id = request_id_from(self.header(b"x-request-id") or "")
        self.started = time.perf_counter()
        self.body = b""
        self._receive = receive
        self._more = True  # the body has not been read to its end

    def header(self, name: bytes) -> str | None:
        value = self.headers.get(name)
        return None if value is None else value.decode("latin-1")

    def plain_post(self) -> bool:
        """A POST whose answer depends on nothing but its body and its credentials.

        Anything else goes to Django: repeated headers, an ``Origin`` (CORS), cookies
        (sessions), a body of unknown length or compressed, or plain HTTP that the production
        profile redirects to HTTPS.
        """
        headers = self.headers
        return (
            self.method == "POST"
            and len(headers) == len(self.scope["headers"])
            and b"content-length" in headers
            and headers.get(b"content-encoding", b"identity") == b"identity"
            and b"origin" not in headers
            and b"cookie" not in headers
            and (self.secure or not _redirected_to_https(self.path))
        )

    def plain_json_post(self) -> bool:
        """``plain_post`` of JSON to a DRF view that negotiates and is idempotent on demand:
        another content type or ``Accept`` (a browser gets the browsable API) and an
        ``Idempotency-Key`` go to Django too."""
        headers = self.headers
        accept = headers.get(b"accept")
        return (
            self.plain_post()
            and (headers.get(b"content-type") or b"").decode("latin-1").lower() in _JSON_TYPES
            and (accept is None or _accepts_json(accept))
            and b"idempotency-key" not in headers
        )

    @property
    def secure(self) -> bool:
        """As Django's ``request.is_secure()``: the scheme, or the trusted proxy's header."""
        proxy = _proxy_ssl_header()
        if proxy is not None:
            return self.header(proxy[0]) == proxy[1]
        return self.scope.get("scheme") == "https"

    async def read_body(self, limit: int) -> bool:
        """Read the whole body if it is at most ``limit`` bytes; False (the rest unread) if not."""
        try:
            declared = int(self.headers[b"content-length"])
        except (KeyError, ValueError):
            return False
        if declared > limit:
            return False
        chunks = []
        while self._more:
            message = await self._receive()
            if message["type"] != "http.request":
                return False  # the client left
            chunks.append(message.get("body", b""))
            self._more = message.get("more_body", False)
        self.body = b"".join(chunks)
        return len(self.body) <= limit

    def replay(self) -> Receive:
        """A ``receive`` that gives what was read of the body first, then the rest as it comes."""
        first = {"type": "http.request", "body": self.body, "more_body": self._more}
        pending = [first]

        async def receive() -> dict:
            if pending:
                return pending.pop()
            return await self._receive()

        return receive

    async def answer(
        self,
        send: Send,
        status: int,
        body: bytes,
        *,
        view: str,
        allow: str,
        vary: str = "Accept",
        content_type: bytes = b"application/json",
        extra: Sequence[tuple[bytes, bytes]] = (),
        usage: Any = None,
        key: Any = None,
    ) -> None:
        """Send the answer with the headers of the view's, then log, tally and count it.

        ``vary`` is what the view varies on (DRF: ``Accept`` when it negotiates), ``extra``
        headers of its own; ``usage`` the rate-limit usage counted for the request
        (``accounts.ratelimit``); ``key`` the API key it was made with, logged as its principal.
        """
        headers = [
            (b"content-type", content_type),
            (b"vary", _vary(self.path, vary)),
            (b"allow", allow.encode()),
            *extra,
        ]
        if usage is not None:
            headers += [(k.lower().encode(), v.encode()) for k, v in usage.headers().items()]
            if usage.limited:
                headers.append((b"retry-after", b"%d" % usage.retry_after))
        headers.append((b"content-length", b"%d" % len(body)))
        headers += _security_headers(self.secure)
        headers.append((b"x-request-id", self.request_id.encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        seconds = time.perf_counter() - self.started
        if metrics.instrumented():
            client = self.scope.get("client")
            request_logged(
                method=self.method,
                path=self.path,
                status=status,
                seconds=seconds,
                principal=f"key:{key.prefix}" if key is not None else None,
                user_id=key.owner_id if key is not None else None,
                remote_addr=client[0] if client else None,
                usage=usage,
            )
        metrics.request_observed(
            view=view, method=self.method, secure=self.secure, status=status, seconds=seconds
        )


def rendered(data: Any) -> bytes:
    """A body as the API's JSON renderer writes it."""
    return _RENDER(data)


def error_content(exc: PlatformError) -> bytes:
    """The body the API's exception handler answers a ``PlatformError`` with."""
    return orjson.dumps(error_body(exc.detail, exc.code))


def _accepts_json(accept: bytes) -> bool:
    types = {part.strip() for part in accept.decode("latin-1").lower().split(",")}
    return bool(types & _ACCEPTED) and "text/html" not in types and not any(";" in t for t in types)


@functools.cache
def _redirected_to_https(path: str) -> bool:
    if not settings.SECURE_SSL_REDIRECT:
        return False
    relative = path.lstrip("/")
    return not any(re.search(pattern, relative) for pattern in settings.SECURE_REDIRECT_EXEMPT)


@functools.cache
def _security_headers(secure: bool) -> tuple[tuple[bytes, bytes], ...]:
    """What ``XFrameOptionsMiddleware`` and ``SecurityMiddleware`` add to an answer (read from
    the settings once, as those middlewares read them when they are made)."""
    headers = []
    if getattr(settings, "X_FRAME_OPTIONS", "DENY"):
        headers.append((b"x-frame-options", settings.X_FRAME_OPTIONS.upper().encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    if settings.SECURE_REFERRER_POLICY:
        policy = settings.SECURE_REFERRER_POLICY
        if not isinstance(policy, str):
            policy = ",".join(policy)
        headers.append(
            (b"referrer-policy", ",".join(p.strip() for p in policy.split(",")).encode())
        )
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    if secure and settings.SECURE_HSTS_SECONDS:
        sts = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            sts += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            sts += "; preload"
        headers.append((b"strict-transport-security", sts.encode()))
    return tuple(headers)


@functools.cache
def _vary(path: str, vary: str) -> bytes:
    """The view's ``Vary``, with ``origin`` where django-cors-headers adds it."""
    if re.match(settings.CORS_URLS_REGEX, path):
        vary = f"{vary}, origin" if vary else "origin"
    return vary.encode()


@functools.cache
def _proxy_ssl_header() -> tuple[bytes, str] | None:
    """``SECURE_PROXY_SSL_HEADER`` as the ASGI header name and value, if set."""
    proxy = getattr(settings, "SECURE_PROXY_SSL_HEADER", None)
    if not proxy:
        return None
    return proxy[0].removeprefix("HTTP_").lower().replace("_", "-").encode(), proxy[1]


def _forget(**kwargs) -> None:
    for cached in (_security_headers, _vary, _redirected_to_https, _proxy_ssl_header):
        cached.cache_clear()


setting_changed.connect(_forget)
