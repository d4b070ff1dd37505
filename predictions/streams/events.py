"""Server-Sent Events: the wire format, open-stream slots, and the event streams.

Streams are asynchronous generators that the web process's event loop writes out as they yield
(Django's ASGI handler): an open stream costs no thread, only its generator. A prediction
stream predicts each row through the pipeline as ``/predict`` does, and writes a keep-alive
comment every ``STREAM_HEARTBEAT_SECONDS`` a slow row takes. When the client goes away the
handler cancels the stream at its next wait, and no further row is predicted.

Streams of batch job events wait, mostly: ``job_watcher`` reads the state of every job watched
in a process with one query per poll, on a thread, so a hundred open streams cost one query
per half second.
"""

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from asgiref.sync import sync_to_async

from accounts.models import ApiKey, User
from mlplatform.conf import platform_setting
from mlplatform.errors import DatabaseUnavailable, InvalidInput, PlatformError
from mlplatform.logging import log_context
from predictions.batch.results import job_events
from predictions.models import BatchJob
from predictions.pipeline import principal_id, route
from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input
from predictions.services.predict import aprediction_create, aprediction_request

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/event-stream"
HEARTBEAT = b": keep-alive\n\n"
# Headers of every event stream: never cached, never buffered by a proxy (nginx honours
# X-Accel-Buffering), so each event reaches the client when it is written.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def sse_event(event: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """One event: optional ``id``, ``event`` name and a one-line JSON ``data`` field."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data, option=_JSON) + b"\n\n"


class StreamsBusy(PlatformError):
    status_code = 503
    code = "too_many_streams"


class StreamSlots:
    """Counts the streams this process holds open, in all and per user.

    One more than ``MAX_OPEN_STREAMS`` is refused (503), and one more than
    ``MAX_OPEN_STREAMS_PER_USER`` for the same user, all of their keys and tokens together
    (429): one user cannot take the slots other users' streams need.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # slots are taken in views, which run on threads
        self.open = 0
        self._by_user: dict[int, int] = {}

    def acquire(self, user_id: int) -> Callable[[], None]:
        """Take a slot for ``user_id`` (StreamsBusy when none is free); return the function
        that frees it, once."""
        limit = platform_setting("MAX_OPEN_STREAMS")
        per_user = platform_setting("MAX_OPEN_STREAMS_PER_USER")
        with self._lock:
            held = self._by_user.get(user_id, 0)
            if held >= per_user:
                raise StreamsBusy(
                    f"You hold {held} open streams, the most one user may hold at once; "
                    "close one first.",
                    status_code=429,
                )
            if self.open >= limit:
                raise StreamsBusy(
                    f"This server holds its limit of {limit} open streams; retry shortly."
                )
            self.open += 1
            self._by_user[user_id] = held + 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.open -= 1
                    left = self._by_user.pop(user_id) - 1
                    if left:
                        self._by_user[user_id] = left

        return release


stream_slots = StreamSlots()


class HeldStream:
    """Events that hold a stream slot until they end, fail, are closed, or are dropped.

    The slot is freed by whichever comes first: the last event, an error, ``close()`` (the
    response closed), or the stream being dropped unread (a client gone before it started).
    """

    def __init__(self, events: AsyncIterator[bytes], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release

    def __aiter__(self) -> "HeldStream":
        return self

    async def __anext__(self) -> bytes:
        try:
            return await anext(self._events)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self._release()

    def __del__(self) -> None:
        self._release()


def held_stream(events: AsyncIterator[bytes], user_id: int) -> HeldStream:
    """Take a stream slot of ``user_id`` for ``events`` (StreamsBusy when none is free)."""
    return HeldStream(events, stream_slots.acquire(user_id))


def stream_inputs(
    *,
    field: str,
    value: Any,
    model_name: str | None,
    version_label: str | None,
    user: User,
    api_key: ApiKey | None,
) -> tuple[str, list]:
    """Check a stream request before it starts: model, version and every row.

    ``field`` is ``input_data`` (one row) or ``inputs`` (rows), and ``value`` what was sent.
    Returns the model's name and the rows as sent (each is stored as its prediction's input).
    An unknown model or version is a 404 and a bad row a 400 naming it, before any event.
    """
    model = route(model_name, version_label, principal=principal_id(user, api_key)).model
    nested = type(value) is list and (not value or not _is_scalar(value[0]))
    items = value if field == "inputs" and nested else [value]
    try:
        rows = rows_from_input(
            items if field == "inputs" else value,
            n_features=len(model.feature_names),
            feature_names=model.feature_names,
            field=field,
            max_rows=platform_setting("MAX_STREAM_ROWS"),
        )
    except InputError as exc:
        raise InvalidInput(str(exc)) from None
    if field == "input_data" and rows.shape[0] != 1:
        raise InvalidInput("input_data: send one row, or several rows as 'inputs'.")
    return model.name, items


def _is_scalar(value: Any) -> bool:
    return not (type(value) is list or isinstance(value, Mapping))


async def prediction_events(
    *,
    user: User,
    api_key: ApiKey | None,
    rows: list,
    model_name: str | None,
    version_label: str | None,
    timeout: float | None,
    request_id: str,
    heartbeat_seconds: float | None = None,
) -> AsyncIterator[bytes]:
    """Predict and store ``rows`` one by one, as ``/predict`` would, yielding events.

    ``started``, then per row ``prediction`` (or ``error`` for a row the model failed on) and
    ``progress``, then ``completed``. Each prediction is stored before its event is written,
    and a row starts only once the events of the one before were handed to the server. While
    a row runs, a keep-alive comment every ``heartbeat_seconds``.

    Every event also carries the tutorial's keys, for its clients that read only ``data:``
    lines: ``status`` (started, processing, completed or error), and ``progress`` (percent)
    with ``step`` (rows done); the ``completed`` event of a one-row stream holds its
    ``prediction``, ``label`` and ``confidence``.
    """
    if heartbeat_seconds is None:
        heartbeat_seconds = platform_setting("STREAM_HEARTBEAT_SECONDS")
    stream_id = uuid.uuid4().hex
    total = len(rows)
    started = time.monotonic()
    completed = failed = 0
    versions: dict[str, int] = {}
    options = {
        "user": user,
        "api_key": api_key,
        "model_name": model_name,
        "version_label": version_label,
        "timeout": timeout,
        "request_id": request_id,
    }
    logged = {"request_id": request_id, "stream_id": stream_id}
    last = None
    yield sse_event(
        "started",
        {
            "stream_id": stream_id,
            "total": total,
            "model": model_name,
            "request_id": request_id,
            "status": "started",
            "progress": 0,
            "step": 0,
        },
    )
    try:
        for index, row in enumerate(rows):
            pending = asyncio.ensure_future(_predicted(row, options, logged))
            try:
                while not (await asyncio.wait({pending}, timeout=heartbeat_seconds))[0]:
                    yield HEARTBEAT
            finally:
                pending.cancel()  # the client left while the row ran: no further work
            try:
                prediction = pending.result()
            except DatabaseUnavailable as exc:
                with log_context(**logged):
                    logger.warning("stream %s: database unavailable: %s", stream_id, exc)
                yield _error_event(exc)
                return
            except PlatformError as exc:
                failed += 1
                yield _error_event(exc, index=index)
            else:
                completed += 1
                last = prediction
                versions[prediction.version_label] = versions.get(prediction.version_label, 0) + 1
                yield sse_event("prediction", _prediction_event(index, prediction))
            done = completed + failed
            percent = round(100 * done / total, 2)
            yield sse_event(
                "progress",
                {
                    "completed": done,
                    "total": total,
                    "percent": percent,
                    "status": "processing",
                    "progress": percent,
                    "step": done,
                },
            )
    except (GeneratorExit, asyncio.CancelledError):
        with log_context(**logged):
            logger.info(
                "stream %s closed by the client after %d of %d rows", stream_id, completed, total
            )
        raise
    except Exception:
        with log_context(**logged):
            logger.exception("stream %s failed", stream_id)
        yield sse_event(
            "error",
            {
                "detail": "The stream failed on the server.",
                "code": "server_error",
                "status": "error",
            },
        )
        return
    summary = {
        "stream_id": stream_id,
        "total": total,
        "completed": completed,
        "failed": failed,
        "model": model_name,
        "model_versions": versions,
        "seconds": round(time.monotonic() - started, 6),
        "status": "completed",
        "progress": 100,
        "step": total,
    }
    if total == 1 and last is not None:
        row = _prediction_event(0, last)
        summary |= {k: v for k, v in row.items() if k not in ("index", "status")}
    yield sse_event("completed", summary)


def _error_event(exc: PlatformError, **where: int) -> bytes:
    return sse_event("error", {**where, "detail": exc.detail, "code": exc.code, "status": "error"})


async def _predicted(row: Any, options: dict, logged: dict):
    """One row of a stream, predicted and stored as ``/predict`` does, in its log context."""
    with log_context(**logged):
        return await aprediction_create(await aprediction_request(input_data=row, **options))


def _prediction_event(index: int, prediction) -> dict:
    return {
        "index": index,
        "status": "processing",
        "prediction_id": str(prediction.id),
        "model": prediction.model_name,
        "model_version": prediction.version_label,
        "prediction": prediction.output,
        "label": prediction.label,
        "confidence": prediction.confidence,
        "processing_time": prediction.processing_time,
        "cached": prediction.cached,
        "routing": prediction.routing,
        "timestamp": prediction.created_at,
    }


# --- batch job events -----------------------------------------------------------------------


class JobWatcher:
    """One task per process reads the state of every watched job, one query per poll."""

    def __init__(self, poll_seconds: float = 0.5) -> None:
        self.poll_seconds = poll_seconds
        self._watchers: dict = {}  # job id -> number of streams watching it
        self._states: dict = {}
        self._task: asyncio.Task | None = None

    @contextlib.contextmanager
    def watching(self, job_id, state: dict):
        """Watch a job while in the block; yields the function that reads its latest state."""
        self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
        self._states.setdefault(job_id, state)
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        try:
            yield lambda: self._states[job_id]
        finally:
            self._watchers[job_id] -= 1
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                self._states.pop(job_id, None)

    async def _run(self) -> None:
        while self._watchers:
            await asyncio.sleep(self.poll_seconds)
            ids = list(self._watchers)
            try:
                fresh = await sync_to_async(_job_states)(ids)
            except Exception:
                logger.exception("reading the state of watched batch jobs failed")
                continue
            for job_id, row in fresh.items():
                if job_id in self._states:
                    self._states[job_id] = row


def _job_states(ids: list) -> dict:
    rows = BatchJob.objects.filter(pk__in=ids).values(
        "id", "status", "completed_inputs", "total_inputs", "error"
    )
    return {row.pop("id"): row for row in rows}


job_watcher = JobWatcher()


async def watched_job_events(job: BatchJob, *, state: dict, **options) -> AsyncIterator[bytes]:
    """``job_events`` of a job from its ``state`` now, then as ``job_watcher`` reads it."""
    if state["status"] in BatchJob.TERMINAL:
        async for event in job_events(job, read=lambda: state, **options):
            yield event
        return
    with job_watcher.watching(job.pk, state) as read:
        async for event in job_events(job, read=read, **options):
            yield event
