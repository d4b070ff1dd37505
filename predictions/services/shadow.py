"""Shadow traffic: copies of live requests answered by shadow versions, off the request path.

A bounded queue and one background thread per process: the caller's response never waits for
a shadow and never sees its errors. When the queue is full (shadows slower than live traffic)
copies are dropped and counted, rather than piling up in memory.
"""

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass

import numpy as np
from django.db import close_old_connections

from predictions.models import ShadowPrediction
from predictions.registry import VersionEntry, registry
from predictions.runtime.outputs import describe

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ShadowJob:
    prediction_id: uuid.UUID
    version: VersionEntry
    rows: np.ndarray
    task: str
    labels: tuple[str, ...]
    primary_label: str | None


def shadow_answer(job: ShadowJob) -> ShadowPrediction:
    """Answer one copied request with a shadow version (unsaved; failures become its error)."""
    started = time.perf_counter()
    fields: dict = {}
    try:
        outputs = registry.predictor(job.version).predict(job.rows)
        if not np.isfinite(outputs).all():
            raise ValueError("the shadow's outputs are not finite numbers")
        outcome = describe(outputs, task=job.task, labels=job.labels)[0]
        fields = {
            "output": outcome.prediction,
            "label": outcome.label,
            "confidence": outcome.confidence,
            "agrees": outcome.label == job.primary_label if job.labels else None,
        }
    except Exception as exc:  # noqa: BLE001 - a shadow's failure is recorded, never raised
        fields = {"error": f"{type(exc).__name__}: {exc}"[:1000]}
    return ShadowPrediction(
        primary_id=job.prediction_id,
        model_version_id=job.version.id,
        processing_time=time.perf_counter() - started,
        **fields,
    )


def shadow_store(jobs: list[ShadowJob]) -> None:
    """Answer and store several copies in one INSERT; a copy stored before is skipped."""
    ShadowPrediction.objects.bulk_create(
        [shadow_answer(job) for job in jobs], ignore_conflicts=True
    )


class ShadowRunner:
    """Runs shadow jobs on one background thread, dropping them when it falls behind."""

    def __init__(self, maxsize: int = 1000) -> None:
        self._queue: queue.Queue[ShadowJob] = queue.Queue(maxsize=maxsize)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.dropped = 0

    def submit(self, job: ShadowJob) -> bool:
        self._ensure_thread()
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            self.dropped += 1
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
        # The thread keeps one database connection, like a request thread (CONN_MAX_AGE), and
        # stores whatever has queued up meanwhile in one statement.
        while True:
            jobs = [self._queue.get()]
            while len(jobs) < 100:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            try:
                close_old_connections()
                shadow_store(jobs)
            except Exception:
                logger.exception("storing %d shadow predictions failed", len(jobs))
            finally:
                for _ in jobs:
                    self._queue.task_done()


shadow_runner = ShadowRunner()
