"""Batch jobs: submitted rows predicted by django-q2 workers in chunks that survive restarts.

A job fixes its model version at submit, so a weight change while it runs never mixes
versions. Its rows are validated before it is queued and stored as one float32 array. A worker
predicts one chunk at a time and stores each chunk's outputs under a unique (job, chunk) key,
so a task delivered twice, or resumed after a worker died, never duplicates or loses a row;
progress is saved per chunk and a cancel takes effect at the next chunk boundary.
"""

import logging
import math
import time
from datetime import datetime, timedelta

import numpy as np
from django.db import transaction
from django.db.models import F, Sum
from django.utils import timezone
from django_q.tasks import async_task

from accounts.models import ApiKey, User
from mlplatform import metrics, tracing
from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PlatformError, UpstreamFailed
from mlplatform.logging import log_context_set
from predictions.batch.files import (
    CorruptFile,
    array_load,
    chunk_name,
    file_delete,
    file_save,
    npy_bytes,
)
from predictions.batch.files import input_name as input_name_of
from predictions.catalogue.registry import registry
from predictions.models import BatchChunk, BatchJob
from predictions.pipeline import (
    NonFiniteOutputs,
    Served,
    pipeline,
    principal_id,
    route,
)
from predictions.runtime.tables import Table

logger = logging.getLogger(__name__)

# Until jobs have been measured, estimates assume this many rows per second.
DEFAULT_ROWS_PER_SECOND = 200_000.0


def rows_per_second() -> float:
    """Measured throughput of the latest completed jobs (rows per second of processing)."""
    recent = (
        BatchJob.objects.filter(
            status=BatchJob.Status.COMPLETED, started_at__isnull=False, finished_at__isnull=False
        )
        .only("total_inputs", "started_at", "finished_at")
        .order_by("-finished_at")[:20]
    )
    rows = seconds = 0.0
    for job in recent:
        rows += job.total_inputs
        seconds += max((job.finished_at - job.started_at).total_seconds(), 0.001)
    return rows / seconds if rows and seconds else DEFAULT_ROWS_PER_SECOND


def job_progress(job: BatchJob) -> dict:
    """Rows done, the job's own rows per second so far, and when it should end."""
    elapsed = None
    if job.started_at:
        elapsed = ((job.finished_at or timezone.now()) - job.started_at).total_seconds()
    rate = job.completed_inputs / elapsed if elapsed and job.completed_inputs else None
    if job.is_terminal:
        end = job.finished_at
    elif rate:
        end = timezone.now() + timedelta(seconds=(job.total_inputs - job.completed_inputs) / rate)
    else:
        end = estimated_completion(job)
    return {
        "status": job.status,
        "completed": job.completed_inputs,
        "total": job.total_inputs,
        "rows_per_second": rate,
        "estimated_completion": end,
    }


def estimated_completion(job: BatchJob) -> datetime:
    remaining = job.total_inputs - job.completed_inputs
    return timezone.now() + timedelta(seconds=remaining / rows_per_second())


def batch_job_submit(
    *,
    user: User,
    api_key: ApiKey | None,
    table: Table,
    input_format: str,
    input_name: str = "",
    model_name: str | None = None,
    version_label: str | None = None,
    callback_url: str = "",
    request_id: str = "",
) -> BatchJob:
    """Queue validated rows for prediction by the resolved version; 4xx when a limit is passed."""
    served = route(model_name, version_label, principal=principal_id(user, api_key))
    model, version = served.model, served.version
    rows = table.rows
    if rows.ndim != 2 or rows.shape[1] != len(model.feature_names):
        raise InvalidInput(f"Each row needs {len(model.feature_names)} features.")
    limit = platform_setting("MAX_BATCH_ROWS")
    if rows.shape[0] > limit:
        raise PlatformError(
            f"A job may hold at most {limit} rows; this one has {rows.shape[0]}.",
            code="too_many_rows",
            status_code=413,
        )
    if callback_url:
        from predictions.webhooks.ssrf import UnsafeURL, check_callback_url

        try:
            check_callback_url(callback_url)
        except UnsafeURL as exc:
            raise InvalidInput(f"callback_url: {exc}", code="unsafe_callback_url") from None
    job = BatchJob(
        owner=user,
        api_key=api_key,
        model_version_id=version.id,
        routing=served.routing,
        total_inputs=rows.shape[0],
        chunk_size=platform_setting("BATCH_CHUNK_ROWS"),
        input_format=input_format,
        input_name=input_name[:255],
        callback_url=callback_url,
        request_id=request_id,
    )
    # The rows' file is written before the transaction, which holds the user's row (and on
    # SQLite the database's write lock) only for the count and the insert.
    job.input_file, job.input_sha256 = file_save(input_name_of(job.id), table.npy)
    try:
        with transaction.atomic():
            # Count and insert as one step per user: on PostgreSQL the user's row is locked
            # until the job is committed; SQLite's transactions (BEGIN IMMEDIATE) never overlap.
            User.objects.select_for_update().get(pk=user.pk)
            active = BatchJob.objects.filter(
                owner=user, status__in=[BatchJob.Status.QUEUED, BatchJob.Status.PROCESSING]
            ).count()
            if active >= platform_setting("MAX_ACTIVE_BATCH_JOBS"):
                raise PlatformError(
                    f"You have {active} unfinished batch jobs, the most allowed at once; wait "
                    "for one to finish or cancel one.",
                    code="too_many_active_jobs",
                    status_code=429,
                )
            job.save(force_insert=True)
            transaction.on_commit(lambda: batch_job_enqueue(job))
    except BaseException:
        file_delete(job.input_file.name)
        raise
    log_context_set(job_id=str(job.id), model=model.name, version=version.label)
    metrics.batch_job_status(BatchJob.Status.QUEUED)
    return job


def batch_job_enqueue(job: BatchJob, *, part: int | None = None, parts: int = 1) -> None:
    """Queue a job's tasks: one for each of its parts (``BATCH_PARALLEL_TASKS``, at most one
    per chunk), or the next task of one part."""
    if part is None:
        n_chunks = math.ceil(job.total_inputs / job.chunk_size)
        parts = max(1, min(platform_setting("BATCH_PARALLEL_TASKS"), n_chunks))
        for each in range(parts):
            batch_job_enqueue(job, part=each, parts=parts)
        return
    # The trace context (when tracing is on) makes the task's span a child of this request's.
    async_task(
        "predictions.tasks.batch_job_run",
        str(job.id),
        part,
        parts,
        task_name=f"batch {job.id} part {part + 1}/{parts}",
        **tracing.task_kwargs(),
    )


def _finish(job_id, status: str, error: str = "") -> None:
    """Move a job to a terminal status once, and queue its webhook in the same transaction."""
    from predictions.webhooks import webhook_enqueue

    with transaction.atomic():
        job = BatchJob.objects.select_for_update().get(pk=job_id)
        if job.is_terminal:
            return
        job.status = status
        job.error = error
        job.finished_at = timezone.now()
        job.save(update_fields=["status", "error", "finished_at"])
        transaction.on_commit(lambda: metrics.batch_job_status(status))
        webhook_enqueue(job)


def batch_job_cancel(*, job: BatchJob) -> BatchJob:
    """Cancel a job: at once if it waits, at the next chunk boundary if it runs."""
    BatchJob.objects.filter(pk=job.pk).update(cancel_requested=True)
    if job.status == BatchJob.Status.QUEUED:
        _finish(job.pk, BatchJob.Status.CANCELLED)
    job.refresh_from_db()
    return job


def batch_job_retry(*, job: BatchJob) -> BatchJob:
    """Run a failed or cancelled job again from its last stored chunk."""
    if job.status not in (BatchJob.Status.FAILED, BatchJob.Status.CANCELLED):
        raise InvalidInput(
            f"Only failed or cancelled jobs can be retried; this one is {job.status}."
        )
    with transaction.atomic():
        BatchJob.objects.filter(pk=job.pk).update(
            status=BatchJob.Status.QUEUED, cancel_requested=False, error="", finished_at=None
        )
        transaction.on_commit(lambda: batch_job_enqueue(job))
    job.refresh_from_db()
    return job


def batch_job_process(*, job_id: str, part: int = 0, parts: int = 1) -> None:
    """Predict the chunks of one part of a job (every ``parts``-th chunk from ``part``) that are
    not stored yet, for about ``BATCH_TASK_SECONDS``, then queue the rest of the part as a new
    task. The parts run in parallel on the workers there are; the one that stores the job's
    last chunk completes it. Safe to run twice or after a crash."""
    deadline = time.monotonic() + platform_setting("BATCH_TASK_SECONDS")
    job = BatchJob.objects.select_related("model_version__model").filter(pk=job_id).first()
    if job is None or job.is_terminal:
        return
    log_context_set(request_id=job.request_id, job_id=str(job.pk))
    BatchJob.objects.filter(pk=job.pk).update(
        status=BatchJob.Status.PROCESSING,
        started_at=job.started_at or timezone.now(),
        attempts=F("attempts") + 1,
    )
    model = registry.model(job.model_version.model.name)
    version = model.versions.get(job.model_version.label) if model else None
    if version is None:  # registered since this process last read the registry, maybe
        registry.mark_stale()
        model = registry.model(job.model_version.model.name)
        version = model.versions.get(job.model_version.label) if model else None
    if version is None:
        _finish(job.pk, BatchJob.Status.FAILED, "The job's model version no longer exists.")
        return
    served = Served(model, version, job.routing)
    try:
        rows = array_load(job.input_file.name, job.input_sha256)
    except (OSError, CorruptFile) as exc:
        _finish(job.pk, BatchJob.Status.FAILED, f"The job's rows cannot be read: {exc}")
        return
    done = set(job.chunks.values_list("index", flat=True))
    n_chunks = math.ceil(job.total_inputs / job.chunk_size)
    todo = [index for index in range(part, n_chunks, parts) if index not in done]
    for position, index in enumerate(todo):
        if position and time.monotonic() > deadline:  # at least one chunk a task
            batch_job_enqueue(job, part=part, parts=parts)
            logger.info("batch %s: part %d goes on in a new task", job.pk, part + 1)
            return
        state = BatchJob.objects.filter(pk=job.pk).values_list("cancel_requested", "status")
        cancel_requested, status = state.get()
        if status in BatchJob.TERMINAL:  # another part failed it, or it was cancelled
            return
        if cancel_requested:
            _finish(job.pk, BatchJob.Status.CANCELLED)
            return
        if not _chunk_stored(job, served, rows, index):
            return
    if job.chunks.count() < n_chunks:
        return  # other parts are still at work: the last one to finish completes the job
    stored = job.chunks.aggregate(rows=Sum(F("stop") - F("start")))["rows"] or 0
    if stored != job.total_inputs:
        _finish(job.pk, BatchJob.Status.FAILED, f"{stored} of {job.total_inputs} rows stored.")
        return
    _finish(job.pk, BatchJob.Status.COMPLETED)
    batch_jobs_prune()


def _chunk_stored(job: BatchJob, served: Served, rows: np.ndarray, index: int) -> bool:
    """Predict one chunk and store its outputs once, however often it is computed; False when
    its rows overflow the model or a remote version's server fails (the job then fails, naming
    the rows)."""
    start, stop = index * job.chunk_size, min((index + 1) * job.chunk_size, job.total_inputs)
    started = time.perf_counter()
    try:
        outputs = pipeline.infer(served, rows[start:stop], timeout=None).outputs
    except NonFiniteOutputs as exc:
        _finish(
            job.pk,
            BatchJob.Status.FAILED,
            f"row {start + exc.row + 1}: the values overflow the model (its outputs are not "
            "finite numbers).",
        )
        return False
    except UpstreamFailed as exc:  # a remote version's server: the job can be retried later
        _finish(job.pk, BatchJob.Status.FAILED, f"rows {start + 1}-{stop}: {exc.detail}")
        return False
    name, sha256 = file_save(chunk_name(job.pk, index), npy_bytes(outputs))
    with transaction.atomic():
        _, created = BatchChunk.objects.get_or_create(
            job_id=job.pk,
            index=index,
            defaults={"start": start, "stop": stop, "outputs_file": name, "outputs_sha256": sha256},
        )
        if created:
            BatchJob.objects.filter(pk=job.pk).update(
                completed_inputs=F("completed_inputs") + (stop - start)
            )
    if not created:  # another delivery of this task stored the chunk first
        file_delete(name)
        return True
    version = served.version
    metrics.batch_chunk_stored(
        model=version.model_name,
        version=version.label,
        rows=stop - start,
        seconds=time.perf_counter() - started,
    )
    logger.info("batch %s: rows %d-%d of %d stored", job.pk, start, stop, job.total_inputs)
    return True


def batch_jobs_prune() -> int:
    """Delete the jobs that ended more than ``BATCH_RETENTION_DAYS`` ago, with their files (a
    worker does it as it completes a job); how many were deleted."""
    days = platform_setting("BATCH_RETENTION_DAYS")
    if not days:
        return 0
    cutoff = timezone.now() - timedelta(days=days)
    expired = BatchJob.objects.filter(status__in=BatchJob.TERMINAL, finished_at__lt=cutoff)
    deleted = 0
    for job in expired.only("pk", "input_file")[:100]:
        job.delete()
        deleted += 1
    return deleted


def chunk_outputs(job: BatchJob, start: int, stop: int):
    """Yield (first row index, outputs) for the stored rows in [start, stop), chunk by chunk."""
    first = start // job.chunk_size
    last = max(first, (stop - 1) // job.chunk_size)
    chunks = job.chunks.filter(index__gte=first, index__lte=last).order_by("index")
    for chunk in chunks.iterator(chunk_size=1):
        outputs = array_load(chunk.outputs_file.name, chunk.outputs_sha256)
        lo, hi = max(start, chunk.start), min(stop, chunk.stop)
        if lo < hi:
            yield lo, outputs[lo - chunk.start : hi - chunk.start]
