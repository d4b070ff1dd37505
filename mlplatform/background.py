"""The background threads of a platform process, and why each exists.

Requests are served by one event loop per web process (``mlplatform/asgi.py``); Django's views
behind it run on a pool of ``WEB_THREADS`` threads, and asgiref runs the loop's few database
reads (a key, the registry's revision) on threads of its own. Besides those, a process runs only
the threads defined here, each started on first use (and again in a forked child):

* **Micro-batchers**, one per model version in use (``Batcher``). The predictor runs on a thread
  of its own so that the event loop goes on reading requests while the model computes, and the
  rows that arrived meanwhile are answered together by the next call: one vectorised call for
  many requests, as Triton's dynamic batcher does. When the model is idle a request is run at
  once; nothing waits for a batch to fill unless the version asks for ``batch_wait_ms``.
* **The database writer**, one per process (``GroupCommit``). Stored rows of concurrent requests
  are written in one transaction and each request answers once its own row is committed: one
  commit (and one disk sync where the database syncs) for many requests, and no database
  work on the event loop, where it would stop every other request while it waits.

* **The log writer**, one per process (``LineWriter``, behind
  ``mlplatform.logging.QueuedStreamHandler``). A request only queues its log record; the
  thread formats what queued in the last ``INTERVAL`` and writes it with one write, so that no
  request waits on standard error and a busy process makes one write for many lines, not a
  write and a thread hand-off per line.

All are daemon threads: a process that exits loses what they hold, which its callers have not
been answered for.
"""

import asyncio
import collections
import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import orjson
from django.db import (
    DatabaseError,
    DataError,
    IntegrityError,
    connection,
    connections,
    router,
    transaction,
)
from django.db.models import Field, JSONField, Model

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_STOP = object()


class _Thread:
    """A daemon thread running ``self._run``, started on first use in each process."""

    thread_name = "background"

    def __init__(self) -> None:
        self._started_in: int | None = None
        self._start_lock = threading.Lock()

    def _ensure_started(self) -> None:
        if self._started_in == os.getpid():
            return
        with self._start_lock:
            if self._started_in != os.getpid():  # never started, or forked since
                self._reset()
                threading.Thread(target=self._run, name=self.thread_name, daemon=True).start()
                self._started_in = os.getpid()

    def _reset(self) -> None:
        """Forget what a parent process had queued (its thread did not survive the fork)."""

    def _run(self) -> None:
        raise NotImplementedError


@dataclass(slots=True)
class _Item(Generic[T]):
    payload: T
    size: int
    future: Future | asyncio.Future
    loop: asyncio.AbstractEventLoop | None  # the asyncio future's, else None

    def taken(self) -> bool:
        """Whether the caller still waits (else it was cancelled: its timeout)."""
        if self.loop is None:
            return self.future.set_running_or_notify_cancel()
        return not self.future.cancelled()


def _settle(done: Sequence[tuple[Any, Any]]) -> None:
    """Resolve each item's future with its result, or its exception.

    An event loop's futures are resolved by one callback per loop, so that a round wakes each
    loop once however many of its requests it answers.
    """
    loops: dict[asyncio.AbstractEventLoop, list] = {}
    for item, result in done:
        if item.loop is not None:
            loops.setdefault(item.loop, []).append((item.future, result))
        elif isinstance(result, BaseException):
            item.future.set_exception(result)
        else:
            item.future.set_result(result)
    for loop, pairs in loops.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
            loop.call_soon_threadsafe(_settle_on_loop, pairs)


def _settle_on_loop(pairs: list[tuple[asyncio.Future, Any]]) -> None:
    for future, result in pairs:
        if future.done():  # cancelled meanwhile
            continue
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class Batcher(_Thread, Generic[T, R]):
    """Calls ``handler`` with what was queued while its last call ran.

    ``handler`` takes the payloads of one batch and returns one result per payload: a value,
    or an exception that fails only that payload's future. A batch holds at most
    ``max_size`` rows (each payload has a size, its number of rows); a payload larger than that
    is run alone. With ``wait`` seconds, a batch that is not full waits at most that long for
    more rows after its first one. A future cancelled while queued is left out of its batch.
    """

    def __init__(
        self,
        handler: Callable[[list[T]], Sequence[R | BaseException]],
        *,
        max_size: int = 1,
        wait: float = 0.0,
        name: str = "batcher",
    ) -> None:
        super().__init__()
        self.handler = handler
        self.max_size = max(1, max_size)
        self.wait = max(0.0, wait)
        self.thread_name = name
        self._queue: queue.SimpleQueue = queue.SimpleQueue()

    def submit(self, payload: T, size: int = 1) -> Future:
        """Queue ``payload`` (of ``size`` rows); its future holds the handler's result for it."""
        self._ensure_started()
        future: Future = Future()
        self._queue.put(_Item(payload, size, future, None))
        return future

    def asubmit(self, payload: T, size: int = 1) -> asyncio.Future:
        """``submit`` from the running event loop: an asyncio future of the loop's."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Item(payload, size, future, loop))
        return future

    def queued(self) -> int:
        """How many requests wait to be taken into a batch (read-only: for diagnostics, and for
        tests to wait on rather than sleep)."""
        return self._queue.qsize()

    def close(self) -> None:
        """End the thread once what is queued now has been run."""
        if self._started_in == os.getpid():
            self._queue.put(_STOP)

    def _reset(self) -> None:
        self._queue = queue.SimpleQueue()

    def _run(self) -> None:
        carried: _Item | None = None
        while True:
            first = carried if carried is not None else self._queue.get()
            if first is _STOP:
                return
            batch, carried = self._gather(first)
            live = [item for item in batch if item.taken()]
            if live:
                self._call(live)
            if carried is _STOP:
                return

    def _gather(self, first: _Item) -> tuple[list[_Item], Any]:
        """The first item and what queued behind it, up to the size limit; the item that did
        not fit is carried to the next batch."""
        batch, rows = [first], first.size
        deadline = time.monotonic() + self.wait if self.wait else None
        while rows < self.max_size:
            try:
                if deadline is None:
                    item = self._queue.get_nowait()
                else:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if item is _STOP or rows + item.size > self.max_size:
                return batch, item
            batch.append(item)
            rows += item.size
        return batch, None

    def _call(self, batch: list[_Item]) -> None:
        try:
            results = self.handler([item.payload for item in batch])
        except Exception as exc:  # noqa: BLE001 - each caller gets the failure
            results = [exc] * len(batch)
        _settle(list(zip(batch, results, strict=True)))


class LineWriter(_Thread, Generic[T]):
    """Hands ``write`` what was put meanwhile, at most every ``INTERVAL`` seconds.

    ``put`` only appends (and wakes the thread if it sleeps); the thread waits out the
    interval so that a busy process's items go to ``write`` together. ``flush`` writes what is
    pending now, on the caller's thread (at exit). Nothing is carried over a fork: a child
    writes only its own items.
    """

    thread_name = "log-writer"
    INTERVAL = 0.02

    def __init__(self, write: Callable[[list[T]], None]) -> None:
        super().__init__()
        self._write = write
        self._reset()

    def put(self, item: T) -> None:
        self._ensure_started()
        self._pending.append(item)
        if not self._wake.is_set():
            self._wake.set()

    def flush(self) -> None:
        if self._started_in != os.getpid():
            return
        with self._lock:
            items = []
            with contextlib.suppress(IndexError):
                while True:
                    items.append(self._pending.popleft())
            if items:
                self._write(items)

    def _reset(self) -> None:
        self._pending: collections.deque[T] = collections.deque()
        self._wake = threading.Event()
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            time.sleep(self.INTERVAL)
            self._wake.clear()  # before taking the items: one put after this wakes it again
            self.flush()


@dataclass(slots=True)
class _Write:
    rows: Sequence[Any]  # unsaved model instances, inserted by rows_insert
    call: Callable[[], None] | None  # any other write, run in the same transaction
    future: Future | asyncio.Future = field(default_factory=Future)
    loop: asyncio.AbstractEventLoop | None = None  # the asyncio future's, else None


class GroupCommit(_Thread):
    """Writes what concurrent callers hand it in one transaction per round, on one thread.

    A round takes every write queued so far: the rows of each model go into one INSERT
    (``rows_insert``, in the order they came), other writes run in turn, and one commit ends
    the round. Then each write's future is resolved: a caller waiting on it answers once
    its rows are committed. When the round fails on a constraint or a bad value (an error of
    one row), each write is tried again in a transaction of its own, so that only the guilty
    ones fail; when it fails otherwise (the database is down or locked), every write of the
    round fails with that error.

    The thread keeps its connection between rounds, as a view's thread keeps its own between
    requests; a round after ``IDLE_SECONDS`` without one first checks that the connection
    still works (Django's health check, which views get at each request), so that a
    connection the database dropped meanwhile fails no write.
    """

    thread_name = "db-writer"
    IDLE_SECONDS = 5.0

    def __init__(self) -> None:
        super().__init__()
        self._queue: queue.SimpleQueue[_Write] = queue.SimpleQueue()

    def submit(self, rows: Sequence[Any] = (), call: Callable[[], None] | None = None) -> Future:
        """Queue a write; its future is done when it is committed (or has failed)."""
        if connection.in_atomic_block:
            # The caller's own transaction holds what it wrote so far (a test's, or a
            # service's), which another connection would not see: write in it, now.
            return _written_inline(rows, call)
        self._ensure_started()
        write = _Write(rows, call)
        self._queue.put(write)
        return write.future

    def asubmit(self, rows: Sequence[Any]) -> asyncio.Future:
        """``submit`` from the running event loop: an asyncio future of the loop's."""
        self._ensure_started()
        loop = asyncio.get_running_loop()
        write = _Write(rows, None, loop.create_future(), loop)
        self._queue.put(write)
        return write.future

    def drain(self, timeout: float) -> bool:
        """Wait until what was queued before the call is committed (or failed)."""
        if self._started_in != os.getpid():
            return True
        marker = self.submit(call=lambda: None)
        try:
            marker.result(timeout)
        except Exception:  # noqa: BLE001 - timed out or failed: the caller only waits
            return False
        return True

    def _reset(self) -> None:
        self._queue = queue.SimpleQueue()

    def _run(self) -> None:
        last_round = time.monotonic()
        while True:
            writes = [self._queue.get()]
            while True:
                try:
                    writes.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if time.monotonic() - last_round > self.IDLE_SECONDS:
                connection.close_if_unusable_or_obsolete()
            self._commit(writes)
            last_round = time.monotonic()

    def _commit(self, writes: list[_Write]) -> None:
        try:
            with transaction.atomic():
                _apply(writes)
        except (IntegrityError, DataError) as exc:
            if len(writes) > 1:
                for write in writes:
                    self._commit([write])
                return
            _settle([(writes[0], exc)])
            return
        except DatabaseError as exc:
            logger.warning("a group commit of %d writes failed: %s", len(writes), exc)
            connection.close()  # the database may be gone: the next round connects again
            _settle([(write, exc) for write in writes])
            return
        except Exception as exc:  # noqa: BLE001 - the callers must hear of it
            logger.exception("a group commit of %d writes failed", len(writes))
            _settle([(write, exc) for write in writes])
            return
        _settle([(write, None) for write in writes])


def _apply(writes: list[_Write]) -> None:
    by_model: dict[type, list] = {}
    for write in writes:
        for row in write.rows:
            by_model.setdefault(type(row), []).append(row)
    for model, rows in by_model.items():
        rows_insert(model, rows)
    for write in writes:
        if write.call is not None:
            write.call()


def rows_insert(model: type[Model], rows: Sequence[Model]) -> None:
    """INSERT unsaved instances of ``model`` in one statement.

    What ``bulk_create`` writes, for a fraction of its cost: the ORM compiles its statement
    value by value (for a prediction's 13 fields, more than SQLite's own work), while
    here each field's conversion is chosen once (``Field.get_db_prep_save``; JSON through
    orjson). SQLite runs one prepared statement for every row; PostgreSQL takes each column as
    one array (``UNNEST``), one statement whose text, and so whose plan, never changes
    (docs/decisions/0002). Fields left to the database (an auto-increment id that is None) are
    not sent; nothing is returned.
    """
    connection = connections[router.db_for_write(model)]
    skip_auto = getattr(rows[0], model._meta.pk.attname) is None
    insert = _statement(model, connection, skip_auto)
    if insert.by_column:
        params = [
            [convert(getattr(row, attname), connection) for row in rows]
            for attname, convert in insert.fields
        ]
        with connection.cursor() as cursor:
            cursor.execute(insert.sql, params)
        return
    params = [
        tuple(convert(getattr(row, attname), connection) for attname, convert in insert.fields)
        for row in rows
    ]
    with connection.cursor() as cursor:
        cursor.executemany(insert.sql, params)


@dataclass(frozen=True, slots=True)
class _Insert:
    sql: str
    fields: tuple[tuple[str, Callable[[Any, Any], Any]], ...]  # (attribute, conversion)
    by_column: bool  # parameters are one array per column (UNNEST), else one tuple per row


_statements: dict[tuple, _Insert] = {}


def _statement(model: type[Model], connection, skip_auto: bool) -> _Insert:
    key = (model, connection.vendor, skip_auto)
    found = _statements.get(key)
    if found is not None:
        return found
    meta, quote = model._meta, connection.ops.quote_name
    fields = [f for f in meta.concrete_fields if not (skip_auto and f is meta.auto_field)]
    columns = ", ".join(quote(f.column) for f in fields)
    by_column = connection.vendor == "postgresql"
    if by_column:
        arrays = ", ".join(f"%s::{f.db_type(connection)}[]" for f in fields)
        values = f"SELECT * FROM UNNEST({arrays})"  # noqa: S608 - types from the model
    else:
        values = "VALUES (" + ", ".join(["%s"] * len(fields)) + ")"
    sql = f"INSERT INTO {quote(meta.db_table)} ({columns}) {values}"  # noqa: S608 - names from the model
    conversions = tuple((f.attname, _conversion(f, connection.vendor)) for f in fields)
    found = _statements[key] = _Insert(sql, conversions, by_column)
    return found


def _conversion(field: Field, vendor: str) -> Callable[[Any, Any], Any]:
    """How one field's value goes to the database driver: (value, connection) -> parameter."""
    if isinstance(field, JSONField):
        return _jsonb if vendor == "postgresql" else _json_text
    kind = field.target_field if field.is_relation else field
    if kind.get_internal_type() in _AS_IS:
        return _as_is
    return field.get_db_prep_save


# Values the drivers take as they are (ints, floats, strings, booleans, None).
_AS_IS = frozenset(
    {
        "AutoField",
        "BigAutoField",
        "BigIntegerField",
        "BooleanField",
        "CharField",
        "FloatField",
        "IntegerField",
        "PositiveBigIntegerField",
        "PositiveIntegerField",
        "PositiveSmallIntegerField",
        "SlugField",
        "SmallIntegerField",
        "TextField",
    }
)


def _as_is(value: Any, connection: Any) -> Any:
    return value


def _json_text(value: Any, connection: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _jsonb(value: Any, connection: Any) -> Any:
    from psycopg.types.json import Jsonb

    return None if value is None else Jsonb(value, dumps=lambda v: orjson.dumps(v).decode())


def _written_inline(rows: Sequence[Any], call: Callable[[], None] | None) -> Future:
    future: Future = Future()
    try:
        with transaction.atomic():
            _apply([_Write(rows, call, future)])
    except Exception as exc:  # noqa: BLE001 - reported through the future, as by the thread
        future.set_exception(exc)
    else:
        future.set_result(None)
    return future


group_commit = GroupCommit()


def shutdown(timeout: float = 10.0) -> None:
    """Before the process exits: let the writes queued so far be committed."""
    group_commit.drain(timeout)
