"""V2 inference on the platform's pipeline: the routing, storage and shadow copies of /predict.

A request names a model and maybe a version; it is resolved exactly as ``POST /api/v1/predict``
resolves ``model`` and ``model_version`` (no version: the model's sticky traffic split). A
tensor of N rows goes through the pipeline as one block (batched with other requests for the
version) and is stored as N ``Prediction`` rows, each with its own input row, outputs, label,
confidence and id, the request's ``X-Request-ID``, and the inference time of the whole block;
so every row is readable with ``GET /api/v1/predict/{id}``, listed, and can get feedback.
"""

import contextlib
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PlatformError
from mlplatform.logging import log_context_set
from predictions.catalogue.registry import VersionEntry
from predictions.models import MLModel, Prediction
from predictions.pipeline import (
    Inference,
    Served,
    aload,
    astore,
    load,
    pipeline,
    principal_id,
    route,
    store,
)
from predictions.runtime.v2codec import ProtocolError, encode_response
from predictions.services.shadow import shadows_send
from predictions.v2.codec import InferenceRequest, RequestedOutput
from predictions.v2.signature import (
    Signature,
    feature_rows,
    output_tensors,
    selected_outputs,
    timeout_seconds,
)


@dataclass(frozen=True, slots=True)
class TensorAnswer:
    served: Served
    selected: list[RequestedOutput]
    outputs: np.ndarray
    labels: list[str | None]
    prediction_ids: list[str]
    processing_time: float


def signature_for(served: Served) -> Signature:
    """The version's tensors (a regressor's output width comes from its loaded predictor)."""
    model = served.model
    classifier = model.task == MLModel.Task.CLASSIFICATION
    labelled = classifier and model.labels
    n_outputs = len(model.labels) if labelled else load(served.version).n_outputs
    return Signature(model.name, len(model.feature_names), n_outputs, classifier)


def version_problem(version: VersionEntry) -> str | None:
    """Why the version cannot serve (its artifact does not load), or None when it is ready."""
    try:
        load(version)
    except PlatformError as exc:
        return exc.detail
    return None


def _observed(served: Served, *, rows: int, seconds: float) -> None:
    """Count the stored rows in the platform's prediction metrics, and time the one call."""
    # One inference call answers every row: the histogram gets one observation per call, the
    # counter one per stored prediction (as /predict counts them).
    if metrics.instrumented():
        labels = (served.model.name, served.version.label)
        metrics.PREDICTIONS.labels(*labels, served.routing, "false", "ok").inc(rows)
        metrics.INFERENCE_SECONDS.labels(*labels).observe(seconds)


@dataclass(frozen=True, slots=True)
class TensorRequest:
    """A checked V2 request: who asks, the version that serves, its rows and outputs."""

    user: User
    api_key: ApiKey | None
    served: Served
    rows: np.ndarray
    sent: np.ndarray  # the rows as sent (stored as each prediction's input)
    selected: list[RequestedOutput]
    timeout: float
    request_id: str


def tensor_request(
    *,
    user: User,
    api_key: ApiKey | None,
    model_name: str,
    version_label: str | None,
    request: InferenceRequest,
    request_id: str = "",
    refresh: bool = True,
) -> TensorRequest:
    """Route a V2 request and check its tensors; 404, 400 or 503 naming the problem.

    ``refresh=False`` on the event loop, which reads the registry and loads the version
    beforehand (``aload``).
    """
    served = route(
        model_name, version_label, principal=principal_id(user, api_key), refresh=refresh
    )
    log_context_set(model=served.model.name, version=served.version.label)
    try:
        signature = signature_for(served)
        rows, sent = feature_rows(
            request, signature, max_rows=platform_setting("MAX_BATCH_JSON_ROWS")
        )
        selected = selected_outputs(request, signature)
        timeout = timeout_seconds(request.parameters, limit=platform_setting("MAX_TIMEOUT"))
    except (PlatformError, ProtocolError) as exc:
        served.refused(exc.code if isinstance(exc, PlatformError) else InvalidInput.code)
        raise
    return TensorRequest(
        user=user,
        api_key=api_key,
        served=served,
        rows=rows,
        sent=sent,
        selected=selected,
        timeout=platform_setting("DEFAULT_TIMEOUT") if timeout is None else timeout,
        request_id=request_id,
    )


async def atensor_request(**request) -> TensorRequest:
    """``tensor_request`` for the event loop: the registry read and the version (and its
    shadows) loaded on a thread first, when due."""
    await aload()
    principal = principal_id(request["user"], request["api_key"])
    served = route(
        request["model_name"], request["version_label"], principal=principal, refresh=False
    )
    await aload(served.version)
    if served.model.shadow_versions:
        with contextlib.suppress(PlatformError):  # a broken shadow fails its copies, not this
            await aload(*served.model.shadow_versions)
    return tensor_request(**request, refresh=False)


def tensor_predictions_create(**request) -> TensorAnswer:
    """Validate a V2 request, predict its rows and store one Prediction per row.

    Takes the arguments of ``tensor_request``.
    """
    checked = tensor_request(**request)
    try:
        inference = pipeline.infer(
            checked.served, checked.rows, timeout=checked.timeout, field="input"
        )
        predictions = _predictions(checked, inference)
        store(predictions)
    except PlatformError as exc:
        checked.served.refused(exc.code)
        raise
    answer = _answer(checked, inference, predictions)
    transaction.on_commit(lambda: _copied(checked, predictions))
    return answer


async def atensor_predictions_create(checked: TensorRequest) -> TensorAnswer:
    """``tensor_predictions_create`` for the event loop, from ``atensor_request``."""
    try:
        inference = await pipeline.ainfer(
            checked.served, checked.rows, timeout=checked.timeout, field="input"
        )
        predictions = _predictions(checked, inference)
        await astore(predictions)
    except PlatformError as exc:
        checked.served.refused(exc.code)
        raise
    answer = _answer(checked, inference, predictions)
    _copied(checked, predictions)
    return answer


def _predictions(checked: TensorRequest, inference: Inference) -> list[Prediction]:
    common = {
        "owner_id": checked.user.pk,
        "api_key_id": checked.api_key.pk if checked.api_key is not None else None,
        "model_version_id": checked.served.version.id,
        "processing_time": inference.seconds,
        "created_at": timezone.now(),
        "request_id": checked.request_id,
        "routing": checked.served.routing,
        "cached": False,
    }
    return [
        Prediction(
            input=row_input,
            output=outcome.prediction,
            label=outcome.label,
            confidence=outcome.confidence,
            **common,
        )
        for row_input, outcome in zip(checked.sent.tolist(), inference.outcomes(), strict=True)
    ]


def _answer(
    checked: TensorRequest, inference: Inference, predictions: list[Prediction]
) -> TensorAnswer:
    _observed(checked.served, rows=len(predictions), seconds=inference.seconds)
    return TensorAnswer(
        served=checked.served,
        selected=checked.selected,
        outputs=inference.outputs,
        labels=[p.label for p in predictions],
        prediction_ids=[str(p.id) for p in predictions],
        processing_time=inference.seconds,
    )


def _copied(checked: TensorRequest, predictions: list[Prediction]) -> None:
    if checked.served.model.shadow_versions:
        ids, labels = [p.id for p in predictions], [p.label for p in predictions]
        shadows_send(checked.served, ids, labels, checked.rows)


def answer_encoded(answer: TensorAnswer, request: InferenceRequest) -> tuple[bytes, int | None]:
    """The response body of an answer, and its JSON header's length when binary outputs follow."""
    return encode_response(
        model_name=answer.served.model.name,
        model_version=answer.served.version.label,
        request_id=request.id,
        parameters={"routing": answer.served.routing, "processing_time": answer.processing_time},
        outputs=output_tensors(
            answer.selected,
            outputs=answer.outputs,
            labels=answer.labels,
            prediction_ids=answer.prediction_ids,
        ),
    )
