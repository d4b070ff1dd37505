"""WebSocket predictions (``/api/v1/predict/ws``): rows in, answers out by the client's ``id``.

A plain ASGI WebSocket handler on the web process's event loop, beside the lean ``/predict``
(docs/decisions/0006). The handshake authenticates once (an API key or a JWT, in a header or,
from a browser, as the second of the subprotocols ``["mlplatform", <key or token>]``) and takes
a stream slot of the user (``StreamSlots``). Then each message holds one row (``input_data``) or
several (``inputs``); each row is counted against the ``predict`` rate limit and goes through the
pipeline as ``/predict`` does (``aprediction_request``, ``aprediction_create``: routing, cache,
shadows, micro-batching, group commit), so its answer is sent once its row is stored. Rows run
together, up to ``WS_MAX_IN_FLIGHT`` per socket counting answers not yet sent: at the bound no
further message is read, and uvicorn stops reading the socket, so a client that sends without
reading holds the server's memory to that bound. Answers come out as rows finish.

Close codes: 4401 no or bad credentials, 4403 a missing scope, 4429 too many open sockets or
rows refused for the rate limit past ``WS_RATE_LIMIT_GRACE``, 4408 idle for ``WS_IDLE_SECONDS``,
1008 a message that is not a JSON object in a text frame, 1009 a message past
``WS_MAX_MESSAGE_BYTES`` (uvicorn's ``--ws-max-size``), 1011 a server error or an unanswered
ping, 1013 the server holds its most open streams. A refused row is an ``error`` answer.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from typing import Any

import orjson
from asgiref.sync import sync_to_async
from django.db import close_old_connections
from rest_framework.exceptions import APIException
from rest_framework_simplejwt.exceptions import InvalidToken

from accounts.authentication import BearerJWTAuthentication, api_key_verified
from accounts.models import ApiKey, User
from accounts.ratelimit import acount
from accounts.scopes import user_has_scope
from mlplatform.conf import platform_setting
from mlplatform.errors import PlatformError
from mlplatform.lean import rendered
from mlplatform.logging import log_context
from mlplatform.middleware import request_id_from
from predictions.serializers import prediction_payload
from predictions.services import aprediction_create, aprediction_request
from predictions.streams.events import StreamsBusy, stream_slots

logger = logging.getLogger(__name__)

PATH = "/api/v1/predict/ws"
SUBPROTOCOL = "mlplatform"
SCOPES = ("stream", "predict")
# Close codes of the platform (4000-4999 are the application's), after the HTTP statuses.
UNAUTHENTICATED, FORBIDDEN, IDLE, RATE_LIMITED = 4401, 4403, 4408, 4429
POLICY_VIOLATION, SERVER_ERROR, TRY_AGAIN_LATER = 1008, 1011, 1013
_FIELDS = frozenset({"id", "input_data", "inputs", "model", "model_version", "timeout"})
_MAX_ID_LENGTH = 200
_MAX_REASON_BYTES = 123  # RFC 6455: a close frame's payload is at most 125 bytes


class Refused(Exception):
    """The socket is closed with ``close_code``, after an error message naming why."""

    def __init__(self, detail: str, code: str, close_code: int) -> None:
        super().__init__(detail)
        self.detail, self.code, self.close_code = detail, code, close_code


async def predict_socket(scope: dict, receive, send) -> None:
    """``/api/v1/predict/ws``: authenticate the handshake, then serve the socket to its end."""
    if (await receive())["type"] != "websocket.connect":
        return
    headers = dict(scope["headers"])
    incoming = headers.get(b"x-request-id", b"").decode("latin-1")
    socket_ = Socket(scope, receive, send, request_id_from(incoming))
    offered = scope.get("subprotocols") or []
    accept = {"type": "websocket.accept"}
    if SUBPROTOCOL in offered:
        accept["subprotocol"] = SUBPROTOCOL  # the secret beside it is never echoed
    with log_context(request_id=socket_.request_id, path=PATH):
        try:
            user, key = await _authenticated(headers, offered)
            release = _slot(user)
        except Refused as exc:
            await send(accept)
            await socket_.refuse(exc)
            return
        try:
            await send(accept)
            await socket_.serve(user, key)
        finally:
            release()


def _credentials(headers: dict[bytes, bytes], offered: list[str]) -> tuple[str, str] | None:
    """("key" or "jwt", the secret) from the headers, else from the subprotocols."""
    raw_key = headers.get(b"x-api-key")
    if raw_key is not None:
        return "key", raw_key.decode("latin-1")
    scheme, _, token = headers.get(b"authorization", b"").decode("latin-1").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return "jwt", token.strip()
    if SUBPROTOCOL in offered:
        others = [value for value in offered if value != SUBPROTOCOL]
        if len(others) == 1:
            return ("key" if others[0].startswith("mlp_") else "jwt"), others[0]
    return None


async def _authenticated(
    headers: dict[bytes, bytes], offered: list[str]
) -> tuple[User, ApiKey | None]:
    """The user and key of the handshake's credentials, holding a scope of ``SCOPES``."""
    credentials = _credentials(headers, offered)
    if credentials is None:
        raise Refused(
            "Authentication credentials were not provided: send an X-API-Key or "
            f"Authorization: Bearer header, or the subprotocols ['{SUBPROTOCOL}', <key or token>].",
            "not_authenticated",
            UNAUTHENTICATED,
        )
    user, key = await sync_to_async(_verified, thread_sensitive=False)(*credentials)
    for scope in SCOPES:
        if (key is None or scope in key.scopes) and user_has_scope(user, scope):
            return user, key
    wanted = " or ".join(repr(scope) for scope in SCOPES)
    raise Refused(f"This credential lacks the {wanted} scope.", "missing_scope", FORBIDDEN)


def _verified(kind: str, secret: str) -> tuple[User, ApiKey | None]:
    """On a thread: the credential checked as the API's authentication classes check it."""
    try:
        if kind == "key":
            key = api_key_verified(secret)
            return key.owner, key
        authentication = BearerJWTAuthentication()
        user = authentication.get_user(authentication.get_validated_token(secret.encode()))
        user_has_scope(user, "predict")  # the scopes are read here, off the event loop
        return user, None
    except InvalidToken:
        raise Refused(
            "The token is invalid or expired.", "token_not_valid", UNAUTHENTICATED
        ) from None
    except APIException as exc:
        raise Refused(str(exc.detail), exc.get_codes(), UNAUTHENTICATED) from None
    finally:
        close_old_connections()


def _slot(user: User):
    try:
        return stream_slots.acquire(user.pk)
    except StreamsBusy as exc:
        close_code = RATE_LIMITED if exc.status_code == 429 else TRY_AGAIN_LATER
        raise Refused(exc.detail, exc.code, close_code) from None


class Socket:
    """One accepted socket: reads messages, runs their rows, sends the answers."""

    timer = staticmethod(time.monotonic)

    def __init__(self, scope: dict, receive, send, request_id: str) -> None:
        self.scope = scope
        self._receive = receive
        self._send = send
        self.request_id = request_id
        self.socket_id = uuid.uuid4().hex
        self.user: User | None = None
        self.key: ApiKey | None = None
        self.active_at = self.timer()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.answered = self.failed = 0

    async def refuse(self, refused: Refused) -> None:
        logger.info("socket refused (%d): %s", refused.close_code, refused.detail)
        await self._answer(_error(None, refused.detail, refused.code))
        await self.close(refused.close_code, refused.detail)

    async def serve(self, user: User, key: ApiKey | None) -> None:
        self.user, self.key = user, key
        self.principal = f"key:{key.pk}" if key is not None else f"user:{user.pk}"
        started = self.timer()
        slots = asyncio.Semaphore(platform_setting("WS_MAX_IN_FLIGHT"))
        rows: set[asyncio.Task] = set()
        try:
            await self._read(slots, rows)
        finally:
            for task in rows:
                task.cancel()
            logger.info(
                "socket %s closed (%s) after %.3f s: %d rows answered, %d refused",
                self.socket_id,
                self.close_code,
                self.timer() - started,
                self.answered,
                self.failed,
            )

    async def _read(self, slots: asyncio.Semaphore, rows: set[asyncio.Task]) -> None:
        """Read messages until the client leaves or the socket is closed; start their rows."""
        idle = platform_setting("WS_IDLE_SECONDS")
        grace = platform_setting("WS_RATE_LIMIT_GRACE")
        limited = 0  # rows refused for the rate limit since the last one taken
        closed = asyncio.ensure_future(self.closed.wait())
        receiving: asyncio.Future | None = None
        try:
            while not self.closed.is_set():
                if receiving is None:
                    receiving = asyncio.ensure_future(self._receive())
                wait = idle if rows else max(0.0, idle - (self.timer() - self.active_at))
                await asyncio.wait(
                    {receiving, closed}, timeout=wait, return_when=asyncio.FIRST_COMPLETED
                )
                if self.closed.is_set():
                    return
                if not receiving.done():
                    if not rows and self.timer() - self.active_at >= idle:
                        await self.close(IDLE, f"Idle for {idle:g} s.")
                    continue
                message, receiving = receiving.result(), None
                if message["type"] == "websocket.disconnect":
                    self.close_code = message.get("code")
                    return
                self.active_at = self.timer()
                parsed = await self._parsed(message)
                if parsed is None:
                    continue
                ident, items, options = parsed
                for index, row in items:
                    await slots.acquire()  # at the bound: wait, reading nothing meanwhile
                    if self.closed.is_set():
                        return
                    usage = await acount(
                        "predict", principal=self.principal, user=self.user, api_key=self.key
                    )
                    if usage is not None and usage.limited:
                        limited += 1
                        self.failed += 1
                        await self._answer(_error(ident, usage.describe(), "rate_limited", index))
                        slots.release()
                        if limited > grace:
                            await self.close(RATE_LIMITED, usage.describe())
                            return
                        continue
                    limited = 0
                    task = asyncio.ensure_future(self._row(slots, ident, index, row, options))
                    rows.add(task)
                    task.add_done_callback(rows.discard)
        finally:
            closed.cancel()
            if receiving is not None:
                receiving.cancel()

    async def _parsed(self, message: dict) -> tuple[Any, list, dict] | None:
        """The id, (index, row) pairs and options of a message; None when it was refused."""
        text = message.get("text")
        if text is None:
            await self.close(POLICY_VIOLATION, "Send JSON objects as text messages.")
            return None
        try:
            data = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            await self.close(POLICY_VIOLATION, f"A message is not JSON: {exc}")
            return None
        if type(data) is not dict:
            await self.close(POLICY_VIOLATION, "A message must be a JSON object.")
            return None
        ident = data.get("id")
        if not (ident is None or type(ident) is int or type(ident) is str):
            ident = None
            problem = "id must be a string or an integer."
        elif type(ident) is str and len(ident) > _MAX_ID_LENGTH:
            ident = None
            problem = f"id must be at most {_MAX_ID_LENGTH} characters."
        else:
            problem = _problem(data)
        if problem is not None:
            self.failed += 1
            await self._answer(_error(ident, problem, "invalid_input"))
            return None
        options = {
            "model_name": data.get("model"),
            "version_label": data.get("model_version"),
            "timeout": data.get("timeout"),
        }
        if "inputs" in data:
            return ident, list(enumerate(data["inputs"])), options
        return ident, [(None, data["input_data"])], options

    async def _row(self, slots, ident, index: int | None, row: Any, options: dict) -> None:
        """Predict and store one row, then send its answer; its slot is free once it is sent."""
        try:
            with log_context(request_id=self.request_id, socket_id=self.socket_id):
                try:
                    checked = await aprediction_request(
                        user=self.user,
                        api_key=self.key,
                        input_data=row,
                        request_id=self.request_id,
                        **options,
                    )
                    prediction = await aprediction_create(checked)
                except PlatformError as exc:
                    self.failed += 1
                    answer = _error(ident, exc.detail, exc.code, index)
                else:
                    self.answered += 1
                    answer = {"type": "prediction", "id": ident}
                    if index is not None:
                        answer["index"] = index
                    answer |= prediction_payload(prediction)
                await self._answer(answer)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("socket %s: a row failed on the server", self.socket_id)
            await self.close(SERVER_ERROR, "The server failed; the socket is closed.")
        finally:
            slots.release()

    async def _answer(self, answer: dict) -> None:
        """Send one answer; a client that takes none for ``STREAM_SEND_TIMEOUT`` is dropped."""
        if self.closed.is_set():
            return
        deadline = platform_setting("STREAM_SEND_TIMEOUT")
        message = {"type": "websocket.send", "text": rendered(answer).decode()}
        try:
            async with asyncio.timeout(deadline):
                await self._send(message)
        except TimeoutError:
            logger.warning(
                "socket %s: the client read nothing for %g s; it is dropped",
                self.socket_id,
                deadline,
            )
            self.close_code = 1006
            self.closed.set()  # the handler returns: uvicorn closes the connection
            return
        except (OSError, RuntimeError):
            # The client is gone (uvicorn's ClientDisconnected), or uvicorn closed the socket
            # itself (a malformed frame, no pong) before the reader saw its disconnect.
            self.closed.set()
            return
        self.active_at = self.timer()

    async def close(self, code: int, reason: str) -> None:
        """Close the socket with ``code`` (once); rows still running are cancelled."""
        if self.closed.is_set():
            return
        self.close_code = code
        self.closed.set()
        reason = reason.encode()[:_MAX_REASON_BYTES].decode(errors="ignore")
        with contextlib.suppress(OSError):  # the client is gone already
            await self._send({"type": "websocket.close", "code": code, "reason": reason})


def _problem(data: dict) -> str | None:
    """What is wrong with a message's fields, else None (its rows are checked one by one)."""
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        return f"Unknown fields: {', '.join(unknown)}."
    if ("input_data" in data) == ("inputs" in data):
        return "Send either 'input_data' (one row) or 'inputs' (several rows)."
    if "inputs" in data:
        inputs = data["inputs"]
        if type(inputs) is not list or not inputs:
            return "inputs must be a non-empty list of rows."
        most = platform_setting("MAX_STREAM_ROWS")
        if len(inputs) > most:
            return f"inputs: at most {most} rows in one message, got {len(inputs)}."
    for name in ("model", "model_version"):
        value = data.get(name)
        if value is not None and (type(value) is not str or not value.strip()):
            return f"{name} must be a non-empty string."
    timeout = data.get("timeout")
    if timeout is not None:
        most = platform_setting("MAX_TIMEOUT")
        if type(timeout) not in (int, float) or not 0 < timeout <= most:
            return f"timeout must be a number of seconds above 0 and at most {most:g}."
    return None


def _error(ident: Any, detail: str, code: str, index: int | None = None) -> dict:
    error = {"type": "error", "id": ident}
    if index is not None:
        error["index"] = index
    return error | {"detail": detail, "code": code}


ROUTES = {PATH: predict_socket, PATH + "/": predict_socket}
