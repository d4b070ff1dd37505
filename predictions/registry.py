"""The process-local view of the model registry and its loaded predictors.

Each process keeps an immutable snapshot of models and versions plus the predictors it has
loaded. At most once per ``REGISTRY_REFRESH_SECONDS`` it reads one counter row
(``RegistryRevision``); when another process changed the registry the counter moved and the
snapshot is rebuilt, so admin changes reach every process within about a second without a
query per request.
"""

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from mlplatform import metrics
from mlplatform.conf import platform_setting
from predictions.models import MLModel, ModelVersion, RegistryRevision
from predictions.runtime.ensemble import WeightedEnsemble, member_pool, parse_spec
from predictions.runtime.errors import ArtifactError
from predictions.runtime.predictors import Predictor, load_predictor


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
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ModelEntry:
    id: int
    name: str
    task: str
    feature_names: tuple[str, ...]
    labels: tuple[str, ...]
    default_version_id: int | None
    cache_ttl: int
    versions: dict[str, VersionEntry] = field(default_factory=dict)

    @property
    def active_versions(self) -> list[VersionEntry]:
        return [v for v in self.versions.values() if v.status == ModelVersion.Status.ACTIVE]

    @property
    def serving_versions(self) -> list[VersionEntry]:
        """Active versions that answer callers (shadow versions only listen)."""
        return [v for v in self.active_versions if not v.is_shadow]

    @property
    def shadow_versions(self) -> list[VersionEntry]:
        return [v for v in self.active_versions if v.is_shadow and v.shadow_share > 0]

    @property
    def latest(self) -> VersionEntry | None:
        """The newest serving version."""
        return max(self.serving_versions, key=lambda v: (v.created_at, v.id), default=None)

    @property
    def default(self) -> VersionEntry | None:
        for version in self.serving_versions:
            if version.id == self.default_version_id:
                return version
        return None

    @property
    def split(self) -> list[tuple[VersionEntry, float]]:
        """Serving versions with a positive traffic weight, in a fixed order."""
        return [
            (v, v.traffic_weight)
            for v in sorted(self.serving_versions, key=lambda v: v.label)
            if v.traffic_weight > 0
        ]


def current_revision() -> int:
    row = RegistryRevision.objects.filter(pk=1).values_list("revision", flat=True).first()
    return row or 0


class Registry:
    """Snapshot of the registry plus a cache of predictors keyed by artifact checksum."""

    timer = staticmethod(time.monotonic)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._models: dict[str, ModelEntry] = {}
        self._predictors: dict[tuple[int, str], Predictor] = {}
        self._loading: dict[tuple[int, str], threading.Lock] = {}  # versions being loaded
        self._revision: int | None = None
        self._checked_at = float("-inf")
        self._member_pool = None

    def clear(self) -> None:
        """Forget everything; the next read reloads from the database."""
        with self._lock:
            self._models = {}
            self._predictors = {}
            self._revision = None
            self._checked_at = float("-inf")

    def mark_stale(self) -> None:
        """Check the revision on the next read (this process changed the registry)."""
        self._checked_at = float("-inf")

    def model(self, name: str) -> ModelEntry | None:
        self._refresh_if_due()
        return self._models.get(name)

    def models(self) -> list[ModelEntry]:
        self._refresh_if_due()
        return sorted(self._models.values(), key=lambda m: m.name)

    def predictor(self, version: VersionEntry) -> Predictor:
        """The loaded predictor of a version, loading its artifact on first use.

        One thread loads a version while the others asking for it wait: the first requests
        after a start or a new artifact come together, and each reading a large artifact
        would hold a database connection and its memory for as long.
        """
        key = (version.id, version.checksum)
        predictor = self._predictors.get(key)
        if predictor is not None:
            return predictor
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        try:
            with loading:
                predictor = self._predictors.get(key)
                if predictor is None:
                    predictor = self._predictors[key] = self._load_predictor(version)
        finally:
            with self._lock:
                self._loading.pop(key, None)
        return predictor

    def _load_predictor(self, version: VersionEntry) -> Predictor:
        started = time.perf_counter()
        data = (
            ModelVersion.objects.filter(pk=version.id, checksum=version.checksum)
            .values_list("artifact", flat=True)
            .get()
        )
        if version.runtime == ModelVersion.Runtime.ENSEMBLE:
            predictor = self._ensemble(version, bytes(data))
        else:
            predictor = load_predictor(version.runtime, bytes(data))
        seconds = time.perf_counter() - started
        metrics.model_loaded(model=version.model_name, version=version.label, seconds=seconds)
        return predictor

    def _ensemble(self, version: VersionEntry, data: bytes) -> WeightedEnsemble:
        model = self._models[version.model_name]
        members = []
        for label, weight in parse_spec(data).members:
            member = model.versions.get(label)
            if member is None or member.runtime == ModelVersion.Runtime.ENSEMBLE:
                raise ArtifactError(f"ensemble member {label!r} is not a plain version")
            members.append((self.predictor(member), weight))
        if self._member_pool is None:
            self._member_pool = member_pool()
        return WeightedEnsemble(members, self._member_pool)

    def _refresh_if_due(self) -> None:
        now = self.timer()
        if now - self._checked_at < platform_setting("REGISTRY_REFRESH_SECONDS"):
            return
        with self._lock:
            if now - self._checked_at < platform_setting("REGISTRY_REFRESH_SECONDS"):
                return
            revision = current_revision()
            if revision != self._revision or not self._models:
                self._models = self._load()
                live = {
                    (v.id, v.checksum) for m in self._models.values() for v in m.versions.values()
                }
                self._predictors = {k: p for k, p in self._predictors.items() if k in live}
                self._revision = revision
            self._checked_at = now

    @staticmethod
    def _load() -> dict[str, ModelEntry]:
        versions: dict[int, dict[str, VersionEntry]] = {}
        queryset = ModelVersion.objects.defer("artifact").select_related("model")
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


registry = Registry()
