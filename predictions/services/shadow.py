"""Shadow traffic: copies of live requests answered by shadow versions, off the request path.

A bounded queue and one background thread per process: the caller's response never waits for
a shadow and never sees its errors. The thread gathers the copies of ``GATHER_SECONDS`` and
answers and stores them ``STORE_ROWS`` at a time: one vectorised call per shadow version, one
INSERT. When the queue is full (shadows slower than live traffic) copies are dropped and
counted (``mlplatform_shadow_copies_total{result="dropped"}``) rather than piling up in memory.
"""

import logging
import queue
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass

import numpy as np
from django.db import DEFAULT_DB_ALIAS, close_old_connections, connections, transaction
from django.db.models.constants import OnConflict
from django.utils import timezone

from mlplatform import metrics
from predictions.models import ShadowPrediction
from predictions.registry import VersionEntry, registry
from predictions.runtime.outputs import describe

logger = logging.getLogger(__name__)

GATHER_SECONDS = 0.2  # copies answered and stored together: at most this much later
BATCH_ROWS = 500
STORE_ROWS = 100  # copies answered and stored per INSERT


@dataclass(frozen=True, slots=True)
class ShadowJob:
    prediction_id: uuid.UUID
    version: VersionEntry
    rows: np.ndarray
    task: str
    labels: tuple[str, ...]
    primary_label: str | None


@dataclass(slots=True)
class ShadowAnswer:
    """A shadow's answer to one copy: the fields of its ``ShadowPrediction`` row, not yet stored.

    A plain record rather than an unsaved model instance: the thread builds 60 of them every
    0.2 s at 300 req/s while holding the GIL that request threads wait for.
    """

    primary_id: uuid.UUID
    model_version_id: int
    processing_time: float
    output: list[float] | None = None
    label: str | None = None
    confidence: float | None = None
    agrees: bool | None = None
    error: str = ""


def shadow_answers(jobs: list[ShadowJob]) -> list[ShadowAnswer]:
    """Answer copied requests (failures become their error).

    Copies for the same shadow version are answered in one vectorised call; if that call
    fails, each copy is answered on its own so that one bad row cannot spoil the others.
    """
    by_version: dict[int, list[ShadowJob]] = {}
    for job in jobs:
        by_version.setdefault(job.version.id, []).append(job)
    answers: list[ShadowAnswer] = []
    for group in by_version.values():
        try:
            answers += _answer_together(group)
        except Exception:  # noqa: BLE001 - fall back to one at a time, each error recorded
            answers += [answer for job in group for answer in _answer_together([job])]
    return answers


def _answer_together(jobs: list[ShadowJob]) -> list[ShadowAnswer]:
    first = jobs[0]
    started = time.perf_counter()
    try:
        outputs = registry.predictor(first.version).predict(np.vstack([j.rows for j in jobs]))
        if not np.isfinite(outputs).all():
            raise ValueError("the shadow's outputs are not finite numbers")
        outcomes = describe(outputs, task=first.task, labels=first.labels)
    except Exception as exc:
        if len(jobs) > 1:
            raise
        elapsed, failed = time.perf_counter() - started, f"{type(exc).__name__}: {exc}"[:1000]
        return [ShadowAnswer(first.prediction_id, first.version.id, elapsed, error=failed)]
    elapsed = (time.perf_counter() - started) / len(jobs)
    return [
        ShadowAnswer(
            job.prediction_id,
            job.version.id,
            elapsed,
            outcome.prediction,
            outcome.label,
            outcome.confidence,
            outcome.label == job.primary_label if job.labels else None,
        )
        for job, outcome in zip(jobs, outcomes, strict=True)
    ]


def shadow_store(jobs: list[ShadowJob]) -> None:
    """Answer and store several copies in one INSERT; a copy stored before is skipped."""
    answers = shadow_answers(jobs)
    _insert_answers(answers)
    versions = {job.version.id: job.version for job in jobs}
    counted = Counter((a.model_version_id, "failed" if a.error else "answered") for a in answers)
    for (version_id, result), count in counted.items():
        _count(versions[version_id], result, count)


# A row's columns, in the order _insert_answers gives their values.
_COLUMNS = (
    "primary",
    "model_version",
    "processing_time",
    "output",
    "label",
    "confidence",
    "agrees",
    "error",
    "created_at",
)


def _insert_answers(answers: list[ShadowAnswer]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` of every answer, in one statement.

    On SQLite the statement runs in autocommit. ``bulk_create()`` wraps its INSERT in a
    transaction, and SQLite holds its one write lock (and the process its writer lock,
    ``mlplatform/db/sqlite3``) from the INSERT until the COMMIT, with this thread running
    Python in between (and waiting for the GIL behind the request threads), while a request's
    own INSERT waits. A statement in autocommit holds the lock only while the database runs
    it. Copies are independent of each other, so they need no common transaction.

    On PostgreSQL it runs in a transaction of its own that commits asynchronously
    (``_execute``).

    The statement is put together from the backend operations that ``QuerySet._insert``
    (``Model.save()``, ``bulk_create()``) uses, but without a model instance per row: only
    the id, the JSON output and the timestamp need the backend's form (through their fields);
    the driver takes numbers, strings, booleans and None as they are. Answering and storing
    100 copies this way takes 0.5 ms of Python on SQLite and 0.3 ms on PostgreSQL, with the
    GIL held, against 2.3 and 1.5 ms with model instances and the compiler
    (``bench/shadow_store.py``).
    """
    if not answers:
        return
    connection = connections[DEFAULT_DB_ALIAS]  # this thread's, looked up once
    opts = ShadowPrediction._meta
    columns = [opts.get_field(name) for name in _COLUMNS]
    primary, output = opts.get_field("primary"), opts.get_field("output")
    now = opts.get_field("created_at").get_db_prep_save(timezone.now(), connection)
    rows = [
        (
            primary.get_db_prep_save(a.primary_id, connection),
            a.model_version_id,
            a.processing_time,
            output.get_db_prep_save(a.output, connection),
            a.label,
            a.confidence,
            a.agrees,
            a.error,
            now,
        )
        for a in answers
    ]
    if connection.vendor == "postgresql":
        # One array per column, as Django's own bulk inserts there: 9 parameters instead of
        # 9 per row, which the driver binds and the server plans in less time.
        from django.db.backends.postgresql.compiler import InsertUnnest

        types = [f.db_type(connection).split("(")[0] for f in columns]
        values = InsertUnnest([f"(%s)::{db_type}[]" for db_type in types])
        params = [list(column) for column in zip(*rows, strict=True)]
    else:
        values = [["%s"] * len(columns)] * len(rows)
        params = [value for row in rows for value in row]
    ops, qn = connection.ops, connection.ops.quote_name
    sql = " ".join(
        [
            ops.insert_statement(on_conflict=OnConflict.IGNORE),
            qn(opts.db_table),
            "(" + ", ".join(qn(f.column) for f in columns) + ")",
            ops.bulk_insert_sql(columns, values),
            ops.on_conflict_suffix_sql(columns, OnConflict.IGNORE, None, None),
        ]
    )
    _execute(connection, sql, params)


def _execute(connection, sql: str, params: list) -> None:
    """Run the statement; on PostgreSQL, in a transaction that commits asynchronously.

    ``SET LOCAL synchronous_commit TO OFF``: the commit does not wait for the log to reach the
    disk, and the requests' own commits do not wait behind its flush. A crash of the database
    server may lose the copies of its last moment (up to three times ``wal_writer_delay``,
    0.6 s by default), never a prediction: copies are best-effort anyway (dropped when the
    queue is full). ``SET LOCAL`` ends with the transaction, so a pooled connection goes back
    to the pool as it came. (The same setting made by ``set_config(..., true)`` inside the
    INSERT saves two round trips and some Python, ``bench/shadow_insert.py``, yet measured
    worse for the requests' latency in ``bench/shadow_slices.py``: ``bench/README.md``.)
    """
    if connection.vendor == "postgresql":
        with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")
            cursor.execute(sql, params)
        return
    with connection.cursor() as cursor:
        cursor.execute(sql, params)


def _count(version: VersionEntry, result: str, count: int = 1) -> None:
    metrics.shadow_copies(
        model=version.model_name, version=version.label, result=result, count=count
    )


class ShadowRunner:
    """Runs shadow jobs on one background thread, dropping them when it falls behind."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: ShadowJob) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            _count(job.version, "dropped")
            return False
        return True

    def join(self) -> None:
        """Wait until every submitted job is done (tests and graceful shutdown)."""
        self._queue.join()

    def _ensure_thread(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            return
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="shadow", daemon=True)
                self._thread.start()

    def _work(self) -> None:
        # After the first copy the thread sleeps, then takes every copy that came meanwhile:
        # copies arriving do not wake it one by one (each wake-up is a GIL hand-over that the
        # request threads wait for), and it answers and stores a few times a second. It keeps
        # one database connection, like a request thread (CONN_MAX_AGE), and runs at the
        # request threads' CPU priority: a lower one (a nice value) let the kernel pause it
        # while it held the GIL, and every request thread waited too (bench/README.md).
        while True:
            jobs = [self._queue.get()]
            time.sleep(GATHER_SECONDS)
            while len(jobs) < BATCH_ROWS:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                close_old_connections()
                # At most 100 at a time, so that a burst does not hold the GIL for long at
                # once (an INSERT lets it go while the database works). Fewer, larger
                # statements mean fewer writes (and commits) for the requests' own to contend
                # with: 5 or 20 at a time measured worse (bench/README.md).
                for start in range(0, len(jobs), STORE_ROWS):
                    shadow_store(jobs[start : start + STORE_ROWS])
            except Exception:
                logger.exception("storing %d shadow predictions failed", len(jobs))
            finally:
                for _ in jobs:
                    self._queue.task_done()


shadow_runner = ShadowRunner()
