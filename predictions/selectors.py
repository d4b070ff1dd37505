"""Reads of the ML domain: stored predictions, as each principal may see them."""

from datetime import datetime

from django.db.models import Avg, Count, Q, QuerySet

from accounts.models import User
from mlplatform.errors import NotFound
from predictions.models import BatchJob, Feedback, Prediction


def predictions_for(user: User) -> QuerySet[Prediction]:
    """The predictions a user may read: their own; staff see everyone's."""
    queryset = Prediction.objects.select_related("model_version__model")
    return queryset if user.is_staff else queryset.filter(owner=user)


def prediction_get(*, user: User, prediction_id) -> Prediction:
    prediction = predictions_for(user).filter(pk=prediction_id).first()
    if prediction is None:
        raise NotFound(f"No prediction {prediction_id}.", code="prediction_not_found")
    return prediction


def predictions_filter(
    queryset: QuerySet[Prediction],
    *,
    model: str | None = None,
    version: str | None = None,
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> QuerySet[Prediction]:
    if model:
        queryset = queryset.filter(model_version__model__name=model)
    if version:
        queryset = queryset.filter(model_version__label=version)
    if created_after:
        queryset = queryset.filter(created_at__gte=created_after)
    if created_before:
        queryset = queryset.filter(created_at__lt=created_before)
    return queryset


def live_metrics(version_ids) -> dict[int, dict]:
    """Per version, from feedback: count, accuracy (classifiers) or mean absolute error."""
    rows = (
        Feedback.objects.filter(prediction__model_version_id__in=list(version_ids))
        .values("prediction__model_version_id")
        .annotate(
            n_feedback=Count("id"),
            n_correct=Count("id", filter=Q(correct=True)),
            n_judged=Count("correct"),
            mae=Avg("absolute_error"),
        )
    )
    metrics = {}
    for row in rows:
        metrics[row["prediction__model_version_id"]] = {
            "feedback_count": row["n_feedback"],
            "accuracy": row["n_correct"] / row["n_judged"] if row["n_judged"] else None,
            "mean_absolute_error": row["mae"],
        }
    return metrics


def batch_jobs_for(user: User) -> QuerySet[BatchJob]:
    """The batch jobs a user may see: their own; staff see everyone's."""
    queryset = BatchJob.objects.select_related("model_version__model")
    return queryset if user.is_staff else queryset.filter(owner=user)


def batch_job_get(*, user: User, job_id) -> BatchJob:
    job = batch_jobs_for(user).filter(pk=job_id).first()
    if job is None:
        raise NotFound(f"No batch job {job_id}.", code="job_not_found")
    return job
