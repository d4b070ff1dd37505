"""V2 inference on the platform's services: the routing, storage and shadow copies of /predict.

A request names a model and maybe a version; it is resolved exactly as ``POST /api/v1/predict``
resolves ``model`` and ``model_version`` (no version: the model's sticky traffic split). A
tensor of N rows is predicted in one vectorised call and stored as N ``Prediction`` rows (one
prepared INSERT run for every row, in one transaction), each with its own input row, outputs,
label, confidence and id, the request's ``X-Request-ID``, and the inference time of the whole
call; so every row is readable with ``GET /api/v1/predict/{id}``, listed, and can get feedback.
"""

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from django.db import connections, router, transaction
from django.db.backends.postgresql.psycopg_any import is_psycopg3
from django.utils import timezone

from accounts.models import ApiKey, User
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PlatformError
from mlplatform.logging import log_context_set
from predictions.models import MLModel, Prediction
from predictions.registry import ModelEntry, VersionEntry, registry
from predictions.runtime.errors import ArtifactError
from predictions.runtime.outputs import Outcome, describe
from predictions.runtime.predictors import Predictor
from predictions.runtime.routing import stable_unit
from predictions.services.predict import (
    inference_run,
    model_resolve,
    principal_id,
    version_resolve,
)
from predictions.services.shadow import ShadowJob, shadow_runner
from predictions.v2.codec import InferenceRequest, ProtocolError, RequestedOutput
from predictions.v2.signature import (
    Signature,
    feature_rows,
    selected_outputs,
    timeout_seconds,
)


@dataclass(frozen=True, slots=True)
class Served:
    """The version that answers a request, and why (``explicit``, ``latest``, ``split``...)."""

    model: ModelEntry
    version: VersionEntry
    routing: str


@dataclass(frozen=True, slots=True)
class TensorAnswer:
    served: Served
    selected: list[RequestedOutput]
    outputs: np.ndarray
    labels: list[str | None]
    prediction_ids: list[str]
    processing_time: float


def version_served(*, model_name: str, version_label: str | None, principal: str) -> Served:
    """Resolve a model and version as /predict does; NotFound (404) names what is missing."""
    model = model_resolve(model_name)
    version, routing = version_resolve(model, version_label or None, principal=principal)
    return Served(model, version, routing)


def loaded_predictor(served: Served) -> Predictor:
    """The version's predictor; 503 when its artifact no longer loads (never a 500)."""
    try:
        return registry.predictor(served.version)
    except ArtifactError as exc:
        raise PlatformError(
            f"Version {served.version.label!r} of model {served.model.name!r} cannot be "
            f"loaded: {exc}",
            code="version_unavailable",
            status_code=503,
        ) from None


def signature_for(served: Served) -> Signature:
    """The version's tensors (a regressor's output width comes from its loaded predictor)."""
    model = served.model
    classifier = model.task == MLModel.Task.CLASSIFICATION
    if classifier and model.labels:
        n_outputs = len(model.labels)
    else:
        n_outputs = loaded_predictor(served).n_outputs
    return Signature(model.name, len(model.feature_names), n_outputs, classifier)


def version_problem(served: Served) -> str | None:
    """Why the version cannot serve (its artifact does not load), or None when it is ready."""
    try:
        loaded_predictor(served)
    except PlatformError as exc:
        return exc.detail
    return None


def _send_to_shadows(
    served: Served, ids: list[uuid.UUID], labels: list[str | None], rows: np.ndarray
) -> None:
    """Copy each stored row to the shadow versions, by the share /predict copies."""
    model = served.model
    jobs = [
        ShadowJob(
            prediction_id=prediction_id,
            version=shadow,
            rows=rows[i : i + 1],
            task=model.task,
            labels=model.labels,
            primary_label=labels[i],
        )
        for shadow in model.shadow_versions
        for i, prediction_id in enumerate(ids)
        if stable_unit(f"shadow:{shadow.id}:{prediction_id}") < shadow.shadow_share
    ]
    if jobs:
        transaction.on_commit(lambda: [shadow_runner.submit(job) for job in jobs])


_VARYING = ("id", "input", "output", "label", "confidence")


def _orjson_text(value: Any) -> str:
    return orjson.dumps(value).decode()


def _json_param(connection, field) -> Callable[[Any], Any]:
    """How a JSON document goes to the database: orjson where the backend is known.

    Django's own conversion uses the standard library's encoder, half the remaining cost of a
    stored row; SQLite takes JSON text and psycopg 3 a ``Jsonb`` wrapper with its encoder.
    """
    if connection.vendor == "sqlite":
        return _orjson_text
    if connection.vendor == "postgresql" and is_psycopg3:
        from psycopg.types.json import Jsonb

        return lambda value: Jsonb(value, dumps=_orjson_text)
    return lambda value: field.get_db_prep_save(value, connection)


def predictions_insert(
    *, ids: list[uuid.UUID], inputs: list, outcomes: list[Outcome], common: dict[str, Any]
) -> None:
    """Store one prediction per row with one prepared INSERT run for every row.

    ``common`` holds the values all rows share, by field name (foreign keys as ids). The
    ORM's ``bulk_create`` builds its SQL value by value, which cost about 0.1 ms a row (more
    than everything else a 1,000-row request does); here each shared value is converted for
    the database once and each row only converts its id and its two JSON documents.
    """
    meta = Prediction._meta
    connection = connections[router.db_for_write(Prediction)]
    fields = [meta.get_field(name) for name in (*_VARYING, *common)]
    shared = [
        meta.get_field(name).get_db_prep_save(value, connection) for name, value in common.items()
    ]
    id_field, as_json = fields[0], _json_param(connection, fields[1])
    params = [
        (
            id_field.get_db_prep_save(prediction_id, connection),
            as_json(row_input),
            as_json(outcome.prediction),
            outcome.label,
            outcome.confidence,
            *shared,
        )
        for prediction_id, row_input, outcome in zip(ids, inputs, outcomes, strict=True)
    ]
    columns = ", ".join(connection.ops.quote_name(field.column) for field in fields)
    placeholders = ", ".join(["%s"] * len(fields))
    sql = f"INSERT INTO {connection.ops.quote_name(meta.db_table)} ({columns}) VALUES ({placeholders})"  # noqa: S608, E501 - names from the model, values as parameters
    with transaction.atomic(using=connection.alias), connection.cursor() as cursor:
        cursor.executemany(sql, params)


def _observed(served: Served, *, rows: int, seconds: float) -> None:
    """Count the stored rows in the platform's prediction metrics, and time the one call."""
    # One inference call answers every row: the histogram gets one observation per call, the
    # counter one per stored prediction (as /predict counts them).
    if metrics.instrumented():
        labels = (served.model.name, served.version.label)
        metrics.PREDICTIONS.labels(*labels, served.routing, "false", "ok").inc(rows)
        metrics.INFERENCE_SECONDS.labels(*labels).observe(seconds)


def tensor_predictions_create(
    *,
    user: User,
    api_key: ApiKey | None,
    model_name: str,
    version_label: str | None,
    request: InferenceRequest,
    request_id: str = "",
) -> TensorAnswer:
    """Validate a V2 request, predict its rows in one call and store one Prediction per row."""
    served = version_served(
        model_name=model_name, version_label=version_label, principal=principal_id(user, api_key)
    )
    model, version = served.model, served.version
    log_context_set(model=model.name, version=version.label)
    try:
        signature = signature_for(served)
        rows, sent = feature_rows(
            request, signature, max_rows=platform_setting("MAX_BATCH_JSON_ROWS")
        )
        selected = selected_outputs(request, signature)
        timeout = timeout_seconds(request.parameters, limit=platform_setting("MAX_TIMEOUT"))
        if timeout is None:
            timeout = platform_setting("DEFAULT_TIMEOUT")
        outputs, elapsed = inference_run(loaded_predictor(served), rows, timeout, field="input")
    except (PlatformError, ProtocolError) as exc:
        code = exc.code if isinstance(exc, PlatformError) else InvalidInput.code
        metrics.prediction_refused(
            model=model.name, version=version.label, routing=served.routing, code=code
        )
        raise
    outcomes = describe(outputs, task=model.task, labels=model.labels)
    ids = [uuid.uuid4() for _ in outcomes]
    predictions_insert(
        ids=ids,
        inputs=sent.tolist(),
        outcomes=outcomes,
        common={
            "owner": user.pk,
            "api_key": api_key.pk if api_key is not None else None,
            "model_version": version.id,
            "processing_time": elapsed,
            "created_at": timezone.now(),
            "request_id": request_id,
            "routing": served.routing,
            "cached": False,
        },
    )
    labels = [outcome.label for outcome in outcomes]
    _observed(served, rows=len(ids), seconds=elapsed)
    _send_to_shadows(served, ids, labels, rows)
    return TensorAnswer(
        served=served,
        selected=selected,
        outputs=outputs,
        labels=labels,
        prediction_ids=[str(i) for i in ids],
        processing_time=elapsed,
    )
