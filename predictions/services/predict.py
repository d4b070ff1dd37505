"""Making and storing predictions: version routing, the response cache, shadow copies."""

import hashlib
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from django.core.cache import cache
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, User
from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.errors import InferenceTimeout, InvalidInput, NotFound, PlatformError
from mlplatform.logging import log_context_set
from predictions.models import ModelVersion, Prediction
from predictions.registry import ModelEntry, VersionEntry, registry
from predictions.runtime.ensemble import EnsembleTimeout, WeightedEnsemble
from predictions.runtime.errors import InputError
from predictions.runtime.inputs import rows_from_input
from predictions.runtime.outputs import Outcome, describe
from predictions.runtime.predictors import Predictor
from predictions.runtime.routing import pick_weighted, stable_unit
from predictions.services.shadow import ShadowJob, shadow_runner


class Routing:
    EXPLICIT = "explicit"
    LATEST = "latest"
    SPLIT = "split"
    DEFAULT = "default"


def principal_id(user: User, api_key: ApiKey | None) -> str:
    """Who is asking, for sticky routing and idempotency: the key, else the user."""
    return f"key:{api_key.pk}" if api_key is not None else f"user:{user.pk}"


def model_resolve(name: str | None) -> ModelEntry:
    name = name or platform_setting("DEFAULT_MODEL")
    entry = registry.model(name)
    if entry is None:
        known = ", ".join(m.name for m in registry.models()) or "none"
        raise NotFound(f"Unknown model {name!r}; models: {known}.", code="model_not_found")
    return entry


def version_resolve(
    model: ModelEntry, requested: str | None, *, principal: str
) -> tuple[VersionEntry, str]:
    """The version that serves a request, and why.

    An explicit label reaches any version that is not retired (staged ones too, for testing);
    ``latest`` is the newest active serving version; absent, the model's traffic split picks
    a version by weight, the same one for the same principal while the weights stay the same
    (zero-weight versions are reachable only explicitly). With no positive weight, the
    model's default version serves.
    """
    if requested == "latest":
        version, routing = model.latest, Routing.LATEST
    elif requested:
        version = model.versions.get(requested)
        if version is None:
            known = ", ".join(model.versions) or "none"
            raise NotFound(
                f"Model {model.name!r} has no version {requested!r}; versions: {known}.",
                code="version_not_found",
            )
        if version.status == ModelVersion.Status.RETIRED:
            raise NotFound(
                f"Version {requested!r} of model {model.name!r} is retired.",
                code="version_retired",
            )
        return version, Routing.EXPLICIT
    elif split := model.split:
        version = pick_weighted(split, stable_unit(f"{model.name}:{principal}"))
        routing = Routing.SPLIT
    else:
        version, routing = model.default or model.latest, Routing.DEFAULT
    if version is None:
        raise NotFound(f"Model {model.name!r} has no active version.", code="version_not_found")
    return version, routing


def inference_run(
    predictor: Predictor, rows: np.ndarray, timeout: float, *, field: str = "input_data"
) -> tuple[np.ndarray, float]:
    """Run the predictor on rows; an answer later than ``timeout`` seconds is refused (504).

    A dense network on a few rows takes microseconds and cannot hang, so it runs inline:
    handing it to another thread would cost more than the inference itself. Ensembles run
    their members concurrently and stop waiting at the deadline. Outputs that are not finite
    numbers are refused (400), naming the first such row of several.
    """
    started = time.perf_counter()
    try:
        if isinstance(predictor, WeightedEnsemble):
            outputs = predictor.predict(rows, timeout=timeout)
        else:
            outputs = predictor.predict(rows)
    except EnsembleTimeout:
        outputs = None
    elapsed = time.perf_counter() - started
    if outputs is None or elapsed > timeout:
        raise InferenceTimeout(f"Inference did not finish within the timeout of {timeout:g} s.")
    finite = np.isfinite(outputs).all(axis=1)
    if not finite.all():
        where = field if len(rows) == 1 else f"{field} row {int(np.flatnonzero(~finite)[0])}"
        raise InvalidInput(
            f"{where}: these values overflow the model (its outputs are not finite numbers)."
        )
    return outputs, elapsed


@dataclass(frozen=True, slots=True)
class _Answer:
    outcome: Outcome
    processing_time: float
    cached: bool


def _cache_key(version: VersionEntry, input_data: Any) -> str:
    """Model, version, artifact checksum and the exact input: a new artifact never hits."""
    body = orjson.dumps(input_data, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()
    return f"predict:{version.model_name}:{version.id}:{version.checksum}:{digest}"


def _answer(
    model: ModelEntry, version: VersionEntry, rows: np.ndarray, input_data: Any, timeout: float
) -> _Answer:
    key = _cache_key(version, input_data) if model.cache_ttl else None
    if key is not None:
        started = time.perf_counter()
        hit = cache.get(key)
        metrics.response_cache_lookup(model=model.name, hit=hit is not None)
        if hit is not None:
            return _Answer(Outcome(*hit), time.perf_counter() - started, cached=True)
    outputs, elapsed = inference_run(registry.predictor(version), rows, timeout)
    outcome = describe(outputs, task=model.task, labels=model.labels)[0]
    if key is not None:
        cache.set(key, (outcome.prediction, outcome.label, outcome.confidence), model.cache_ttl)
    return _Answer(outcome, elapsed, cached=False)


def _send_to_shadows(model: ModelEntry, prediction: Prediction, rows: np.ndarray) -> None:
    """Copy a share of the traffic to shadow versions, after the caller's row is committed."""
    for shadow in model.shadow_versions:
        if stable_unit(f"shadow:{shadow.id}:{prediction.id}") >= shadow.shadow_share:
            continue
        job = ShadowJob(
            prediction_id=prediction.id,
            version=shadow,
            rows=rows,
            task=model.task,
            labels=model.labels,
            primary_label=prediction.label,
        )
        transaction.on_commit(lambda job=job: shadow_runner.submit(job))


def prediction_create(
    *,
    user: User,
    api_key: ApiKey | None,
    input_data: Any,
    model_name: str | None = None,
    version_label: str | None = None,
    timeout: float | None = None,
    request_id: str = "",
) -> Prediction:
    """Validate one row, answer it from the cache or the resolved version, and store it."""
    model = model_resolve(model_name)
    version, routing = version_resolve(model, version_label, principal=principal_id(user, api_key))
    log_context_set(model=model.name, version=version.label)
    observed = {"model": model.name, "version": version.label, "routing": routing}
    try:
        rows = rows_from_input(
            input_data, n_features=len(model.feature_names), feature_names=model.feature_names
        )
    except InputError as exc:
        metrics.prediction_refused(**observed, code=InvalidInput.code)
        raise InvalidInput(str(exc)) from None
    if rows.shape[0] != 1:
        raise InvalidInput(
            "input_data: /predict takes one row; send several rows to /predict/batch."
        )
    if timeout is None:
        timeout = platform_setting("DEFAULT_TIMEOUT")
    try:
        answer = _answer(model, version, rows, input_data, timeout)
    except PlatformError as exc:
        metrics.prediction_refused(**observed, code=exc.code)
        raise
    prediction = Prediction(
        owner=user,
        api_key=api_key,
        model_version_id=version.id,
        input=input_data,
        output=answer.outcome.prediction,
        label=answer.outcome.label,
        confidence=answer.outcome.confidence,
        processing_time=answer.processing_time,
        created_at=timezone.now(),
        request_id=request_id,
        routing=routing,
        cached=answer.cached,
    )
    prediction.save(force_insert=True)
    metrics.prediction_observed(**observed, cached=answer.cached, seconds=answer.processing_time)
    log_context_set(prediction_id=str(prediction.id))
    prediction.model_name = model.name
    prediction.version_label = version.label
    _send_to_shadows(model, prediction, rows)
    return prediction
