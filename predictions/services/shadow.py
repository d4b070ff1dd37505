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
from django.db import close_old_connections
from django.db.models.constants import OnConflict

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


def shadow_answers(jobs: list[ShadowJob]) -> list[ShadowPrediction]:
    """Answer copied requests (unsaved; failures become their error).

    Copies for the same shadow version are answered in one vectorised call; if that call
    fails, each copy is answered on its own so that one bad row cannot spoil the others.
    """
    by_version: dict[int, list[ShadowJob]] = {}
    for job in jobs:
        by_version.setdefault(job.version.id, []).append(job)
    answers: list[ShadowPrediction] = []
    for group in by_version.values():
        try:
            answers += _answer_together(group)
        except Exception:  # noqa: BLE001 - fall back to one at a time, each error recorded
            answers += [answer for job in group for answer in _answer_together([job])]
    return answers


def _answer_together(jobs: list[ShadowJob]) -> list[ShadowPrediction]:
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
        failed = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
        return [_row(first, time.perf_counter() - started, failed)]
    elapsed = (time.perf_counter() - started) / len(jobs)
    return [
        _row(
            job,
            elapsed,
            {
                "output": outcome.prediction,
                "label": outcome.label,
                "confidence": outcome.confidence,
                "agrees": outcome.label == job.primary_label if job.labels else None,
            },
        )
        for job, outcome in zip(jobs, outcomes, strict=True)
    ]


def _row(job: ShadowJob, processing_time: float, fields: dict) -> ShadowPrediction:
    return ShadowPrediction(
        primary_id=job.prediction_id,
        model_version_id=job.version.id,
        processing_time=processing_time,
        **fields,
    )


def shadow_store(jobs: list[ShadowJob]) -> None:
    """Answer and store several copies in one INSERT; a copy stored before is skipped."""
    answers = shadow_answers(jobs)
    _insert_in_autocommit(answers)
    versions = {job.version.id: job.version for job in jobs}
    counted = Counter((a.model_version_id, "failed" if a.error else "answered") for a in answers)
    for (version_id, result), count in counted.items():
        _count(versions[version_id], result, count)


def _insert_in_autocommit(answers: list[ShadowPrediction]) -> None:
    """``INSERT ... ON CONFLICT DO NOTHING`` in autocommit: one statement, no transaction.

    ``bulk_create()`` wraps its INSERT in a transaction, and SQLite holds its one write lock
    from the INSERT until the COMMIT, with this thread running Python in between (and waiting
    for the GIL behind the request threads). A request's own INSERT that meets the lock
    sleeps in SQLite's busy-handler back-off (1, 2, 5, 10 ms...). A statement in autocommit
    holds the lock only while SQLite runs it. Copies are independent of each other, so they
    need no common transaction. ``QuerySet._insert`` is how ``Model.save()`` and
    ``bulk_create()`` themselves insert.
    """
    opts = ShadowPrediction._meta
    fields = [f for f in opts.concrete_fields if f is not opts.auto_field]
    ShadowPrediction.objects._insert(answers, fields, on_conflict=OnConflict.IGNORE)


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
