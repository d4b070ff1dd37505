"""Shadow traffic: copies of live requests answered by shadow versions, off the request path.

Once a request's rows are committed, a share of them is queued for each shadow version of the
model through the same pipeline (the shadow's micro-batcher) and their answers are stored with
the same group commit, as ``ShadowPrediction`` rows; the caller never waits for a copy and
never sees its errors. At most ``MAX_IN_FLIGHT`` copies are under way in a process: beyond,
copies are dropped and counted (``mlplatform_shadow_copies_total{result="dropped"}``) rather
than piling up in memory when shadows are slower than live traffic.
"""

import logging
import threading
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import Future

import numpy as np
from django.utils import timezone

from mlplatform import metrics
from mlplatform.background import group_commit
from predictions.catalogue.registry import VersionEntry
from predictions.models import ShadowPrediction
from predictions.pipeline import Served, pipeline
from predictions.runtime.outputs import describe
from predictions.runtime.routing import stable_unit

logger = logging.getLogger(__name__)

MAX_IN_FLIGHT = 1000


class _InFlight:
    """Copies under way in this process: a bounded count that ``join()`` can wait to empty."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0
        self._changed = threading.Condition()

    def take(self, n: int) -> bool:
        with self._changed:
            if self.count + n > self.limit:
                return False
            self.count += n
            return True

    def give_back(self, n: int) -> None:
        with self._changed:
            self.count -= n
            self._changed.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        with self._changed:
            return self._changed.wait_for(lambda: self.count == 0, timeout)


in_flight = _InFlight(MAX_IN_FLIGHT)


def shadows_join(timeout: float | None = 30.0) -> bool:
    """Wait until every copy sent so far is stored (as tests do before reading them)."""
    return in_flight.join(timeout)


def shadows_send(
    served: Served,
    prediction_ids: Sequence[uuid.UUID],
    labels: Sequence[str | None],
    rows: np.ndarray,
) -> None:
    """Copy each shadow version's share of the committed predictions ``prediction_ids``.

    ``labels`` are what the predictions answered and ``rows`` their inputs, in the same order.
    Call it once they are committed (``transaction.on_commit`` inside a transaction).
    """
    for shadow in served.model.shadow_versions:
        chosen = [
            i
            for i, prediction_id in enumerate(prediction_ids)
            if stable_unit(f"shadow:{shadow.id}:{prediction_id}") < shadow.shadow_share
        ]
        if not chosen:
            continue
        copies = _Copies(
            served, shadow, [prediction_ids[i] for i in chosen], [labels[i] for i in chosen]
        )
        copies.send(rows[chosen])


class _Copies:
    """Copies of some rows for one shadow version, from queueing to their stored answers."""

    def __init__(
        self,
        served: Served,
        shadow: VersionEntry,
        primary_ids: list[uuid.UUID],
        primary_labels: list[str | None],
    ) -> None:
        self.served, self.shadow = served, shadow
        self.primary_ids, self.primary_labels = primary_ids, primary_labels
        self.started = 0.0

    def send(self, rows: np.ndarray) -> None:
        n = len(self.primary_ids)
        if not in_flight.take(n):
            self._count("dropped", n)
            return
        self.started = time.perf_counter()
        try:
            future = pipeline.submit(self.shadow, rows)
        except Exception as exc:  # noqa: BLE001 - the artifact does not load: recorded
            future = Future()
            future.set_exception(exc)
        future.add_done_callback(self._answered)

    def _answered(self, future: Future) -> None:
        """Build the copies' rows from the shadow's answer (or its error) and store them."""
        n = len(self.primary_ids)
        elapsed = (time.perf_counter() - self.started) / n
        try:
            shadow_rows = self._rows(future, elapsed)
        except Exception:  # noqa: BLE001 - a copy must never take a thread down
            logger.exception("answering %d shadow copies failed", n)
            in_flight.give_back(n)
            return
        stored = group_commit.submit(shadow_rows)
        stored.add_done_callback(lambda done: self._stored(done, shadow_rows))

    def _rows(self, future: Future, elapsed: float) -> list[ShadowPrediction]:
        common = {"model_version_id": self.shadow.id, "created_at": timezone.now()}
        try:
            outputs = future.result()
        except Exception as exc:  # noqa: BLE001 - stored with each copy
            error = f"{type(exc).__name__}: {exc}"[:1000]
            return [
                ShadowPrediction(primary_id=p, processing_time=elapsed, error=error, **common)
                for p in self.primary_ids
            ]
        model = self.served.model
        finite = np.isfinite(outputs).all(axis=1).tolist()
        outcomes = describe(np.nan_to_num(outputs), task=model.task, labels=model.labels)
        return [
            ShadowPrediction(
                primary_id=primary_id,
                processing_time=elapsed,
                output=outcome.prediction,
                label=outcome.label,
                confidence=outcome.confidence,
                agrees=outcome.label == primary_label if model.labels else None,
                **common,
            )
            if ok
            else ShadowPrediction(
                primary_id=primary_id,
                processing_time=elapsed,
                error="ValueError: the shadow's outputs are not finite numbers",
                **common,
            )
            for primary_id, primary_label, outcome, ok in zip(
                self.primary_ids, self.primary_labels, outcomes, finite, strict=True
            )
        ]

    def _stored(self, done: Future, shadow_rows: list[ShadowPrediction]) -> None:
        n = len(shadow_rows)
        try:
            done.result()
        except Exception as exc:  # noqa: BLE001 - copies are best-effort
            logger.warning("storing %d shadow copies failed: %s", n, exc)
            self._count("dropped", n)
        else:
            failed = sum(1 for row in shadow_rows if row.error)
            self._count("answered", n - failed)
            self._count("failed", failed)
        finally:
            in_flight.give_back(n)

    def _count(self, result: str, n: int) -> None:
        if n:
            metrics.shadow_copies(
                model=self.shadow.model_name, version=self.shadow.label, result=result, count=n
            )
