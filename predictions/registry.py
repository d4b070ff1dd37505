"""The process-local view of the model registry and its loaded predictors.

Each process keeps an immutable snapshot of models and versions plus the predictors it has
loaded. At most once per ``REGISTRY_REFRESH_SECONDS`` (the interval) it reads one counter
row (``RegistryRevision``); when another process changed the registry the counter moved and
the snapshot is rebuilt, so admin changes reach every process within about a second without
a query per request.

One thread reads at a time. Staleness bound: every request is answered from a snapshot whose
read began less than ``STALE_LIMIT`` (1.5) intervals before the request asked for it. Within
one interval of a read no thread reads; after it, the first thread to ask reads, and others
asking meanwhile go on with the snapshot they have while it is younger than ``STALE_LIMIT``
intervals; an older one (a process idle for a while, the first read, ``mark_stale()``,
``clear()``) they wait for.

A thread about to wait for another's read (of the revision or of an artifact) first gives back
its pooled database connection: request threads borrow one early (authentication), and when
the waiting threads held all of a pool's connections, the reading thread, which needs one,
would wait for the pool's timeout and fail, stalling every request of its process as long.
"""

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime

from mlplatform import metrics
from mlplatform.conf import platform_setting
from mlplatform.db.pool import give_back_connection
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


# How many refresh intervals old a snapshot may be for a thread to use it while another reads.
STALE_LIMIT = 1.5


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
        self._checked_at = float("-inf")  # when the read of the snapshot began
        self._stale_marks = 0  # how often marked stale, to notice a mark during a read
        self._reading = threading.Lock()  # held by the one thread reading the revision
        self._member_pool = None

    def clear(self) -> None:
        """Forget everything; the next read reloads from the database."""
        with self._lock:
            self._models = {}
            self._predictors = {}
            self._revision = None
            self._checked_at = float("-inf")
            self._stale_marks += 1

    def mark_stale(self) -> None:
        """Check the revision on the next read (this process changed the registry)."""
        with self._lock:
            self._checked_at = float("-inf")
            self._stale_marks += 1

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
        would hold a database connection and its memory for as long. The loading thread
        queries the database, so those waiting give back their pooled connections first.
        """
        key = (version.id, version.checksum)
        predictor = self._predictors.get(key)
        if predictor is not None:
            return predictor
        with self._lock:
            loading = self._loading.setdefault(key, threading.Lock())
        if not loading.acquire(blocking=False):
            give_back_connection()
            loading.acquire()
        try:
            predictor = self._predictors.get(key)
            if predictor is None:
                predictor = self._predictors[key] = self._load_predictor(version)
        finally:
            with self._lock:
                if self._loading.get(key) is loading:
                    del self._loading[key]
            loading.release()
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
        """Re-read the registry if its revision changed, at most once per refresh interval.

        While one thread reads, another asking goes on with its snapshot if that is younger
        than ``STALE_LIMIT`` intervals, else gives back its pooled connection (the reader may
        need it) and waits. A failed read leaves the snapshot as old as it was, so the next
        thread to get the read lock reads again; the error goes to the reader's request.
        """
        interval = platform_setting("REGISTRY_REFRESH_SECONDS")
        if self.timer() - self._checked_at < interval:
            return
        if not self._reading.acquire(blocking=False):
            if self.timer() - self._checked_at < interval * STALE_LIMIT:
                return
            give_back_connection()
            self._reading.acquire()
        try:
            if self.timer() - self._checked_at >= interval:
                self._read()
        finally:
            self._reading.release()

    def _read(self) -> None:
        """Read the revision and, if it moved, the rows (``self._lock`` held around, not across)."""
        with self._lock:
            started, marks = self.timer(), self._stale_marks
            known = self._revision if self._models else None
        revision = current_revision()
        models = self._load() if revision != known else None
        with self._lock:
            if models is not None:
                self._models = models
                live = {(v.id, v.checksum) for m in models.values() for v in m.versions.values()}
                self._predictors = {k: p for k, p in self._predictors.items() if k in live}
                self._revision = revision
            if marks == self._stale_marks:  # else marked stale meanwhile: read again next time
                self._checked_at = started

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
