"""django-q2 tasks: plain functions that take ids and call a service (queued by dotted path)."""

from mlplatform import tracing
from mlplatform.logging import task_context
from predictions.batch.jobs import batch_job_process


@task_context
def batch_job_run(
    job_id: str, part: int = 0, parts: int = 1, trace_context: dict[str, str] | None = None
) -> None:
    """Process one part of a batch job; delivered at least once, so the service is safe to run
    twice.

    ``trace_context`` carries the submitting request's trace (W3C ``traceparent``) when
    tracing is on, so the task's span joins that trace.
    """
    with tracing.task_span("batch_job_run", trace_context, job_id=job_id, part=part):
        batch_job_process(job_id=job_id, part=part, parts=parts)
