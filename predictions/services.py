"""Writes of the ML domain: registering versions, and making and storing predictions."""

import time
from typing import Any

import numpy as np
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from accounts.models import ApiKey, User
from mlplatform.conf import platform_setting
from mlplatform.errors import InferenceTimeout, InvalidInput, NotFound
from predictions.models import MLModel, ModelVersion, Prediction, RegistryRevision
from predictions.registry import ModelEntry, VersionEntry, registry
from predictions.runtime.artifacts import checksum as artifact_checksum
from predictions.runtime.errors import ArtifactError, InputError
from predictions.runtime.inputs import rows_from_input
from predictions.runtime.outputs import describe
from predictions.runtime.predictors import Predictor, load_predictor

# --- Registry -----------------------------------------------------------------------------


def registry_touch() -> None:
    """Tell every process that the registry changed (they reload within about a second)."""
    updated = RegistryRevision.objects.filter(pk=1).update(revision=F("revision") + 1)
    if not updated:
        RegistryRevision.objects.get_or_create(pk=1, defaults={"revision": 1})
    # Now, so this process looks again on its next read; and after commit, so that a read
    # made before the commit cannot leave it on the old rows until the next refresh.
    registry.mark_stale()
    transaction.on_commit(registry.mark_stale)


def artifact_validate(*, model: MLModel, runtime: str, data: bytes) -> Predictor:
    """Load an artifact and check it fits the model's inputs and outputs; InvalidInput if not."""
    try:
        predictor = load_predictor(runtime, data)
    except ArtifactError as exc:
        raise InvalidInput(f"The artifact is not a valid {runtime} model: {exc}") from None
    if predictor.n_inputs != model.n_features:
        raise InvalidInput(
            f"The artifact takes {predictor.n_inputs} inputs but model {model.name!r} has "
            f"{model.n_features} features."
        )
    if model.task == MLModel.Task.CLASSIFICATION and predictor.n_outputs != len(model.labels):
        raise InvalidInput(
            f"The artifact gives {predictor.n_outputs} outputs but model {model.name!r} has "
            f"{len(model.labels)} class labels."
        )
    return predictor


@transaction.atomic
def model_version_create(
    *,
    model: MLModel,
    label: str,
    artifact: bytes,
    runtime: str = ModelVersion.Runtime.NUMPY,
    artifact_name: str = "",
    status: str = ModelVersion.Status.STAGED,
    traffic_weight: float = 0.0,
    description: str = "",
    metrics: dict | None = None,
) -> ModelVersion:
    """Register a validated artifact as a new version of ``model``."""
    artifact_validate(model=model, runtime=runtime, data=artifact)
    if ModelVersion.objects.filter(model=model, label=label).exists():
        raise InvalidInput(f"Model {model.name!r} already has a version {label!r}.")
    version = ModelVersion.objects.create(
        model=model,
        label=label,
        runtime=runtime,
        artifact=artifact,
        artifact_name=artifact_name,
        checksum=artifact_checksum(artifact),
        status=status,
        traffic_weight=traffic_weight,
        description=description,
        metrics=metrics or {},
    )
    registry_touch()
    return version


@transaction.atomic
def model_version_replace_artifact(
    *, version: ModelVersion, artifact: bytes, artifact_name: str = ""
) -> ModelVersion:
    """Swap a version's artifact after validating it (the checksum changes with it)."""
    artifact_validate(model=version.model, runtime=version.runtime, data=artifact)
    version.artifact = artifact
    version.artifact_name = artifact_name
    version.checksum = artifact_checksum(artifact)
    version.save()
    registry_touch()
    return version


@transaction.atomic
def model_version_set_status(*, version: ModelVersion, status: str) -> ModelVersion:
    version.status = status
    version.save(update_fields=["status", "updated_at"])
    registry_touch()
    return version


# --- Predictions --------------------------------------------------------------------------

def model_resolve(name: str | None) -> ModelEntry:
    name = name or platform_setting("DEFAULT_MODEL")
    entry = registry.model(name)
    if entry is None:
        known = ", ".join(m.name for m in registry.models()) or "none"
        raise NotFound(f"Unknown model {name!r}; models: {known}.", code="model_not_found")
    return entry


def version_resolve(model: ModelEntry, requested: str | None) -> VersionEntry:
    """An explicit label, ``latest`` (newest active) or, when absent, the model's default."""
    if requested is None or requested == "":
        version = model.default or model.latest
    elif requested == "latest":
        version = model.latest
    else:
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
        return version
    if version is None:
        raise NotFound(f"Model {model.name!r} has no active version.", code="version_not_found")
    return version


def _infer(predictor: Predictor, rows: np.ndarray, timeout: float) -> tuple[np.ndarray, float]:
    """Run the predictor; an answer later than ``timeout`` seconds is refused (504).

    A dense network on a few rows takes microseconds and cannot hang, so it runs inline:
    handing it to another thread would cost more than the inference itself.
    """
    started = time.perf_counter()
    outputs = predictor.predict(rows)
    elapsed = time.perf_counter() - started
    if elapsed > timeout:
        raise InferenceTimeout(f"Inference did not finish within the timeout of {timeout:g} s.")
    return outputs, elapsed


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
    """Validate one row, run it on the resolved version and store the prediction."""
    model = model_resolve(model_name)
    version = version_resolve(model, version_label)
    try:
        rows = rows_from_input(
            input_data, n_features=len(model.feature_names), feature_names=model.feature_names
        )
    except InputError as exc:
        raise InvalidInput(str(exc)) from None
    if rows.shape[0] != 1:
        raise InvalidInput(
            "input_data: /predict takes one row; send several rows to /predict/batch."
        )
    predictor = registry.predictor(version)
    outputs, elapsed = _infer(
        predictor, rows, timeout if timeout is not None else platform_setting("DEFAULT_TIMEOUT")
    )
    if not np.isfinite(outputs).all():
        raise InvalidInput(
            "input_data: these values overflow the model (its outputs are not finite numbers)."
        )
    outcome = describe(outputs, task=model.task, labels=model.labels)[0]
    prediction = Prediction(
        owner=user,
        api_key=api_key,
        model_version_id=version.id,
        input=input_data,
        output=outcome.prediction,
        label=outcome.label,
        confidence=outcome.confidence,
        processing_time=elapsed,
        created_at=timezone.now(),
        request_id=request_id,
    )
    prediction.save(force_insert=True)
    prediction.model_name = model.name
    prediction.version_label = version.label
    return prediction


@transaction.atomic
def model_version_save(*, version: ModelVersion) -> ModelVersion:
    """Save edits to a version's routing fields (status, weight, shadow, description)."""
    version.save()
    registry_touch()
    return version


@transaction.atomic
def model_save(*, model: MLModel) -> MLModel:
    """Save edits to a model (default version, cache TTL, description)."""
    if model.default_version_id is not None and model.default_version.model_id != model.id:
        raise InvalidInput("The default version must be one of the model's own versions.")
    model.save()
    registry_touch()
    return model
