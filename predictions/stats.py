"""Usage statistics: per-user request tallies written in batches, the /stats summary, and
per-version aggregates of stored predictions (V2's statistics extension).

Requests are counted where they are answered, in memory, per user and minute; each process
writes its tallies to ``RequestTally`` at most every ``USAGE_FLUSH_SECONDS`` (with the group
commit of the request that finds them due, and when the process exits), adding to the row other
processes and hosts share. So ``request_count`` and ``error_count`` are durable and add up
across workers without a database write per request; the one thing lost to a crash is a
process's last few seconds.
"""

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, F, Max, Min, Q, QuerySet, Sum
from django.utils import timezone
from prometheus_client.core import GaugeMetricFamily

from accounts.models import User
from mlplatform.background import group_commit
from mlplatform.conf import platform_setting
from mlplatform.metrics import instrumented
from predictions.models import BatchJob, Prediction, RequestTally

logger = logging.getLogger(__name__)


class Tallies:
    """Request counts of this process not yet written: (user id, minute) -> [n, errors, s]."""

    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, datetime], list] = {}
        self._flushed_at = self.timer()

    def record(self, *, user_id: int, error: bool, seconds: float) -> None:
        minute = timezone.now().replace(second=0, microsecond=0)
        with self._lock:
            entry = self._pending.setdefault((user_id, minute), [0, 0, 0.0])
            entry[0] += 1
            entry[1] += int(error)
            entry[2] += seconds

    def due(self) -> bool:
        interval = float(platform_setting("USAGE_FLUSH_SECONDS"))
        return bool(self._pending) and self.timer() - self._flushed_at >= interval

    def mark_flushing(self) -> None:
        """A flush is on its way: not due again before another interval."""
        self._flushed_at = self.timer()

    def flush(self) -> None:
        """Add the pending tallies to the database; kept for the next try if that fails."""
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flushed_at = self.timer()
        if not pending:
            return
        try:
            # A savepoint inside the group commit's transaction: a failure here leaves the
            # round's other writes alone.
            with transaction.atomic():
                # Tallies of a user deleted since are dropped (their rows would be deleted too).
                users = {user_id for user_id, _ in pending}
                live = set(User.objects.filter(pk__in=users).values_list("pk", flat=True))
                for (user_id, minute), (n, errors, seconds) in pending.items():
                    if user_id in live:
                        _add(user_id, minute, n, errors, seconds)
        except Exception as exc:
            logger.warning("usage tallies not written, will retry: %s", exc)
            with self._lock:
                for key, (n, errors, seconds) in pending.items():
                    entry = self._pending.setdefault(key, [0, 0, 0.0])
                    entry[0] += n
                    entry[1] += errors
                    entry[2] += seconds

    def clear(self) -> None:
        with self._lock:
            self._pending = {}


def _add(user_id: int, minute: datetime, n: int, errors: int, seconds: float) -> None:
    increments = {
        "requests": F("requests") + n,
        "errors": F("errors") + errors,
        "duration": F("duration") + seconds,
    }
    rows = RequestTally.objects.filter(owner_id=user_id, minute=minute)
    if rows.update(**increments):
        return
    try:
        with transaction.atomic():
            RequestTally.objects.create(
                owner_id=user_id, minute=minute, requests=n, errors=errors, duration=seconds
            )
    except IntegrityError:  # another process created the row first
        rows.update(**increments)


tallies = Tallies()


def usage_record(*, user_id: int, error: bool, seconds: float) -> None:
    """Count one answered request of a user; have this process's tallies written when due."""
    if not instrumented():
        return
    tallies.record(user_id=user_id, error=error, seconds=seconds)
    if tallies.due():
        tallies.mark_flushing()
        group_commit.submit(call=tallies.flush)


def usage_flush() -> None:
    """Write this process's pending tallies now (before reading them, and at exit)."""
    tallies.flush()


def _flush_at_exit() -> None:
    # Quietly: at interpreter exit the database (a test run's) and the log stream may be gone.
    logging.getLogger(__name__).disabled = True
    with contextlib.suppress(Exception):
        tallies.flush()


atexit.register(_flush_at_exit)


def count_by(queryset, field: str) -> dict[Any, int]:
    """How many rows of ``queryset`` have each value of ``field`` (one GROUP BY query)."""
    return dict(
        queryset.order_by().values_list(field).annotate(n=Count("pk")).values_list(field, "n")
    )


@dataclass(frozen=True, slots=True)
class VersionUsage:
    """A version's stored predictions: how many, how many from the response cache, their
    summed ``processing_time`` (seconds) and when the latest was made."""

    predictions: int = 0
    cached: int = 0
    seconds: float = 0.0
    cached_seconds: float = 0.0
    last_at: datetime | None = None


def usage_by_version(
    predictions: QuerySet[Prediction], version_ids: Iterable[int]
) -> dict[int, VersionUsage]:
    """``VersionUsage`` of each of ``version_ids`` that has predictions (one GROUP BY query)."""
    cached = Q(cached=True)
    rows = (
        predictions.filter(model_version_id__in=list(version_ids))
        .order_by()
        .values("model_version_id")
        .annotate(
            n=Count("pk"),
            cached_n=Count("pk", filter=cached),
            seconds=Sum("processing_time"),
            cached_seconds=Sum("processing_time", filter=cached),
            last_at=Max("created_at"),
        )
    )
    return {
        row["model_version_id"]: VersionUsage(
            predictions=row["n"],
            cached=row["cached_n"],
            seconds=row["seconds"] or 0.0,
            cached_seconds=row["cached_seconds"] or 0.0,
            last_at=row["last_at"],
        )
        for row in rows
    }


def usage_stats(*, user: User) -> dict[str, Any]:
    """The tutorial's summary of the caller's own traffic (staff: everyone's)."""
    usage_flush()
    scope = {} if user.is_staff else {"owner": user}
    by_model = count_by(Prediction.objects.filter(**scope), "model_version__model__name")
    jobs = count_by(BatchJob.objects.filter(**scope), "status")
    totals = RequestTally.objects.filter(**scope).aggregate(
        requests=Sum("requests"), errors=Sum("errors"), duration=Sum("duration")
    )
    requests = totals["requests"] or 0
    errors = totals["errors"] or 0
    return {
        "scope": "all" if user.is_staff else "own",
        "total_predictions": sum(by_model.values()),
        "active_batch_jobs": jobs.get(BatchJob.Status.QUEUED, 0)
        + jobs.get(BatchJob.Status.PROCESSING, 0),
        "completed_batch_jobs": jobs.get(BatchJob.Status.COMPLETED, 0),
        "failed_batch_jobs": jobs.get(BatchJob.Status.FAILED, 0),
        "request_count": requests,
        "error_count": errors,
        "error_rate": errors / requests if requests else 0.0,
        "average_duration": (totals["duration"] or 0.0) / requests if requests else 0.0,
        "predictions_by_model": dict(sorted(by_model.items())),
    }


class BatchBacklogCollector:
    """Batch jobs by status and the age of the oldest queued job, from the database."""

    def collect(self) -> Iterator:
        try:
            counts = count_by(BatchJob.objects, "status")
            oldest = BatchJob.objects.filter(status=BatchJob.Status.QUEUED).aggregate(
                at=Min("created_at")
            )["at"]
        except Exception as exc:  # a scrape must still answer when the database does not
            logger.warning("metrics: cannot read batch jobs: %s", exc)
            return
        jobs = GaugeMetricFamily(
            "mlplatform_batch_jobs", "Batch jobs now in each status.", labels=["status"]
        )
        for status in BatchJob.Status.values:
            jobs.add_metric([status], counts.get(status, 0))
        yield jobs
        age = 0.0
        if oldest is not None:
            age = max((timezone.now() - oldest).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "mlplatform_batch_oldest_queued_seconds",
            "Age of the oldest queued batch job (0 when none waits).",
            value=age,
        )
