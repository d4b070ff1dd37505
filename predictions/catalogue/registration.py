"""Registration in one step: a model and a version from an artifact file.

REST (``POST /api/v1/models``, ``POST /api/v1/models/{name}/versions``), ``manage.py
register_model`` and the admin's "add model from file" all call these. The signature (feature
count, feature names where the file has them, output width, task guess, class labels where the
file has them) is read from the artifact; the caller adds what the file cannot say. Nothing is
stored unless everything fits.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import transaction

from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, NotFound, PlatformError
from predictions.catalogue.artifacts import Upload, artifact_staged
from predictions.catalogue.versions import (
    artifact_validate,
    model_save,
    model_version_insert,
    registry_touch,
    signature_check,
)
from predictions.models import MLModel, ModelVersion
from predictions.runtime.errors import ArtifactError
from predictions.runtime.signature import ArtifactSignature, read_signature, runtime_for
from predictions.runtime.sources import Source

_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
TASKS = tuple(MLModel.Task.values)


@dataclass(frozen=True, slots=True)
class Registration:
    model: MLModel
    version: ModelVersion
    model_created: bool
    signature: ArtifactSignature | None


def checked_name(name: str, what: str, *, max_length: int) -> str:
    if not name or not _SLUG.match(name) or len(name) > max_length:
        raise InvalidInput(
            f"{what}: {name!r} is not a valid name; use letters, digits, '-' and '_' "
            f"(at most {max_length}).",
        )
    return name


def checked_list(values: Sequence[str] | None, what: str) -> list[str] | None:
    if values is None:
        return None
    values = list(values)
    if not values or not all(isinstance(v, str) and v.strip() for v in values):
        raise InvalidInput(f"{what}: give a non-empty list of non-empty names.")
    values = [v.strip() for v in values]
    if len(set(values)) != len(values):
        duplicate = next(v for v in values if values.count(v) > 1)
        raise InvalidInput(f"{what}: {duplicate!r} appears twice.")
    if len(values) > (most := platform_setting("MAX_FEATURES")):
        raise InvalidInput(f"{what}: {len(values)} names; at most {most} are allowed.")
    return values


def checked_task(task: str | None) -> str | None:
    if task is not None and task not in TASKS:
        raise InvalidInput(f"task: {task!r} is not one of {', '.join(TASKS)}.")
    return task


@transaction.atomic
def model_create(
    *,
    name: str,
    task: str,
    description: str = "",
    feature_names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> MLModel:
    """Create a model with no versions; its first version's file fills in what is not given."""
    name = checked_name(name, "name", max_length=100)
    task = checked_task(task) or MLModel.Task.CLASSIFICATION
    feature_names = checked_list(feature_names, "feature_names")
    labels = checked_list(labels, "labels")
    if labels and task == MLModel.Task.REGRESSION:
        raise InvalidInput("labels: a regression model has no class labels.")
    existing = MLModel.objects.filter(name=name).first()
    if existing is not None:
        raise PlatformError(
            f"Model {name!r} exists (a {existing.task} model); add versions to it with "
            f"POST /api/v1/models/{name}/versions.",
            code="model_exists",
            status_code=409,
        )
    model = MLModel.objects.create(
        name=name,
        task=task,
        description=description,
        feature_names=feature_names or [],
        labels=labels or [],
    )
    registry_touch()
    return model


def next_label(model: MLModel) -> str:
    taken = set(model.versions.values_list("label", flat=True)) if model.pk else set()
    n = 1
    while f"v{n}" in taken:
        n += 1
    return f"v{n}"


def _signature(runtime: str, source: Source) -> ArtifactSignature:
    try:
        return read_signature(runtime, source)[1]
    except ArtifactError as exc:
        raise InvalidInput(f"artifact: the file is not a valid {runtime} model: {exc}") from None


def fill_in(
    model: MLModel,
    signature: ArtifactSignature,
    *,
    task: str | None,
    feature_names: list[str] | None,
    labels: list[str] | None,
) -> None:
    """Give a model without versions (new, or created without a file) the file's signature."""
    n_features, n_outputs = signature.n_features, signature.n_outputs
    if feature_names is None and model.feature_names:
        if len(model.feature_names) != n_features:
            raise InvalidInput(
                f"The file takes {n_features} features; model {model.name!r} takes "
                f"{len(model.feature_names)}.",
                code="signature_mismatch",
            )
        feature_names = model.feature_names
    if feature_names is not None and len(feature_names) != n_features:
        raise InvalidInput(
            f"feature_names: {len(feature_names)} names given; the file takes {n_features} "
            "features.",
            code="signature_mismatch",
        )
    if n_features > (most := platform_setting("MAX_FEATURES")):
        raise InvalidInput(f"artifact: the file takes {n_features} features; at most {most}.")
    model.feature_names = (
        feature_names or list(signature.feature_names or ()) or [f"x{i}" for i in range(n_features)]
    )
    if not model.pk:
        model.task = task or (MLModel.Task.CLASSIFICATION if labels else signature.task_guess)
    if model.task == MLModel.Task.REGRESSION:
        if labels:
            raise InvalidInput(
                f"labels: model {model.name!r} is a regression model; it has no class labels."
            )
        return
    if labels is None and model.labels:
        if len(model.labels) != n_outputs:
            raise InvalidInput(
                f"The file gives {n_outputs} outputs; model {model.name!r} has "
                f"{len(model.labels)} class labels.",
                code="signature_mismatch",
            )
        return
    labels = labels or list(signature.class_labels or ())
    if not labels:
        raise InvalidInput(
            f"labels: the file gives {n_outputs} class probabilities and names no classes; "
            f"give {n_outputs} class labels.",
            code="labels_required",
        )
    if len(labels) != n_outputs:
        raise InvalidInput(
            f"labels: {len(labels)} labels given; the file gives {n_outputs} outputs.",
            code="signature_mismatch",
        )
    model.labels = labels


@transaction.atomic
def model_register(
    *,
    name: str,
    artifact: Upload,
    artifact_name: str = "",
    label: str | None = None,
    runtime: str | None = None,
    task: str | None = None,
    description: str = "",
    feature_names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    status: str = ModelVersion.Status.STAGED,
    traffic_weight: float = 0.0,
    make_default: bool = False,
    create_model: bool = True,
) -> Registration:
    """Register ``artifact`` (bytes, a path or an uploaded file) as a new version of model
    ``name``, creating the model if needed.

    ``task``, ``feature_names`` and ``labels`` describe a new model (or one created without
    them); for an existing model they must agree with it. Everything is checked before anything
    is stored; a refusal (4xx ``PlatformError``) names the problem.
    """
    name = checked_name(name, "name", max_length=100)
    task = checked_task(task)
    feature_names = checked_list(feature_names, "feature_names")
    labels = checked_list(labels, "labels")
    if status not in ModelVersion.Status.values:
        raise InvalidInput(
            f"status: {status!r} is not one of {', '.join(ModelVersion.Status.values)}."
        )
    if not 0 <= traffic_weight <= 1_000_000:
        raise InvalidInput("traffic_weight: must be between 0 and 1000000.")
    if make_default and status != ModelVersion.Status.ACTIVE:
        raise InvalidInput("Only an active version can be the default (status active).")
    with artifact_staged(artifact) as staged:
        try:
            runtime = runtime or runtime_for(staged.source, artifact_name)
        except ArtifactError as exc:
            raise InvalidInput(f"artifact: {exc}") from None
        if runtime not in ModelVersion.Runtime.values:
            raise InvalidInput(
                f"runtime: {runtime!r} is not one of {', '.join(ModelVersion.Runtime.values)}."
            )

        model = MLModel.objects.select_for_update().filter(name=name).first()
        created = model is None
        if created and not create_model:
            raise NotFound(f"Unknown model {name!r}.", code="model_not_found")
        if created:
            model = MLModel(name=name, description=description)
        if label is not None:
            label = checked_name(label, "label", max_length=50)
        else:
            label = next_label(model)

        signature = None
        if runtime == ModelVersion.Runtime.ENSEMBLE:
            if created or not model.versions.exists():
                raise InvalidInput(
                    "artifact: an ensemble combines versions of an existing model; register its "
                    "members first."
                )
            artifact_validate(model=model, runtime=runtime, data=staged.source)
        else:
            signature = _signature(runtime, staged.source)
            if not created and task is not None and task != model.task:
                raise PlatformError(
                    f"Model {model.name!r} is a {model.task} model; this registration says {task}.",
                    code="task_mismatch",
                    status_code=409,
                )
            if created or not model.versions.exists():
                fill_in(model, signature, task=task, feature_names=feature_names, labels=labels)
                model.save()
            else:
                names_agree(model, feature_names=feature_names, labels=labels)
                signature_check(
                    model=model, n_features=signature.n_features, n_outputs=signature.n_outputs
                )

        version = model_version_insert(
            model=model,
            label=label,
            artifact=staged,
            runtime=runtime,
            artifact_name=artifact_name,
            status=status,
            traffic_weight=traffic_weight,
            description=description,
        )
        if make_default:
            model.default_version = version
            model_save(model=model)
        return Registration(
            model=model, version=version, model_created=created, signature=signature
        )


def names_agree(
    model: MLModel, *, feature_names: list[str] | None, labels: list[str] | None
) -> None:
    """What the caller says about a model with versions must be what it is."""
    if feature_names is not None and feature_names != model.feature_names:
        raise InvalidInput(
            f"feature_names: model {model.name!r} takes {model.feature_names}; "
            f"these are {feature_names}.",
            code="signature_mismatch",
        )
    if labels is not None and labels != model.labels:
        raise InvalidInput(
            f"labels: model {model.name!r} has labels {model.labels}; these are {labels}.",
            code="signature_mismatch",
        )
