"""Making and storing one prediction, as ``/predict``, GraphQL ``predict`` and stream rows do.

``prediction_create`` runs on a thread (DRF views, GraphQL); ``aprediction_create`` on the event
loop (the lean handler of ``/predict``, streams). Both check the request with
``prediction_request`` and then take the same steps through the pipeline: infer, store, count,
copy to the shadows.
"""

import contextlib
from concurrent.futures import wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PlatformError
from mlplatform.logging import log_context_set
from predictions.models import Prediction
from predictions.pipeline import (
    Inference,
    Served,
    aload,
    astore,
    pipeline,
    principal_id,
    route,
    store,
)
from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input
from predictions.runtime.outputs import describe
from predictions.services.shadow import shadows_send


@dataclass(frozen=True, slots=True)
class PredictionRequest:
    """A checked request for one prediction: who asks, the version that serves, the row."""

    user: User
    api_key: ApiKey | None
    served: Served
    input_data: Any
    rows: np.ndarray
    timeout: float
    request_id: str


def prediction_request(
    *,
    user: User,
    api_key: ApiKey | None,
    input_data: Any,
    model_name: str | None = None,
    version_label: str | None = None,
    timeout: float | None = None,
    request_id: str = "",
    cache_ttl: int | None = None,
    refresh: bool = True,
) -> PredictionRequest:
    """Route the request and check its row; NotFound (404) or InvalidInput (400) if not fit.

    ``cache_ttl`` caches the answer for that many seconds when the model itself has no time to
    live. ``refresh=False`` on the event loop, which reads the registry beforehand (``aload``).
    """
    served = route(
        model_name, version_label, principal=principal_id(user, api_key), refresh=refresh
    )
    if cache_ttl and not served.model.cache_ttl:
        served = replace(served, model=replace(served.model, cache_ttl=cache_ttl))
    model = served.model
    log_context_set(model=model.name, version=served.version.label)
    try:
        rows = rows_from_input(
            input_data, n_features=len(model.feature_names), feature_names=model.feature_names
        )
    except InputError as exc:
        served.refused(InvalidInput.code)
        raise InvalidInput(str(exc)) from None
    if rows.shape[0] != 1:
        served.refused(InvalidInput.code)
        raise InvalidInput(
            "input_data: /predict takes one row; send several rows to /predict/batch."
        )
    return PredictionRequest(
        user=user,
        api_key=api_key,
        served=served,
        input_data=input_data,
        rows=rows,
        timeout=platform_setting("DEFAULT_TIMEOUT") if timeout is None else timeout,
        request_id=request_id,
    )


async def aprediction_request(**request: Any) -> PredictionRequest:
    """``prediction_request`` for the event loop: the registry read and the version (and its
    shadows) loaded on a thread first, when due."""
    await aload()
    checked = prediction_request(**request, refresh=False)
    await aload(checked.served.version)
    shadows = checked.served.model.shadow_versions
    if shadows:
        with contextlib.suppress(PlatformError):  # a broken shadow fails its copies, not this
            await aload(*shadows)
    return checked


def prediction_create(**request: Any) -> Prediction:
    """Validate one row, answer it from the cache or the resolved version, and store it.

    Takes the arguments of ``prediction_request``.
    """
    return _create(prediction_request(**request))


def prediction_create_in_parallel(**request: Any) -> tuple[Prediction, list[dict]]:
    """``prediction_create``, and the row answered by every serving version of the model at
    once (``versions_predict``), as the tutorial's ``/predict/async`` shows."""
    checked = prediction_request(**request)
    answers = versions_predict(checked)
    return _create(checked), answers


def _create(checked: PredictionRequest) -> Prediction:
    try:
        inference = pipeline.infer(
            checked.served, checked.rows, timeout=checked.timeout, cache_input=checked.input_data
        )
        prediction = _prediction(checked, inference)
        store([prediction])
    except PlatformError as exc:
        checked.served.refused(exc.code)
        raise
    _stored(checked, prediction, inference)
    transaction.on_commit(lambda: _copied(checked, prediction))
    return prediction


async def aprediction_create(checked: PredictionRequest) -> Prediction:
    """``prediction_create`` for the event loop, from ``aprediction_request``."""
    try:
        inference = await pipeline.ainfer(
            checked.served, checked.rows, timeout=checked.timeout, cache_input=checked.input_data
        )
        prediction = _prediction(checked, inference)
        await astore([prediction])
    except PlatformError as exc:
        checked.served.refused(exc.code)
        raise
    _stored(checked, prediction, inference)
    _copied(checked, prediction)
    return prediction


def versions_predict(checked: PredictionRequest) -> list[dict]:
    """The row answered by every serving version of its model at once (each through its own
    micro-batcher), within the request's timeout; nothing is stored. A version that fails or
    is late has an ``error`` instead of its outcome."""
    model = checked.served.model
    futures = {}
    for version in model.serving_versions:
        try:
            futures[version.label] = pipeline.submit(version, checked.rows)
        except PlatformError as exc:
            futures[version.label] = exc
    wait([f for f in futures.values() if not isinstance(f, Exception)], checked.timeout)
    answers = []
    for label, future in futures.items():
        answer: dict[str, Any] = {"model_version": label}
        if isinstance(future, Exception):
            answer["error"] = future.detail
        elif not future.done():
            future.cancel()
            answer["error"] = f"Did not finish within the timeout of {checked.timeout:g} s."
        elif future.exception() is not None:
            answer["error"] = "The version failed on this row."
        elif not np.isfinite(future.result()).all():
            answer["error"] = "This row overflows the version (its outputs are not finite)."
        else:
            outcome = describe(future.result(), task=model.task, labels=model.labels)[0]
            answer |= {
                "prediction": outcome.prediction,
                "label": outcome.label,
                "confidence": outcome.confidence,
            }
        answers.append(answer)
    return answers


def _prediction(checked: PredictionRequest, inference: Inference) -> Prediction:
    outcome = inference.outcomes()[0]
    prediction = Prediction(
        owner_id=checked.user.pk,
        api_key_id=checked.api_key.pk if checked.api_key is not None else None,
        model_version_id=checked.served.version.id,
        input=checked.input_data,
        output=outcome.prediction,
        label=outcome.label,
        confidence=outcome.confidence,
        processing_time=inference.seconds,
        created_at=timezone.now(),
        request_id=checked.request_id,
        routing=checked.served.routing,
        cached=inference.cached,
    )
    prediction.model_name = checked.served.model.name
    prediction.version_label = checked.served.version.label
    return prediction


def _stored(checked: PredictionRequest, prediction: Prediction, inference: Inference) -> None:
    served = checked.served
    metrics.prediction_observed(
        model=served.model.name,
        version=served.version.label,
        routing=served.routing,
        cached=inference.cached,
        seconds=inference.seconds,
    )
    log_context_set(prediction_id=str(prediction.id))


def _copied(checked: PredictionRequest, prediction: Prediction) -> None:
    if checked.served.model.shadow_versions:
        shadows_send(checked.served, [prediction.id], [prediction.label], checked.rows)
