"""Writes to the model registry: versions, their artifacts, status, weights and defaults."""

from django.db import transaction
from django.db.models import F

from mlplatform.errors import InvalidInput, PlatformError
from predictions.catalogue.artifacts import (
    StagedArtifact,
    Upload,
    artifact_local,
    artifact_release,
    artifact_staged,
    artifact_store,
    release_on_commit,
)
from predictions.catalogue.registry import registry
from predictions.models import MLModel, ModelVersion, RegistryRevision
from predictions.runtime.ensemble import Ensemble, parse_spec
from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import Predictor, load_predictor
from predictions.runtime.sources import Source


def registry_touch() -> None:
    """Tell every process that the registry changed (they reload within about a second)."""
    updated = RegistryRevision.objects.filter(pk=1).update(revision=F("revision") + 1)
    if not updated:
        RegistryRevision.objects.get_or_create(pk=1, defaults={"revision": 1})
    # Now, so this process looks again on its next read; and after commit, so that a read
    # made before the commit cannot leave it on the old rows until the next refresh.
    registry.mark_stale()
    transaction.on_commit(registry.mark_stale)


def _load(*, model: MLModel, runtime: str, source: Source) -> Predictor | Ensemble:
    if runtime != ModelVersion.Runtime.ENSEMBLE:
        return load_predictor(runtime, source)
    spec = parse_spec(source)
    labels = [label for label, _ in spec.members]
    members = {
        v.label: v
        for v in ModelVersion.objects.filter(model=model, label__in=labels).only(
            "label", "runtime", "artifact", "checksum"
        )
    }
    predictors = []
    for label, weight in spec.members:
        member = members.get(label)
        if member is None:
            raise ArtifactError(f"model {model.name!r} has no version {label!r}")
        if member.runtime == ModelVersion.Runtime.ENSEMBLE:
            raise ArtifactError(f"member {label!r} is itself an ensemble")
        with artifact_local(member.artifact.name, member.checksum) as member_source:
            predictor = load_predictor(member.runtime, member_source)
        predictors.append((predictor, weight, predictor.n_inputs, predictor.n_outputs))
    return Ensemble(predictors)


def artifact_validate(*, model: MLModel, runtime: str, data: Source) -> Predictor | Ensemble:
    """Load an artifact (bytes or a local file) and check it fits the model's inputs and
    outputs; InvalidInput if not."""
    try:
        predictor = _load(model=model, runtime=runtime, source=data)
    except ArtifactError as exc:
        raise InvalidInput(f"The artifact is not a valid {runtime} model: {exc}") from None
    signature_check(model=model, n_features=predictor.n_inputs, n_outputs=predictor.n_outputs)
    return predictor


def signature_check(*, model: MLModel, n_features: int, n_outputs: int) -> None:
    """Refuse a file whose inputs or outputs differ from the model's, naming both."""
    if n_features != model.n_features:
        raise InvalidInput(
            f"The file takes {n_features} features; model {model.name!r} takes {model.n_features}.",
            code="signature_mismatch",
        )
    if model.task == MLModel.Task.CLASSIFICATION and n_outputs != len(model.labels):
        raise InvalidInput(
            f"The file gives {n_outputs} outputs; model {model.name!r} has "
            f"{len(model.labels)} class labels.",
            code="signature_mismatch",
        )


@transaction.atomic
def model_version_create(
    *,
    model: MLModel,
    artifact: Upload,
    runtime: str = ModelVersion.Runtime.NUMPY,
    **fields,
) -> ModelVersion:
    """Register a validated artifact (bytes, a path or an uploaded file) as a new version of
    ``model``; ``fields`` are those of ``model_version_insert`` (``label``, ``status``,
    ``traffic_weight``, ``max_batch_size``, ``batch_wait_ms``, ...)."""
    with artifact_staged(artifact) as staged:
        artifact_validate(model=model, runtime=runtime, data=staged.source)
        return model_version_insert(model=model, artifact=staged, runtime=runtime, **fields)


@transaction.atomic
def model_version_insert(
    *,
    model: MLModel,
    label: str,
    artifact: StagedArtifact,
    runtime: str,
    artifact_name: str = "",
    status: str = ModelVersion.Status.STAGED,
    traffic_weight: float = 0.0,
    description: str = "",
    metrics: dict | None = None,
    max_batch_size: int | None = None,
    batch_wait_ms: float | None = None,
) -> ModelVersion:
    """Store a version whose artifact the caller has staged and validated against ``model``.

    The file is in the storage before the row commits, so no process looks for it in vain; if
    the row is not written, a file no other version names is deleted again.
    """
    if ModelVersion.objects.filter(model=model, label=label).exists():
        raise PlatformError(
            f"Model {model.name!r} already has a version {label!r}.",
            code="version_exists",
            status_code=409,
        )
    stored = artifact_store(artifact)
    try:
        with transaction.atomic():
            version = ModelVersion.objects.create(
                model=model,
                label=label,
                runtime=runtime,
                artifact=stored,
                artifact_name=artifact_name,
                checksum=artifact.sha256,
                status=status,
                traffic_weight=traffic_weight,
                description=description,
                metrics=metrics or {},
                **{
                    name: value
                    for name, value in (
                        ("max_batch_size", max_batch_size),
                        ("batch_wait_ms", batch_wait_ms),
                    )
                    if value is not None
                },
            )
    except Exception:
        artifact_release(stored)
        raise
    registry_touch()
    return version


@transaction.atomic
def model_version_replace_artifact(
    *, version: ModelVersion, artifact: Upload, artifact_name: str = ""
) -> ModelVersion:
    """Swap a version's artifact after validating it (the checksum changes with it); the old
    file goes after the commit unless another version names it."""
    with artifact_staged(artifact) as staged:
        artifact_validate(model=version.model, runtime=version.runtime, data=staged.source)
        old = version.artifact.name
        version.artifact = artifact_store(staged)
        version.checksum = staged.sha256
    version.artifact_name = artifact_name
    version.save()
    if old != version.artifact.name:
        release_on_commit(old)
    registry_touch()
    return version


@transaction.atomic
def model_version_set_status(*, version: ModelVersion, status: str) -> ModelVersion:
    version.status = status
    version.save(update_fields=["status", "updated_at"])
    registry_touch()
    return version


@transaction.atomic
def model_version_save(*, version: ModelVersion) -> ModelVersion:
    """Save edits to a version's serving fields (status, weight, shadow, batching, ...)."""
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
