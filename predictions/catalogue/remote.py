"""Remote versions: models served by an Open Inference Protocol (V2) server, registered and
checked here.

Registration reads the upstream model's metadata (input name and datatype, outputs, width), the
server's extensions (binary tensors), and infers two rows of zeros, so that a version is stored
only when the server answers it with as many outputs as the model has labels. Nothing is asked
of the upstream inside a transaction. The credential is stored for the requests and never
shown: not in the API, the admin, the logs, nor in any error.
"""

import hashlib
import re
import secrets
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import orjson
from django.db import transaction

from mlplatform.errors import InvalidInput, NotFound, PlatformError, UpstreamFailed
from predictions.catalogue.registration import (
    Registration,
    checked_list,
    checked_name,
    checked_task,
    fill_in,
    names_agree,
    next_label,
)
from predictions.catalogue.registry import REMOTE_FIELDS, registry, remote_target
from predictions.catalogue.versions import model_save, registry_touch, signature_check
from predictions.models import MLModel, ModelVersion
from predictions.runtime.errors import ArtifactError, UpstreamError
from predictions.runtime.remote import (
    PROBABILITY_NAMES,
    Discovery,
    RemoteSignature,
    RemoteTarget,
    V2Client,
    discover,
    model_ready,
    probe,
    url_problem,
)
from predictions.runtime.signature import ArtifactSignature

_HEADER_NAME = re.compile(r"^[A-Za-z0-9-]{1,100}$")
READY_TIMEOUT = 1.0


@dataclass(frozen=True, slots=True)
class Upstream:
    """A remote version's settings as a caller gives them."""

    url: str
    model: str
    version: str = ""
    timeout: float = 10.0
    credential: str = ""
    credential_header: str = "Authorization"
    output: str = ""

    def target(self) -> RemoteTarget:
        try:
            return RemoteTarget(
                url=self.url.strip(),
                model=self.model.strip(),
                version=self.version.strip(),
                timeout=self.timeout,
                credential=self.credential,
                credential_header=self.credential_header or "Authorization",
            )
        except ValueError as exc:
            raise InvalidInput(f"remote: {exc}.") from None


def upstream_checked(upstream: Upstream) -> RemoteTarget:
    """The target of ``upstream``, or InvalidInput naming the field that is wrong."""
    if problem := url_problem(upstream.url.strip()):
        raise InvalidInput(f"remote_url: {problem}.")
    if not upstream.model.strip() or len(upstream.model) > 200:
        raise InvalidInput("remote_model: give the model's name on the server (at most 200).")
    if len(upstream.version) > 100:
        raise InvalidInput("remote_model_version: at most 100 characters.")
    if not 0.01 <= upstream.timeout <= 300:
        raise InvalidInput("remote_timeout: between 0.01 and 300 seconds.")
    if upstream.credential_header and not _HEADER_NAME.match(upstream.credential_header):
        raise InvalidInput("remote_credential_header: a header name (letters, digits and '-').")
    if len(upstream.credential) > 4000 or any(c in upstream.credential for c in "\r\n"):
        raise InvalidInput("remote_credential: at most 4000 characters on one line.")
    return upstream.target()


def _asked(target: RemoteTarget, *, n_features: int | None, output: str, classifier: bool):
    """The upstream's description and, when the width is known, its probed signature."""
    client = V2Client(target, pool_size=1)
    try:
        found = discover(client, output_name=output, prefer_probabilities=classifier)
        width = n_features or found.n_features
        if width is None:
            raise InvalidInput(
                f"feature_names: {target.upstream} does not say how many features it takes; "
                "give the feature names.",
            )
        if found.n_features is not None and found.n_features != width:
            raise InvalidInput(
                f"{target.upstream} takes {found.n_features} features; the model takes {width}.",
                code="signature_mismatch",
            )
        return found, probe(client, found, n_features=width)
    except UpstreamError as exc:
        raise UpstreamFailed(f"Registration: {exc}.") from None
    finally:
        client.close()


def remote_checksum(target: RemoteTarget, signature: RemoteSignature) -> str:
    """A new identity for the version's settings on every save: the registry reloads it and
    the response cache starts afresh (a changed credential too, which is never hashed)."""
    settings = {
        "url": target.url,
        "model": target.model,
        "version": target.version,
        "timeout": target.timeout,
        "signature": signature.as_dict(),
        "salt": secrets.token_hex(16),
    }
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _fields(target: RemoteTarget, signature: RemoteSignature) -> dict:
    return {
        "remote_url": target.url,
        "remote_model": target.model,
        "remote_model_version": target.version,
        "remote_timeout": target.timeout,
        "remote_credential": target.credential,
        "remote_credential_header": target.credential_header,
        "remote_signature": signature.as_dict(),
        "checksum": remote_checksum(target, signature),
    }


def remote_version_register(
    *,
    name: str,
    upstream: Upstream,
    label: str | None = None,
    task: str | None = None,
    description: str = "",
    feature_names: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
    status: str = ModelVersion.Status.STAGED,
    traffic_weight: float = 0.0,
    make_default: bool = False,
    create_model: bool = False,
    max_batch_size: int | None = None,
    batch_wait_ms: float | None = None,
) -> Registration:
    """Register the model an upstream V2 server serves as a new version of model ``name``.

    The upstream is asked first (its metadata, then two rows of zeros); the version is stored
    only if its inputs and outputs fit the model. An unreachable or failing upstream is a 502
    that names it; a mismatch a 400 that names both sides.
    """
    name = checked_name(name, "name", max_length=100)
    task = checked_task(task)
    feature_names = checked_list(feature_names, "feature_names")
    labels = checked_list(labels, "labels")
    if label is not None:
        label = checked_name(label, "label", max_length=50)
    if status not in ModelVersion.Status.values:
        raise InvalidInput(
            f"status: {status!r} is not one of {', '.join(ModelVersion.Status.values)}."
        )
    if not 0 <= traffic_weight <= 1_000_000:
        raise InvalidInput("traffic_weight: must be between 0 and 1000000.")
    if make_default and status != ModelVersion.Status.ACTIVE:
        raise InvalidInput("Only an active version can be the default (status active).")
    target = upstream_checked(upstream)

    existing = MLModel.objects.filter(name=name).first()
    if existing is None and not create_model:
        raise NotFound(f"Unknown model {name!r}.", code="model_not_found")
    has_versions = existing is not None and existing.versions.exists()
    if has_versions or (existing is not None and existing.feature_names and not feature_names):
        n_features: int | None = existing.n_features
    else:
        n_features = len(feature_names) if feature_names else None
    model_task = existing.task if existing is not None else task
    classifier = (model_task or ("classification" if labels else "")) != "regression"
    found, signature = _asked(
        target, n_features=n_features, output=upstream.output, classifier=classifier
    )

    with transaction.atomic():
        model = MLModel.objects.select_for_update().filter(name=name).first()
        created = model is None
        if created:
            model = MLModel(name=name, description=description)
        if not created and task is not None and task != model.task:
            raise PlatformError(
                f"Model {model.name!r} is a {model.task} model; this registration says {task}.",
                code="task_mismatch",
                status_code=409,
            )
        label = label or next_label(model)
        described = _described(found, signature, n_features or found.n_features)
        if created or not model.versions.exists():
            fill_in(model, described, task=task, feature_names=feature_names, labels=labels)
            model.save()
        else:
            names_agree(model, feature_names=feature_names, labels=labels)
            signature_check(
                model=model, n_features=described.n_features, n_outputs=described.n_outputs
            )
        if ModelVersion.objects.filter(model=model, label=label).exists():
            raise PlatformError(
                f"Model {model.name!r} already has a version {label!r}.",
                code="version_exists",
                status_code=409,
            )
        version = ModelVersion.objects.create(
            model=model,
            label=label,
            runtime=ModelVersion.Runtime.REMOTE,
            description=description,
            status=status,
            traffic_weight=traffic_weight,
            **{
                key: value
                for key, value in (
                    ("max_batch_size", max_batch_size),
                    ("batch_wait_ms", batch_wait_ms),
                )
                if value is not None
            },
            **_fields(target, signature),
        )
        registry_touch()
        if make_default:
            model.default_version = version
            model_save(model=model)
    return Registration(model=model, version=version, model_created=created, signature=None)


def _described(found: Discovery, signature: RemoteSignature, n_features: int) -> ArtifactSignature:
    """The upstream's signature in the terms registration checks files by."""
    return ArtifactSignature(
        runtime=ModelVersion.Runtime.REMOTE,
        n_features=n_features,
        n_outputs=signature.n_outputs,
        probabilities=signature.output_name.lower() in PROBABILITY_NAMES,
    )


def remote_version_configure(
    *, version: ModelVersion, upstream: Upstream, keep_credential: bool = True
) -> ModelVersion:
    """Point a remote version at another upstream (or change its timeout, credential, output),
    checked as at registration; ``keep_credential`` keeps the stored one when none is given."""
    if version.runtime != ModelVersion.Runtime.REMOTE:
        raise InvalidInput(f"Version {version.label!r} is not a remote version.")
    if keep_credential and not upstream.credential:
        upstream = replace(upstream, credential=version.remote_credential)
    target = upstream_checked(upstream)
    model = version.model
    found, signature = _asked(
        target,
        n_features=model.n_features,
        output=upstream.output,
        classifier=model.task != MLModel.Task.REGRESSION,
    )
    signature_check(model=model, n_features=model.n_features, n_outputs=signature.n_outputs)
    with transaction.atomic():
        for key, value in _fields(target, signature).items():
            setattr(version, key, value)
        version.save()
        registry_touch()
    return version


def remote_health(version: ModelVersion, *, timeout: float = READY_TIMEOUT) -> dict:
    """Whether a remote version's upstream says its model is ready: ``{"status", "upstream"}``
    plus ``"error"`` when it is not (the credential never appears)."""
    row = {key: getattr(version, key) for key in REMOTE_FIELDS}
    try:
        target = remote_target(row)
    except ValueError as exc:
        return {"status": "error", "upstream": "", "error": str(exc)}
    client = V2Client(target, pool_size=1)
    try:
        problem = model_ready(client, timeout=min(timeout, target.timeout))
    finally:
        client.close()
    body = {"status": "ok" if problem is None else "error", "upstream": target.upstream}
    if problem is not None:
        body["error"] = problem
    return body


def remote_versions_health(*, timeout: float = READY_TIMEOUT) -> dict[str, dict]:
    """The readiness of every active remote version's upstream, asked at once through the
    versions' own connections: ``{"model:label": {"status", "upstream"[, "error"]}}``."""
    versions = [
        version
        for model in registry.models()
        for version in model.active_versions
        if version.runtime == ModelVersion.Runtime.REMOTE
    ]
    if not versions:
        return {}

    def health(version) -> dict:
        try:
            predictor = registry.predictor(version)
        except ArtifactError as exc:
            return {"status": "error", "upstream": "", "error": str(exc)}
        problem = predictor.ready(timeout=min(timeout, predictor.target.timeout))
        body = {"status": "ok" if problem is None else "error"}
        body["upstream"] = predictor.target.upstream
        if problem is not None:
            body["error"] = problem
        return body

    with ThreadPoolExecutor(max_workers=min(8, len(versions))) as pool:
        results = list(pool.map(health, versions))
    return {f"{v.model_name}:{v.label}": r for v, r in zip(versions, results, strict=True)}


def remote_upstream_check(*, model: MLModel, upstream: Upstream) -> RemoteSignature:
    """Ask an upstream as registration does and check it fits ``model``, storing nothing (the
    admin's form shows the refusal beside the fields)."""
    target = upstream_checked(upstream)
    _, signature = _asked(
        target,
        n_features=model.n_features,
        output=upstream.output,
        classifier=model.task != MLModel.Task.REGRESSION,
    )
    signature_check(model=model, n_features=model.n_features, n_outputs=signature.n_outputs)
    return signature
