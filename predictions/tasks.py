"""django-q2 tasks: plain functions that take ids and call a service (queued by dotted path)."""

from predictions.services.batch import batch_job_process


def batch_job_run(job_id: str) -> None:
    """Process a batch job; delivered at least once, so the service is safe to run twice."""
    batch_job_process(job_id=job_id)
