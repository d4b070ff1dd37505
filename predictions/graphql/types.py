"""GraphQL object types: the fields of the REST bodies, in camelCase."""

from datetime import datetime
from typing import Any

import strawberry
from strawberry.scalars import JSON

from predictions.batch.results import job_payload, job_results
from predictions.models import BatchJob as BatchJobModel


@strawberry.type(description="A stored prediction, as GET /api/v1/predict/{id} shows it.")
class Prediction:
    prediction_id: strawberry.ID
    model: str
    model_version: str
    prediction: list[float] = strawberry.field(
        description="Class probabilities (classifiers) or values (regressors)."
    )
    label: str | None
    confidence: float | None
    processing_time: float = strawberry.field(description="Seconds spent on inference.")
    timestamp: datetime
    cached: bool = strawberry.field(description="Answered from the model's response cache.")
    routing: str = strawberry.field(
        description="Why this version served: explicit, latest, split or default."
    )
    input_data: JSON
    request_id: str

    @strawberry.field(description="The same as predictionId (the tutorial's name).")
    def id(self) -> strawberry.ID:
        return self.prediction_id

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> "Prediction":
        return cls(**payload)


@strawberry.type(description="Accuracy or error of a version, from feedback on its predictions.")
class LiveMetrics:
    feedback_count: int
    accuracy: float | None
    mean_absolute_error: float | None


@strawberry.type(description="The V2 server that answers for a remote version.")
class RemoteUpstream:
    url: str
    model: str
    version: str
    timeout: float
    output: str
    credential_set: bool = strawberry.field(
        description="Whether a credential is sent (never shown)."
    )


@strawberry.type(description="A version of a model.")
class ModelVersion:
    label: str
    description: str
    runtime: str
    status: str
    traffic_weight: float
    is_shadow: bool
    shadow_share: float
    max_batch_size: int = strawberry.field(
        description="Most rows one call of the model answers (1: no batching)."
    )
    batch_wait_ms: float = strawberry.field(
        description="Milliseconds a batch that is not full may wait for more rows."
    )
    checksum: str
    metrics: JSON = strawberry.field(description="Metrics from training.")
    created_at: datetime
    is_default: bool
    live_metrics: LiveMetrics
    remote: RemoteUpstream | None = strawberry.field(
        description="Runtime remote: the V2 server that answers for the version; else null."
    )


@strawberry.type(description="A registered model, as GET /api/v1/models/{name} shows it.")
class MLModel:
    name: str
    description: str
    task: str
    n_features: int
    feature_names: list[str]
    labels: list[str]
    input_schema: JSON = strawberry.field(description="A JSON Schema of inputData.")
    default_version: str | None
    latest_version: str | None
    cache_ttl: int
    versions: list[ModelVersion]

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> "MLModel":
        """From the REST serializer's data, so that both APIs show the same values."""
        versions = [
            ModelVersion(
                **{
                    **version,
                    "live_metrics": LiveMetrics(**version["live_metrics"]),
                    "remote": RemoteUpstream(**version["remote"]) if version["remote"] else None,
                }
            )
            for version in data["versions"]
        ]
        return cls(**{**data, "versions": versions})


@strawberry.type(description="One result row of a batch job.")
class BatchResult:
    input_index: int
    prediction: list[float]
    label: str | None
    confidence: float | None


@strawberry.type(description="A batch job, as GET /api/v1/predict/batch/{id} shows it.")
class BatchJob:
    job_id: strawberry.ID
    status: str
    model: str
    model_version: str
    routing: str
    total_inputs: int
    completed: int
    progress: float = strawberry.field(description="completed / totalInputs, 0 to 1.")
    input_format: str
    error: str | None
    cancel_requested: bool
    callback_url: str | None
    webhook: JSON | None = strawberry.field(description="Delivery state of the job's webhook.")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    processing_seconds: float | None
    estimated_completion: datetime | None
    request_id: str
    links: JSON = strawberry.field(description="REST links: self, results, events, cancel.")
    job: strawberry.Private[BatchJobModel]

    @strawberry.field(description="The same as jobId (the tutorial's name).")
    def id(self) -> strawberry.ID:
        return self.job_id

    @strawberry.field(
        description="Once the job has ended: its result rows, at most MAX_PAGE_SIZE (500) of "
        "them (the rest from the REST /results pages); null while it runs."
    )
    def results(self) -> list[BatchResult] | None:
        rows, _ = job_results(self.job)
        return None if rows is None else [BatchResult(**row) for row in rows]

    @classmethod
    def from_job(cls, job: BatchJobModel) -> "BatchJob":
        return cls(**job_payload(job), job=job)


@strawberry.input(description="The arguments of predict, as one input object.")
class PredictInput:
    input_data: JSON
    model: str | None = None
    model_version: str | None = None
    timeout: float | None = None


@strawberry.input(description="The arguments of predictBatch, as one input object.")
class BatchInput:
    inputs: JSON
    model: str | None = None
    model_version: str | None = None
    callback_url: str | None = None
