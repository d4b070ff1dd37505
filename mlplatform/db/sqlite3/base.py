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

Statements are counted by django-prometheus's metrics (``mlplatform.db.counting``) when
``settings.INSTRUMENTATION`` is on.
"""

from __future__ import annotations

import functools
import os
import threading
from contextlib import contextmanager

from django.conf import settings
from django.db.backends.sqlite3 import base as sqlite3
from django_prometheus.db.backends.sqlite3 import base as prometheus

from mlplatform.db.counting import counting_cursor

DatabaseFeatures = prometheus.DatabaseFeatures

_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_writers: dict[str, threading.Lock] = {}  # by database file


def writer(name: str) -> threading.Lock:
    """The process's writer lock of database file `name`."""
    return _writers.get(name) or _writers.setdefault(name, threading.Lock())


# A child process forked while a thread of its parent held a lock would never see it free.
os.register_at_fork(after_in_child=_writers.clear)


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
