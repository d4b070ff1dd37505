"""SQLite for a process of many threads: its writers take turns on a lock of the process.

SQLite lets one connection write at a time. A connection that finds the database locked
waits in SQLite's busy handler, which sleeps 1, 2, 5, 10, 15, 20, 25... ms between tries
however soon the lock is free again: a request whose INSERT meets another thread's write
(a request's, or a batch of shadow copies) loses 1 to 50 ms where the write it waited for
took a fraction of one. So the threads of a process first take a lock of the process, which
wakes the next writer as soon as the last is done; SQLite's busy handler still orders this
process's writers with other processes' (the django-q2 worker, ``manage.py`` commands).

A transaction (``atomic``; ``BEGIN IMMEDIATE`` takes SQLite's write lock at once) holds the
process's lock from BEGIN to COMMIT or ROLLBACK, as it holds SQLite's; a write statement in
autocommit holds it while it runs; reads never take it (WAL lets them run beside a writer).
A writer waits for it at most the connection's ``timeout``, as SQLite waits for its own lock,
and then fails the same way: ``database is locked``.

With WAL, committed writes go to the write-ahead log first; a *checkpoint* copies them into
the database file and syncs it to disk. SQLite runs one itself in whichever connection's
commit takes the log past 1,000 pages: that commit, a request's, waits 15-30 ms for the
syncs (and this process's other writers wait behind it for the writer lock). With the
``checkpoint_interval`` option (seconds), a thread of the process checkpoints instead, that
long after writes, on a connection of its own; the log starts over at the first write after
a checkpoint has copied all of it. A connection of the process checkpoints itself only past
``FALLBACK_CHECKPOINT_PAGES``, should writes never pause for the log to start over.

Statements are counted by django-prometheus's metrics (``mlplatform.db.counting``) when
``settings.INSTRUMENTATION`` is on.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
import time
from contextlib import closing, contextmanager
from pathlib import Path

from django.conf import settings
from django.db.backends.sqlite3 import base as sqlite3
from django_prometheus.db.backends.sqlite3 import base as prometheus

from mlplatform.db.counting import counting_cursor

logger = logging.getLogger(__name__)

DatabaseFeatures = prometheus.DatabaseFeatures

# Pages of write-ahead log past which a connection with a checkpoint thread checkpoints itself.
FALLBACK_CHECKPOINT_PAGES = 10_000

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_writers: dict[str, threading.Lock] = {}  # by database file
_checkpointers: dict[str, Checkpointer] = {}  # by database file
_starting = threading.Lock()


def writer(name: str) -> threading.Lock:
    """The process's writer lock of database file `name`."""
    return _writers.get(name) or _writers.setdefault(name, threading.Lock())


def _forked() -> None:
    # A child process forked while a thread of its parent held a lock would never see it
    # free, and it has none of its parent's threads: it starts its own checkpointers.
    _writers.clear()
    _checkpointers.clear()


os.register_at_fork(after_in_child=_forked)


class Checkpointer:
    """Checkpoints the write-ahead log of database file `name`, `interval` s after writes."""

    def __init__(self, name: str, interval: float) -> None:
        self.name, self.interval = name, interval
        self._written = threading.Event()
        self._uri = Path(name).resolve().as_uri() + "?mode=rw"  # never creates the file
        thread = threading.Thread(target=self._run, name="sqlite-checkpoint", daemon=True)
        thread.start()

    def written(self) -> None:
        # Every write of a request comes here: setting an Event takes its lock, reading it not.
        if not self._written.is_set():
            self._written.set()

    def checkpoint(self) -> tuple[int, int, int]:
        """One PASSIVE checkpoint: (busy, pages in the log, pages copied). Writers go on."""
        with closing(sqlite3.Database.connect(self._uri, uri=True, timeout=0)) as connection:
            # fetchall(): a statement left unfinished would keep a read open on the log,
            # and the log could not start over.
            return tuple(connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()[0])

    def _run(self) -> None:
        while True:
            self._written.wait()
            time.sleep(self.interval)  # gathering the writes of that while
            self._written.clear()
            try:
                self.checkpoint()
            except sqlite3.Database.Error as exc:
                logger.warning("checkpoint of %s failed: %s", self.name, exc)


def checkpointer(name: str, interval: float) -> Checkpointer:
    """The process's checkpointer of database file `name`, started on first use."""
    found = _checkpointers.get(name)
    if found is None:
        with _starting:
            if name not in _checkpointers:
                _checkpointers[name] = Checkpointer(name, interval)
            found = _checkpointers[name]
    return found


def _written(name: str) -> None:
    found = _checkpointers.get(name)
    if found is not None:
        found.written()


def _take(lock: threading.Lock, timeout: float) -> None:
    if not lock.acquire(timeout=timeout):
        raise sqlite3.Database.OperationalError("database is locked")


@contextmanager
def _writing(name: str, timeout: float):
    lock = writer(name)
    _take(lock, timeout)
    try:
        yield
    finally:
        lock.release()
        _written(name)


@functools.cache
def writing_cursor(name: str, timeout: float) -> type:
    """SQLite's cursor, taking the writer lock of `name` for a write outside a transaction."""

    class WritingCursor(sqlite3.SQLiteCursorWrapper):
        def execute(self, query, params=None):
            if self.connection.in_transaction or not _is_write(query):
                return super().execute(query, params)
            with _writing(name, timeout):
                return super().execute(query, params)

        def executemany(self, query, param_list):
            if self.connection.in_transaction or not _is_write(query):
                return super().executemany(query, param_list)
            with _writing(name, timeout):
                return super().executemany(query, param_list)

    return WritingCursor


def _is_write(query: str) -> bool:
    return query.lstrip()[:7].upper().startswith(_WRITES)


class DatabaseWrapper(prometheus.DatabaseWrapper):
    _held: threading.Lock | None = None  # the writer lock this connection's transaction holds
    checkpoint_interval = 0.0  # seconds; 0: SQLite checkpoints in the committing connection

    def get_connection_params(self):
        params = super().get_connection_params()
        self.checkpoint_interval = float(params.pop("checkpoint_interval", 0) or 0)
        return params

    def get_new_connection(self, conn_params):
        connection = super().get_new_connection(conn_params)
        if self.checkpoint_interval > 0 and not self.is_in_memory_db():
            connection.execute(f"PRAGMA wal_autocheckpoint = {FALLBACK_CHECKPOINT_PAGES}")
            checkpointer(self._writer_args()[0], self.checkpoint_interval)
        return connection

    def create_cursor(self, name=None):
        cursor = writing_cursor(*self._writer_args())
        if settings.INSTRUMENTATION:
            cursor = counting_cursor(cursor, self.alias, self.vendor)
        return self.connection.cursor(factory=cursor)

    def _writer_args(self) -> tuple[str, float]:
        return str(self.settings_dict["NAME"]), float(
            self.settings_dict["OPTIONS"].get("timeout", 5)
        )

    def _start_transaction_under_autocommit(self):
        name, timeout = self._writer_args()
        lock = writer(name)
        with self.wrap_database_errors:
            _take(lock, timeout)
        self._held = lock
        try:
            super()._start_transaction_under_autocommit()
        except BaseException:
            self._release_writer()
            raise

    def _commit(self):
        try:
            return super()._commit()
        finally:
            self._release_writer()

    def _rollback(self):
        try:
            return super()._rollback()
        finally:
            self._release_writer()

    def _close(self):
        try:
            return super()._close()
        finally:
            self._release_writer()

    def _release_writer(self) -> None:
        lock, self._held = self._held, None
        if lock is not None:
            lock.release()
            _written(self._writer_args()[0])
