"""Server-Sent Events: the wire format, open-stream slots, and the prediction stream.

A stream runs on the thread of the request that opened it (gunicorn's gthread worker), so each
open stream holds a thread. ``stream_slots`` caps how many streams one process holds open, and
``gunicorn_conf.py`` gives the process that many threads on top of those that serve other
requests: a crowd of streams can fill its own slots, never the threads of ``/predict``.

A prediction stream computes its rows on a thread of its own (``RowWorker``) while the
request's thread waits, writing a keep-alive comment every ``STREAM_HEARTBEAT_SECONDS`` a slow
row takes. With a connection pool it holds a database connection only for a row's queries,
never while it waits for its client or for an inference.

Streams of batch job events wait, mostly: ``job_watcher`` reads the state of every job watched
in a process with one query per poll, and a waiting stream gives back its database connection,
so a hundred open streams cost one query per half second and no database connection each.
"""

import functools
import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from concurrent import futures
from typing import Any

import orjson
from django.db import InterfaceError, OperationalError, connection

from accounts.models import ApiKey, User
from mlplatform.conf import platform_setting
from mlplatform.errors import DatabaseUnavailable, InvalidInput, PlatformError
from mlplatform.logging import log_context
from predictions.batch_io import job_events, job_state
from predictions.models import BatchJob, Prediction
from predictions.registry import registry
from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input
from predictions.services.predict import (
    model_resolve,
    prediction_create,
    principal_id,
    version_resolve,
)

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/event-stream"
HEARTBEAT = b": keep-alive\n\n"
# Headers of every event stream: never cached, never buffered by a proxy (nginx honours
# X-Accel-Buffering), so each event reaches the client when it is written.
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS


def sse_event(event: str, data: Mapping[str, Any], event_id: str | None = None) -> bytes:
    """One event: optional ``id``, ``event`` name and a one-line JSON ``data`` field."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: ".encode() + orjson.dumps(data, option=_JSON) + b"\n\n"


class StreamsBusy(PlatformError):
    status_code = 503
    code = "too_many_streams"


class StreamSlots:
    """Counts the streams this process holds open; refuses one more than ``MAX_OPEN_STREAMS``."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.open = 0

    def acquire(self) -> Callable[[], None]:
        """Take a slot (StreamsBusy when none is free); return the function that frees it once."""
        limit = platform_setting("MAX_OPEN_STREAMS")
        with self._lock:
            if self.open >= limit:
                raise StreamsBusy(
                    f"This server holds its limit of {limit} open streams; retry shortly."
                )
            self.open += 1
        released = False

        def release() -> None:
            nonlocal released
            with self._lock:
                if not released:
                    released = True
                    self.open -= 1

        return release


stream_slots = StreamSlots()


class HeldStream:
    """Events that hold a stream slot until the server closes the response.

    The server calls ``close()`` when the stream ends, fails, or the client went away (a write
    to its closed socket raises), even if no event was ever produced; a generator's ``finally``
    would not run in that last case.
    """

    def __init__(self, events: Iterator[bytes], release: Callable[[], None]) -> None:
        self._events = events
        self._release = release

    def __iter__(self) -> "HeldStream":
        return self

    def __next__(self) -> bytes:
        return next(self._events)

    def close(self) -> None:
        try:
            close = getattr(self._events, "close", None)
            if close is not None:
                close()
        finally:
            self._release()


def held_stream(events: Iterator[bytes]) -> HeldStream:
    """Take a stream slot for ``events`` (StreamsBusy, a 503, when none is free)."""
    return HeldStream(events, stream_slots.acquire())


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
    model = model_resolve(model_name)
    version_resolve(model, version_label, principal=principal_id(user, api_key))
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


def prediction_events(
    *,
    user: User,
    api_key: ApiKey | None,
    rows: list,
    model_name: str | None,
    version_label: str | None,
    timeout: float | None,
    request_id: str,
    heartbeat_seconds: float | None = None,
) -> Iterator[bytes]:
    """Predict and store ``rows`` one by one, as ``/predict`` would, yielding events.

    ``started``, then per row ``prediction`` (or ``error`` for a row the model failed on) and
    ``progress``, then ``completed``. Each row is computed on the stream's ``RowWorker`` while
    this generator waits for it, writing a keep-alive comment every ``heartbeat_seconds`` the
    row takes. Each prediction is stored before its event is written, and a row starts only
    once the events of the one before were written: when the client goes away, the server
    closes this generator at its next write and no further row is predicted.
    """
    if heartbeat_seconds is None:
        heartbeat_seconds = platform_setting("STREAM_HEARTBEAT_SECONDS")
    stream_id = uuid.uuid4().hex
    total = len(rows)
    started = time.monotonic()
    completed = failed = 0
    versions: dict[str, int] = {}
    yield sse_event(
        "started",
        {"stream_id": stream_id, "total": total, "model": model_name, "request_id": request_id},
    )
    if _pooled() and not connection.in_atomic_block:
        # The connection this thread used for the request (authentication, checks) would stay
        # out of the pool until the response is closed: the rows use the worker's.
        connection.close()
    worker = RowWorker(
        user=user,
        api_key=api_key,
        model_name=model_name,
        version_label=version_label,
        timeout=timeout,
        request_id=request_id,
        stream_id=stream_id,
    )
    try:
        for index, row in enumerate(rows):
            pending = worker.submit(row)
            while not futures.wait([pending], timeout=heartbeat_seconds).done:
                yield HEARTBEAT
            try:
                prediction = pending.result()
            except PlatformError as exc:
                failed += 1
                yield sse_event("error", {"index": index, "detail": exc.detail, "code": exc.code})
            else:
                completed += 1
                versions[prediction.version_label] = versions.get(prediction.version_label, 0) + 1
                yield sse_event("prediction", _prediction_event(index, prediction))
            done = completed + failed
            yield sse_event(
                "progress",
                {"completed": done, "total": total, "percent": round(100 * done / total, 2)},
            )
    except GeneratorExit:
        with log_context(request_id=request_id, stream_id=stream_id):
            logger.info(
                "stream %s closed by the client after %d of %d rows", stream_id, completed, total
            )
        raise
    except (OperationalError, InterfaceError) as exc:
        with log_context(request_id=request_id, stream_id=stream_id):
            logger.warning("stream %s: database unavailable: %s", stream_id, exc)
        unavailable = DatabaseUnavailable()
        yield sse_event("error", {"detail": unavailable.detail, "code": unavailable.code})
        return
    except Exception:
        with log_context(request_id=request_id, stream_id=stream_id):
            logger.exception("stream %s failed", stream_id)
        yield sse_event(
            "error", {"detail": "The stream failed on the server.", "code": "server_error"}
        )
        return
    finally:
        worker.close()
    yield sse_event(
        "completed",
        {
            "stream_id": stream_id,
            "total": total,
            "completed": completed,
            "failed": failed,
            "model": model_name,
            "model_versions": versions,
            "seconds": round(time.monotonic() - started, 6),
        },
    )


@functools.cache
def row_slots(size: int) -> threading.BoundedSemaphore:
    """The turns of this process's prediction streams at computing a row (one per size)."""
    return threading.BoundedSemaphore(size)


def _connection_close() -> None:
    # Looked up on the thread that runs it: ``connection.close`` handed to another thread would
    # be bound to the connection of the thread that handed it over.
    connection.close()


def _pooled() -> bool:
    """Whether this thread's database connections come from a pool (PostgreSQL, web processes)."""
    return bool(connection.settings_dict.get("OPTIONS", {}).get("pool"))


class RowWorker:
    """The thread that predicts and stores one stream's rows, one at a time, as ``/predict`` does.

    The stream's own thread only waits for each row, so it can write keep-alive comments while
    a slow row runs. Django's database connections belong to threads: the rows are stored
    through the worker's connection, which ``close()`` closes after the last row.

    With a connection pool (PostgreSQL in web processes), the worker also gives its connection
    back after every row, and before each inference once the registry has read what it needs,
    so that an open stream holds a pooled connection only for a row's queries: streams whose
    client reads slowly, or whose rows are slow, leave the pool to ``/predict``. Taking a
    connection from the pool again costs about 0.4 ms (a health-check round trip). Without a
    pool the connection is kept for the whole stream: SQLite has no pool to give it back to,
    opening a connection costs about 3 ms (more than a row), and an idle one holds no lock.

    Each row runs in a log context of its own holding the request and stream ids, to which the
    service adds the row's model, version and prediction id.
    """

    def __init__(
        self,
        *,
        user: User,
        api_key: ApiKey | None,
        model_name: str | None,
        version_label: str | None,
        timeout: float | None,
        request_id: str,
        stream_id: str,
    ) -> None:
        self._options = {
            "user": user,
            "api_key": api_key,
            "model_name": model_name,
            "version_label": version_label,
            "timeout": timeout,
            "request_id": request_id,
        }
        self._log_fields = {"request_id": request_id, "stream_id": stream_id}
        self._executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="stream-rows")

    def submit(self, row: Any) -> futures.Future:
        """Predict and store ``row`` after the rows submitted before: a future prediction."""
        return self._executor.submit(self._predict, row)

    def close(self) -> None:
        """Let the row in progress finish, close the worker's connection and end its thread."""
        self._executor.submit(_connection_close)
        self._executor.shutdown(wait=True)

    def _predict(self, row: Any) -> Prediction:
        with log_context(**self._log_fields), row_slots(platform_setting("STREAM_ROW_CONCURRENCY")):
            if not _pooled():
                return prediction_create(input_data=row, **self._options)
            try:
                self._registry_ready()
                connection.close()
                return prediction_create(input_data=row, **self._options)
            finally:
                connection.close()

    def _registry_ready(self) -> None:
        """Let the registry read its revision (at most once a second) and the artifact of the
        version that serves the row (on first use) from the database before the inference."""
        try:
            model = model_resolve(self._options["model_name"])
            version, _ = version_resolve(
                model,
                self._options["version_label"],
                principal=principal_id(self._options["user"], self._options["api_key"]),
            )
        except PlatformError:
            return  # the row reports it
        registry.predictor(version)


def _prediction_event(index: int, prediction) -> dict:
    return {
        "index": index,
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
    """One thread per process reads the state of every watched job, one query per poll."""

    def __init__(self, poll_seconds: float = 0.5) -> None:
        self.poll_seconds = poll_seconds
        self._lock = threading.Lock()
        self._watchers: dict = {}  # job id -> number of streams watching it
        self._states: dict = {}
        self._thread: threading.Thread | None = None

    def watch(self, job_id, state: dict) -> None:
        with self._lock:
            self._watchers[job_id] = self._watchers.get(job_id, 0) + 1
            self._states.setdefault(job_id, state)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="job-watcher", daemon=True)
                self._thread.start()

    def unwatch(self, job_id) -> None:
        with self._lock:
            self._watchers[job_id] -= 1
            if not self._watchers[job_id]:
                del self._watchers[job_id]
                self._states.pop(job_id, None)

    def state(self, job_id) -> dict:
        with self._lock:
            return self._states[job_id]

    def _run(self) -> None:
        try:
            while True:
                time.sleep(self.poll_seconds)
                with self._lock:
                    ids = list(self._watchers)
                    if not ids:
                        self._thread = None  # a new watch starts a new thread
                        return
                try:
                    rows = BatchJob.objects.filter(pk__in=ids).values(
                        "id", "status", "completed_inputs", "total_inputs", "error"
                    )
                    fresh = {row.pop("id"): row for row in rows}
                except Exception:
                    logger.exception("reading the state of watched batch jobs failed")
                    connection.close()
                    continue
                with self._lock:
                    for job_id, row in fresh.items():
                        if job_id in self._states:
                            self._states[job_id] = row
        finally:
            connection.close()


job_watcher = JobWatcher()


def client_gone_check(request) -> Callable[[], bool]:
    """Whether the client of ``request`` closed its connection, asked without writing to it.

    gunicorn hands the client's socket to the app (``gunicorn.socket``); a peek that finds the
    end of the stream (or an error) means the client left. A waiting stream sees it within a
    poll instead of at its next heartbeat write, and frees its slot. Without the socket (other
    servers, tests), never.
    """
    sock = request.META.get("gunicorn.socket")
    if sock is None:
        return lambda: False

    def gone() -> bool:
        try:
            return sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except OSError:
            return True
        except ValueError:  # a TLS socket takes no flags: rely on the heartbeat write
            return False

    return gone


class _ClientGone(Exception):
    pass


def watched_job_events(
    job: BatchJob, *, client_gone: Callable[[], bool] = lambda: False, **options
) -> Iterator[bytes]:
    """``job_events`` of a job, its state read by ``job_watcher`` while the stream waits."""
    state = job_state(job.pk)
    if state["status"] in BatchJob.TERMINAL:
        yield from job_events(job, read=lambda: state, **options)
        return

    def read() -> dict:
        if client_gone():
            raise _ClientGone
        return job_watcher.state(job.pk)

    job_watcher.watch(job.pk, state)
    if not connection.in_atomic_block:
        # This thread may wait for hours: it needs no connection of its own meanwhile.
        connection.close()
    try:
        yield from job_events(job, read=read, **options)
    except _ClientGone:
        logger.info("events of job %s: the client left", job.pk)
    finally:
        job_watcher.unwatch(job.pk)
