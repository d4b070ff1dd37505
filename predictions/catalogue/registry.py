"""The process-local view of the model registry and its loaded predictors.

Each process keeps an immutable snapshot of models and versions plus the predictors it has
loaded. At most once per ``REGISTRY_REFRESH_SECONDS`` (the interval) it reads one counter row
(``RegistryRevision``); when another process changed the registry the counter moved and the
snapshot is rebuilt, so admin changes reach every process within about a second without a query
per request.

Threads that find the snapshot due read it themselves (two that meet read twice, harmlessly).
The event loop of a web process never reads the database: ``aready()`` has the read made on a
thread while requests go on with a snapshot younger than ``STALE_LIMIT`` (1.5) intervals, and
waits for it only when the snapshot is older (the first request, an idle process).
"""

import asyncio
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property

from asgiref.sync import sync_to_async
from django.db import close_old_connections

from mlplatform import metrics
from mlplatform.conf import platform_setting
from predictions.catalogue.artifacts import artifact_local
from predictions.models import MLModel, ModelVersion, RegistryRevision
from predictions.runtime.ensemble import Ensemble, parse_spec
from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import Predictor, load_predictor
from predictions.runtime.remote import RemotePredictor, RemoteSignature, RemoteTarget
from predictions.runtime.sources import Source

REMOTE_FIELDS = (
    "remote_url",
    "remote_model",
    "remote_model_version",
    "remote_timeout",
    "remote_credential",
    "remote_credential_header",
    "remote_signature",
)


def remote_target(row: dict) -> RemoteTarget:
    """A remote version's upstream, from the values of its ``REMOTE_FIELDS``."""
    return RemoteTarget(
        url=row["remote_url"],
        model=row["remote_model"],
        version=row["remote_model_version"],
        timeout=row["remote_timeout"],
        credential=row["remote_credential"],
        credential_header=row["remote_credential_header"] or "Authorization",
    )


def remote_predictor(row: dict, *, n_inputs: int) -> RemotePredictor:
    signature = RemoteSignature.from_dict(row["remote_signature"])
    return RemotePredictor(remote_target(row), signature, n_inputs=n_inputs)


@dataclass(frozen=True, slots=True)
class VersionEntry:
    id: int
    model_name: str
    label: str
    runtime: str
    checksum: str
    status: str
    traffic_weight: float
    is_shadow: bool
    shadow_share: float
    max_batch_size: int
    batch_wait_ms: float
    created_at: datetime


@dataclass(frozen=True)
class ModelEntry:
    """A model as this process read it; the views of its versions are worked out once."""

    id: int
    name: str
    task: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]
    default_version_id: int | None
    cache_ttl: int
    versions: dict[str, VersionEntry] = field(default_factory=dict)

    @cached_property
    def active_versions(self) -> list[VersionEntry]:
        return [v for v in self.versions.values() if v.status == ModelVersion.Status.ACTIVE]

    @cached_property
    def serving_versions(self) -> list[VersionEntry]:
        """Active versions that answer callers (shadow versions only listen)."""
        return [v for v in self.active_versions if not v.is_shadow]

    @cached_property
    def shadow_versions(self) -> list[VersionEntry]:
        return [v for v in self.active_versions if v.is_shadow and v.shadow_share > 0]

    @cached_property
    def latest(self) -> VersionEntry | None:
        """The newest serving version."""
        return max(self.serving_versions, key=lambda v: (v.created_at, v.id), default=None)

    @cached_property
    def default(self) -> VersionEntry | None:
        for version in self.serving_versions:
            if version.id == self.default_version_id:
                return version
        return None

    @cached_property
    def split(self) -> list[tuple[VersionEntry, float]]:
        """Serving versions with a positive traffic weight, in a fixed order."""
        return [
            (v, v.traffic_weight)
            for v in sorted(self.serving_versions, key=lambda v: v.label)
            if v.traffic_weight > 0
        ]


# A version's loaded form: a predictor, or an ensemble of member versions' entries.
Loaded = Predictor | Ensemble[VersionEntry]

# How many refresh intervals old a snapshot may be for the event loop to use it while it is read.
STALE_LIMIT = 1.5


def current_revision() -> int:
    row = RegistryRevision.objects.filter(pk=1).values_list("revision", flat=True).first()
    return row or 0


class Registry:
    """Snapshot of the registry plus a cache of loaded versions keyed by artifact checksum."""

    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._loaded: dict[tuple[int, str], Loaded | ArtifactError] = {}
        self._loading = threading.Lock()  # one artifact load at a time
        self._revision: int | None = None
        self._checked_at = float("-inf")  # when the read of the snapshot began
        self._reading: asyncio.Future | None = None  # the event loop's read under way

    def clear(self) -> None:
        """Forget everything; the next read reloads from the database."""
        with self._lock:
            self._models = {}
            self._loaded = {}
            self._revision = None
            self._checked_at = float("-inf")

    def mark_stale(self) -> None:
        """Check the revision on the next read (this process changed the registry)."""
        self._checked_at = float("-inf")

    def model(self, name: str, *, refresh: bool = True) -> ModelEntry | None:
        """The model named ``name``; ``refresh=False`` on the event loop, after ``aready()``."""
        if refresh:
            self._refresh_if_due()
        return self._models.get(name)

    def models(self, *, refresh: bool = True) -> list[ModelEntry]:
        if refresh:
            self._refresh_if_due()
        return sorted(self._models.values(), key=lambda m: m.name)

    def is_loaded(self, version: VersionEntry) -> bool:
        """Whether this process has loaded the version (or found that its artifact fails)."""
        return (version.id, version.checksum) in self._loaded

    def predictor(self, version: VersionEntry) -> Loaded:
        """The loaded predictor (or ensemble) of a version, loading its artifact on first use.

        One load at a time: the first requests after a start or a new artifact come together,
        and each reading a large artifact would hold its memory as long. An artifact that fails
        to load raises its ArtifactError, then again for every caller without a new read (an
        artifact never changes under its checksum).
        """
        key = (version.id, version.checksum)
        found = self._loaded.get(key)
        if found is None:
            with self._loading:
                found = self._loaded.get(key)
                if found is None:
                    try:
                        found = self._load(version)
                    except ArtifactError as exc:
                        found = exc
                    self._loaded[key] = found
        if isinstance(found, ArtifactError):
            raise found
        return found

    async def aready(self, *versions: VersionEntry) -> None:
        """Make the snapshot fresh enough, and ``versions`` loaded, without blocking the loop.

        A due read is made on a thread; requests go on with the snapshot they have while it is
        younger than ``STALE_LIMIT`` intervals, else wait for the read. A version whose
        artifact fails to load raises its ArtifactError.
        """
        interval = platform_setting("REGISTRY_REFRESH_SECONDS")
        age = self.timer() - self._checked_at
        if age >= interval:
            if self._reading is None or self._reading.done():
                self._reading = asyncio.ensure_future(_on_a_thread(self._refresh_if_due))
            if age >= interval * STALE_LIMIT:
                await asyncio.shield(self._reading)
        for version in versions:
            if not self.is_loaded(version):
                await _on_a_thread(self.predictor, version)

    def _load(self, version: VersionEntry) -> Loaded:
        if version.runtime == ModelVersion.Runtime.REMOTE:
            return self._remote(version)
        started = time.perf_counter()
        name = (
            ModelVersion.objects.filter(pk=version.id, checksum=version.checksum)
            .values_list("artifact", flat=True)
            .get()
        )
        with artifact_local(name, version.checksum) as source:
            if version.runtime == ModelVersion.Runtime.ENSEMBLE:
                loaded: Loaded = self._ensemble(version, source)
            else:
                loaded = load_predictor(version.runtime, source)
        seconds = time.perf_counter() - started
        metrics.model_loaded(model=version.model_name, version=version.label, seconds=seconds)
        return loaded

    def _remote(self, version: VersionEntry) -> Predictor:
        """A remote version's predictor, from its upstream settings: nothing is asked of the
        upstream here, so a version whose server is down loads, and answers 502 until it is up."""
        row = (
            ModelVersion.objects.filter(pk=version.id, checksum=version.checksum)
            .values(*REMOTE_FIELDS)
            .get()
        )
        model = self._models[version.model_name]
        try:
            return remote_predictor(row, n_inputs=len(model.feature_names))
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"its upstream settings are incomplete: {exc}") from None

    def _ensemble(self, version: VersionEntry, source: Source) -> Ensemble[VersionEntry]:
        model = self._models[version.model_name]
        members = []
        for label, weight in parse_spec(source).members:
            member = model.versions.get(label)
            if member is None or member.runtime == ModelVersion.Runtime.ENSEMBLE:
                raise ArtifactError(f"ensemble member {label!r} is not a plain version")
            key = (member.id, member.checksum)
            predictor = self._loaded.get(key)
            if predictor is None or isinstance(predictor, ArtifactError):
                predictor = self._loaded[key] = self._load(member)
            members.append((member, weight, predictor.n_inputs, predictor.n_outputs))
        return Ensemble(members)

    def _refresh_if_due(self) -> None:
        """Re-read the registry if its revision changed, at most once per refresh interval."""
        if self.timer() - self._checked_at < platform_setting("REGISTRY_REFRESH_SECONDS"):
            return
        started = self.timer()
        revision = current_revision()
        if revision != self._revision or not self._models:
            models = self._read_rows()
            with self._lock:
                self._models = models
                live = {(v.id, v.checksum) for m in models.values() for v in m.versions.values()}
                self._loaded = {k: p for k, p in self._loaded.items() if k in live}
                self._revision = revision
        self._checked_at = started

    @staticmethod
    def _read_rows() -> dict[str, ModelEntry]:
        versions: dict[int, dict[str, VersionEntry]] = {}
        queryset = ModelVersion.objects.select_related("model")
        for v in queryset.order_by("created_at", "id"):
            versions.setdefault(v.model_id, {})[v.label] = VersionEntry(
                id=v.id,
                model_name=v.model.name,
                label=v.label,
                runtime=v.runtime,
                checksum=v.checksum,
                status=v.status,
                traffic_weight=v.traffic_weight,
                is_shadow=v.is_shadow,
                shadow_share=v.shadow_share,
                max_batch_size=v.max_batch_size,
                batch_wait_ms=v.batch_wait_ms,
                created_at=v.created_at,
            )
        return {
            m.name: ModelEntry(
                id=m.id,
                name=m.name,
                task=m.task,
                feature_names=tuple(m.feature_names),
                labels=tuple(m.labels),
                default_version_id=m.default_version_id,
                cache_ttl=m.cache_ttl,
                versions=versions.get(m.id, {}),
            )
            for m in MLModel.objects.all()
        }


async def _on_a_thread(function, *args):
    """Run a function that reads the database on asgiref's thread for such work."""

    def run():
        close_old_connections()  # a connection broken since the last read is replaced
        try:
            return function(*args)
        finally:
            close_old_connections()  # a pooled connection goes back to its pool

    return await sync_to_async(run)()


registry = Registry()


def check_models_ready() -> None:
    """``/ready``'s check: some model has an active version, and every active version loads."""
    entries = registry.models()
    if not any(m.active_versions for m in entries):
        raise RuntimeError("no model has an active version")
    for model in entries:
        for version in model.active_versions:
            registry.predictor(version)
