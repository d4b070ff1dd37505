"""Seeding the demo: models trained from the shipped data sets, users and a key."""

import functools
import secrets
from dataclasses import dataclass, field

from django.contrib.auth.models import Group, Permission
from django.db import transaction

from accounts.models import ApiKey, User
from accounts.scopes import CLIENT_SCOPES, permission_codename
from accounts.services import api_key_create, api_key_revoke
from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.versions import model_save, model_version_create
from predictions.demo.training import train_demo_models
from predictions.models import MLModel, ModelVersion
from predictions.runtime.artifacts import checksum, load_dense
from predictions.runtime.onnx import dense_to_onnx

API_USERS_GROUP = "API users"
DEMO_KEY_NAME = "demo"
# The iris versions share its traffic; v2 (the MLP) serves requests that name no version.
TRAFFIC = {("iris", "v1"): 50.0, ("iris", "v2"): 50.0}
DEFAULTS = {"iris": "v2"}
# Training is deterministic: one run per process is enough.
_trained = functools.cache(train_demo_models)
# The ONNX demo: digits v1's stored weights exported to an ONNX graph, served by onnxruntime.
# Active with no traffic weight: reachable by name (and as ``latest``), outside the split.
ONNX_DEMO = ("digits", "v1", "v1-onnx")


@dataclass
class SeedReport:
    models: dict[str, list[str]] = field(default_factory=dict)
    created_versions: list[str] = field(default_factory=list)
    passwords: dict[str, str] = field(default_factory=dict)
    api_key: str = ""  # a key issued by this run
    kept_key: ApiKey | None = None  # the demo key of an earlier run, still valid


def api_users_group() -> Group:
    """A group holding the clients' scope permissions: add a user to it to let them use the API.

    Not ``models``: registering models is for staff and users given that permission.
    """
    group, _ = Group.objects.get_or_create(name=API_USERS_GROUP)
    codenames = [permission_codename(s) for s in CLIENT_SCOPES]
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="accounts", codename__in=codenames)
    )
    return group


def _user(username: str, *, staff: bool, report: SeedReport) -> User:
    user = User.objects.filter(username=username).first()
    if user is None:
        password = secrets.token_urlsafe(12)
        if staff:
            user = User.objects.create_superuser(username, password=password)
        else:
            user = User.objects.create_user(username, password=password)
        report.passwords[username] = password
    return user


def _seed_onnx_demo(report: SeedReport) -> None:
    """Export the stored source version's weights to ONNX and register them, once.

    The stored artifact, not a fresh training run: both runtimes then serve the same weights,
    whatever training would give today.
    """
    name, source_label, label = ONNX_DEMO
    model = MLModel.objects.get(name=name)
    if not model.versions.filter(label=label).exists():
        source = model.versions.get(label=source_label)
        model_version_create(
            model=model,
            label=label,
            runtime=ModelVersion.Runtime.ONNX,
            artifact=dense_to_onnx(load_dense(artifact_bytes(source))),
            artifact_name=f"{name}-{label}.onnx",
            status=ModelVersion.Status.ACTIVE,
            traffic_weight=0.0,
            description=f"{source.description} Exported to ONNX from {source_label}'s weights.",
            metrics={
                **source.metrics,
                "exported_from": source_label,
                "exported_from_checksum": source.checksum,
            },
        )
        report.created_versions.append(f"{name}:{label}")
    report.models[name].append(label)


@transaction.atomic
def demo_seed(*, issue_key: bool = True, new_key: bool = False) -> SeedReport:
    """Create what is missing and leave the rest alone: with ``issue_key``, a demo key when the
    demo user has no valid one; with ``new_key``, a new one in place of the old."""
    report = SeedReport()
    for demo in _trained():
        model, _ = MLModel.objects.get_or_create(
            name=demo.name,
            defaults={
                "description": demo.description,
                "task": demo.task,
                "feature_names": list(demo.feature_names),
                "labels": list(demo.labels),
            },
        )
        for trained in demo.versions:
            version = model.versions.filter(label=trained.label).first()
            if version is None:
                version = model_version_create(
                    model=model,
                    label=trained.label,
                    artifact=trained.artifact,
                    artifact_name=f"{demo.name}-{trained.label}.npz",
                    status=ModelVersion.Status.ACTIVE,
                    traffic_weight=TRAFFIC.get((demo.name, trained.label), 100.0),
                    description=trained.description,
                    metrics=trained.metrics,
                )
                report.created_versions.append(f"{demo.name}:{trained.label}")
            elif version.checksum != checksum(trained.artifact):
                # Same label, different bytes: never overwrite what someone may be serving.
                pass
        if model.default_version_id is None:
            label = DEFAULTS.get(demo.name, demo.versions[0].label)
            model.default_version = model.versions.get(label=label)
            model_save(model=model)
        report.models[demo.name] = [v.label for v in demo.versions]
    _seed_onnx_demo(report)

    group = api_users_group()
    _user("admin", staff=True, report=report)
    demo_user = _user("demo", staff=False, report=report)
    demo_user.groups.add(group)
    if issue_key or new_key:
        demo_user = User.objects.get(pk=demo_user.pk)  # fresh permission cache
        keys = ApiKey.objects.filter(owner=demo_user, name=DEMO_KEY_NAME, revoked_at=None)
        valid = [key for key in keys.order_by("-created_at") if not key.is_expired()]
        if valid and not new_key:
            report.kept_key = valid[0]
        else:
            for old in keys:
                api_key_revoke(key=old)
            _, report.api_key = api_key_create(
                owner=demo_user, name=DEMO_KEY_NAME, scopes=list(CLIENT_SCOPES)
            )
    return report
