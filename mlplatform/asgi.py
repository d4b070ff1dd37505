"""ASGI entry point: the lean handlers, and Django behind them.

``manage.py serve`` runs this application on uvicorn (httptools, uvloop). A request goes to:

* the lean handler of its path (``settings.LEAN_HANDLERS``, when ``PLATFORM["LEAN_HANDLERS"]``
  is on: exact paths, then patterns), which serves the common case of its endpoint with the
  same contract as the DRF view and hands every other request to Django, body included;
* Django's ASGI handler when the path answers with an event stream (``settings.STREAMING_PATHS``):
  an open stream is an asynchronous generator there and costs no thread, and a client that
  stops reading is dropped after ``STREAM_SEND_TIMEOUT``;
* else Django's WSGI handler on a pool of ``WEB_THREADS`` threads (a2wsgi). Django's views and
  middleware are synchronous: on a pooled thread a request runs them straight through, with
  the thread's persistent database connection, where the ASGI handler would start a thread for
  each request, open it a connection, and cross between the thread and the event loop around
  each middleware (docs/decisions/0001).

A request body past its path's limit is refused (413) before Django reads it. A WebSocket goes
to the handler of its path (``settings.WEBSOCKET_HANDLERS``), also on the event loop; a plain
HTTP request to that path is answered 426 (upgrade required).
"""

import asyncio
import logging
import os
import re
from collections.abc import Awaitable, Callable
from importlib import import_module
from typing import Any

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mlplatform.settings")
# The threads of a web process share a pool of database connections (PostgreSQL; settings.py).
os.environ.setdefault("MLPLATFORM_DB_POOL", "1")

import django  # noqa: E402 - after the environment it reads
from a2wsgi import WSGIMiddleware  # noqa: E402
from django.conf import settings  # noqa: E402
from django.core.asgi import get_asgi_application  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
logger = logging.getLogger(__name__)
# A lean handler: the request, the application that serves what the handler does not, and the
# match of its path's pattern (None for an exact path).
LeanHandler = Callable[[Scope, Receive, Send, ASGIApp, re.Match | None], Awaitable[None]]


class Platform:
    """Routes each request to its lean handler, or to Django, guarding body sizes."""

    def __init__(
        self,
        *,
        views: ASGIApp,
        streams: ASGIApp,
        streaming: re.Pattern,
        routes: dict[str, LeanHandler],
        patterns: dict[str, LeanHandler],
        sockets: dict[str, ASGIApp] | None = None,
    ) -> None:
        self.views = views
        self.sockets = sockets or {}
        self.streams = streams
        self.streaming = streaming
        self.routes = routes
        self.patterns = [(re.compile(pattern), handler) for pattern, handler in patterns.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            path = scope["path"]
            handler, match = self.routes.get(path), None
            if handler is None:
                for pattern, candidate in self.patterns:
                    if match := pattern.match(path):
                        handler = candidate
                        break
            if handler is not None:
                await handler(scope, receive, send, self._django, match)
            elif path in self.sockets:
                await _upgrade_required(send, scope)
            else:
                await self._django(scope, receive, send)
        elif kind == "lifespan":
            await _lifespan(receive, send)
        elif kind == "websocket" and scope["path"] in self.sockets:
            await self.sockets[scope["path"]](scope, receive, send)
        else:  # a WebSocket no route takes: refused in the handshake (403)
            await send({"type": "websocket.close", "code": 1000})

    async def _django(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Django, refusing a body past the path's limit before it is read."""
        from mlplatform.middleware import body_limit

        if self.streaming.match(scope["path"]):
            django_app, send = self.streams, _with_send_deadline(send, scope)
        else:
            django_app = self.views
        limit = body_limit(scope["path"])
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _too_large(send, scope, limit)
            return
        received = 0
        too_large = started = False

        async def counted() -> dict:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        await django_app(scope, counted, watched)
        if too_large and not started:
            await _too_large(send, scope, limit)


def _with_send_deadline(send: Send, scope: Scope) -> Send:
    """``send`` for an event stream: a client that has not taken an event within
    ``STREAM_SEND_TIMEOUT`` seconds (the server's buffers to it are full) is dropped.

    To Django the stream then ends as when its client disconnects mid-send: the response is
    closed, and with it the stream's slot. uvicorn closes the connection.
    """
    from mlplatform.conf import platform_setting

    deadline = platform_setting("STREAM_SEND_TIMEOUT")

    async def send_within_deadline(message: dict) -> None:
        try:
            async with asyncio.timeout(deadline):
                await send(message)
        except TimeoutError:
            logger.warning(
                "%s: the client read nothing for %g s; its stream is dropped",
                scope["path"],
                deadline,
            )
            raise asyncio.CancelledError from None

    return send_within_deadline


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _too_large(send: Send, scope: Scope, limit: int) -> None:
    """413 in the error shape of the path, with the request's id, as the middleware answers."""
    from mlplatform.logging import log_context
    from mlplatform.middleware import error_content, request_id_from, too_large_message

    incoming = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
    request_id = request_id_from(incoming.decode("latin-1"))
    with log_context(request_id=request_id):
        body = error_content(scope["path"], too_large_message(limit), "request_too_large")
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _upgrade_required(send: Send, scope: Scope) -> None:
    """426 to a plain HTTP request for a WebSocket's path, in the API's error shape."""
    from mlplatform.middleware import error_content

    body = error_content(
        scope["path"],
        "This is a WebSocket endpoint: open it with a WebSocket client (docs/websockets.md).",
        "upgrade_required",
    )
    await send(
        {
            "type": "http.response.start",
            "status": 426,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"upgrade", b"websocket"),
                (b"connection", b"Upgrade"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    """Start-up needs nothing; at shutdown (after the last request), what is queued is written."""
    from asgiref.sync import sync_to_async

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            from mlplatform.background import shutdown

            await sync_to_async(shutdown)()
            await send({"type": "lifespan.shutdown.complete"})
            return


def build(*, lean: bool | None = None) -> ASGIApp:
    """The application; ``lean=False`` serves every request through Django alone."""
    from mlplatform.conf import platform_setting

    django.setup(set_prefix=False)
    if lean is None:
        lean = platform_setting("LEAN_HANDLERS")
    routes: dict[str, LeanHandler] = {}
    patterns: dict[str, LeanHandler] = {}
    if lean:
        for dotted in settings.LEAN_HANDLERS:
            module = import_module(dotted)
            routes.update(getattr(module, "ROUTES", {}))
            patterns.update(getattr(module, "PATTERNS", {}))
    sockets: dict[str, ASGIApp] = {}
    for dotted in settings.WEBSOCKET_HANDLERS:
        sockets.update(import_module(dotted).ROUTES)
    application = Platform(
        views=WSGIMiddleware(get_wsgi_application(), workers=settings.WEB_THREADS),
        streams=get_asgi_application(),
        streaming=re.compile("|".join(f"(?:{p})" for p in settings.STREAMING_PATHS)),
        routes=routes,
        patterns=patterns,
        sockets=sockets,
    )
    _spare_the_garbage_collector()
    return application


# Python's defaults (700, 10, 10) but full passes a hundred times rarer.
GC_THRESHOLDS = (700, 10, 1000)


def _spare_the_garbage_collector() -> None:
    """Keep the garbage collector's full passes off the request path.

    A full collection walks every object the collector tracks, holding the interpreter, and
    no request moves meanwhile; the more objects, the longer. What exists once every view is
    imported lives as long as the process: ``gc.freeze()`` moves it to a generation that
    collections skip, as the ``gc`` documentation suggests. And the request path leaves no
    reference cycles: the full passes that the objects of requests in flight trigger find
    nothing to free, so they are made rarer (``GC_THRESHOLDS``; docs/decisions/0003).
    """
    import gc

    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 - imports every view module
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


application = build()
