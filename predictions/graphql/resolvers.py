"""Resolvers: check the caller, call the same selectors and services as the REST views."""

import uuid
from datetime import datetime
from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types import Info
from strawberry.utils.str_converters import to_camel_case

from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, NotFound
from predictions.batch.jobs import batch_job_cancel, batch_job_submit
from predictions.batch.results import submitted_rows
from predictions.graphql.auth import caller
from predictions.graphql.types import BatchInput, BatchJob, MLModel, PredictInput, Prediction
from predictions.models import BatchJob as BatchJobModel
from predictions.models import MLModel as MLModelModel
from predictions.models import ModelVersion as ModelVersionModel
from predictions.pipeline import model_resolve
from predictions.selectors import (
    batch_job_get,
    batch_jobs_for,
    live_metrics,
    prediction_get,
    predictions_filter,
    predictions_for,
)
from predictions.serializers import (
    BatchSubmitSerializer,
    MLModelSerializer,
    PredictRequestSerializer,
    prediction_payload,
)
from predictions.services import prediction_create

READ_JOBS = ("read", "batch")


def _uuid(value: str, missing: NotFound) -> uuid.UUID:
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise missing from None


def _limit(limit: int) -> int:
    if limit < 1:
        raise InvalidInput("limit must be at least 1.")
    return min(limit, platform_setting("MAX_PAGE_SIZE"))


def _request_id(info: Info) -> str:
    return getattr(info.context.request, "request_id", "")


# --- queries ------------------------------------------------------------------------------


def prediction(info: Info, id: strawberry.ID) -> Prediction | None:
    user, _ = caller(info, "read", group="api")
    missing = NotFound(f"No prediction {id}.", code="prediction_not_found")
    found = prediction_get(user=user, prediction_id=_uuid(id, missing))
    return Prediction.from_payload(prediction_payload(found))


def predictions(
    info: Info,
    limit: int = 50,
    model: str | None = None,
    version: str | None = None,
    after: datetime | None = None,
    before: datetime | None = None,
) -> list[Prediction]:
    user, _ = caller(info, "read", group="api")
    queryset = predictions_filter(
        predictions_for(user),
        model=model,
        version=version,
        created_after=after,
        created_before=before,
    )
    return [Prediction.from_payload(prediction_payload(p)) for p in queryset[: _limit(limit)]]


def batch_job(info: Info, id: strawberry.ID) -> BatchJob | None:
    user, _ = caller(info, *READ_JOBS, group="api")
    missing = NotFound(f"No batch job {id}.", code="job_not_found")
    return BatchJob.from_job(batch_job_get(user=user, job_id=_uuid(id, missing)))


def batch_jobs(
    info: Info, limit: int = 50, status: str | None = None, model: str | None = None
) -> list[BatchJob]:
    user, _ = caller(info, *READ_JOBS, group="api")
    jobs = batch_jobs_for(user)
    if status:
        if status not in BatchJobModel.Status.values:
            raise InvalidInput(f"status: choose from {', '.join(BatchJobModel.Status.values)}.")
        jobs = jobs.filter(status=status)
    if model:
        jobs = jobs.filter(model_version__model__name=model)
    return [BatchJob.from_job(job) for job in jobs[: _limit(limit)]]


def _models(name: str | None = None) -> list[MLModel]:
    from django.db.models import Prefetch

    versions = ModelVersionModel.objects.select_related("model")
    models = MLModelModel.objects.prefetch_related(Prefetch("versions", queryset=versions))
    if name is not None:
        models = models.filter(name=name)
    models = list(models)
    context = {"live_metrics": live_metrics(v.id for m in models for v in m.versions.all())}
    data = MLModelSerializer(models, many=True, context=context).data
    return [MLModel.from_data(item) for item in data]


def models(info: Info) -> list[MLModel]:
    caller(info, group="api")
    return _models()


def model(info: Info, name: str) -> MLModel | None:
    caller(info, group="api")
    found = _models(name)
    if not found:
        raise NotFound(f"Unknown model {name!r}.", code="model_not_found")
    return found[0]


# --- mutations ----------------------------------------------------------------------------


def _arguments(given: dict, input_object, required: str) -> dict:
    """The arguments given one by one or as the tutorial's ``input`` object, not both."""
    name = to_camel_case(required)
    if input_object is not None:
        if given[required] is not None:
            raise InvalidInput(f"Send either {name} or input, not both.")
        given = vars(input_object)
    elif given[required] is None:
        raise InvalidInput(f"{name}: this argument is required (or send input).")
    return {k: v for k, v in given.items() if v is not None}


def predict(
    info: Info,
    input_data: JSON | None = None,
    model: str | None = None,
    model_version: str | None = None,
    timeout: float | None = None,
    input_: Annotated[PredictInput | None, strawberry.argument(name="input")] = None,
) -> Prediction:
    user, api_key = caller(info, "predict", group="predict")
    given = {"input_data": input_data, "model": model, "model_version": model_version}
    body = _arguments(given | {"timeout": timeout}, input_, "input_data")
    serializer = PredictRequestSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    created = prediction_create(
        user=user,
        api_key=api_key,
        input_data=data["input_data"],
        model_name=data.get("model"),
        version_label=data.get("model_version"),
        timeout=data.get("timeout"),
        request_id=_request_id(info),
    )
    return Prediction.from_payload(prediction_payload(created))


def predict_batch(
    info: Info,
    inputs: JSON | None = None,
    model: str | None = None,
    model_version: str | None = None,
    callback_url: str | None = None,
    input_: Annotated[BatchInput | None, strawberry.argument(name="input")] = None,
) -> BatchJob:
    user, api_key = caller(info, "batch", group="batch")
    given = {"inputs": inputs, "model": model, "model_version": model_version}
    body = _arguments(given | {"callback_url": callback_url}, input_, "inputs")
    serializer = BatchSubmitSerializer(data=body)
    serializer.is_valid(raise_exception=True)
    data = serializer.validated_data
    entry = model_resolve(data.get("model"))
    table, input_format, _ = submitted_rows(data, len(entry.feature_names), entry.feature_names)
    job = batch_job_submit(
        user=user,
        api_key=api_key,
        table=table,
        input_format=input_format,
        model_name=entry.name,
        version_label=data.get("model_version"),
        callback_url=data.get("callback_url", ""),
        request_id=_request_id(info),
    )
    return BatchJob.from_job(job)


def cancel_batch_job(info: Info, id: strawberry.ID) -> BatchJob:
    user, _ = caller(info, "batch", group="api")
    missing = NotFound(f"No batch job {id}.", code="job_not_found")
    job = batch_job_cancel(job=batch_job_get(user=user, job_id=_uuid(id, missing)))
    return BatchJob.from_job(job)
