"""The prediction pipeline: how every face predicts and stores.

REST ``/predict`` and ``/predict/ab-test``, GraphQL ``predict``, each row of ``/predict/stream``,
V2 ``infer``, shadow copies and the batch worker's chunks all go through these steps:

1. ``route``: the version that serves, and why (named, latest, the sticky traffic split, or the
   model's default).
2. ``Pipeline.infer`` (threads) or ``Pipeline.ainfer`` (the event loop): one row may be answered
   from the model's response cache; else the rows are queued for the version's micro-batcher
   (``mlplatform.background.Batcher``; an ensemble's members each through their own), which
   runs the predictor on what queued together, up to the version's ``max_batch_size`` rows.
   The caller waits at most its timeout (504 beyond), outputs that are not finite numbers are
   refused (400, naming the row), and the outcome is described.
3. ``store`` / ``astore``: the rows go to the process's group commit; the caller answers once
   they are committed (503 if that fails).
"""

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from django.core.cache import cache
from django.db import DatabaseError

from accounts.models import ApiKey, User
from mlplatform import metrics
from mlplatform.background import Batcher, group_commit
from mlplatform.conf import platform_setting
from mlplatform.errors import (
    DatabaseUnavailable,
    InferenceTimeout,
    InvalidInput,
    NotFound,
    PlatformError,
    UpstreamFailed,
    UpstreamTimedOut,
)
from predictions.catalogue.registry import Loaded, ModelEntry, VersionEntry, registry
from predictions.models import ModelVersion
from predictions.runtime.ensemble import Ensemble, weighted_sum
from predictions.runtime.errors import ArtifactError, UpstreamError, UpstreamTimeout
from predictions.runtime.outputs import Outcome, describe
from predictions.runtime.predictors import Predictor
from predictions.runtime.routing import pick_weighted, stable_unit

# --- 1. routing ---------------------------------------------------------------------------


class Routing:
    EXPLICIT = "explicit"
    LATEST = "latest"
    SPLIT = "split"
    DEFAULT = "default"


@dataclass(frozen=True, slots=True)
class Served:
    """The version that answers a request, and why."""

    model: ModelEntry
    version: VersionEntry
    routing: str

    def refused(self, code: str) -> None:
        """Count a request refused once its version was chosen (bad input, timeout...)."""
        metrics.prediction_refused(
            model=self.model.name, version=self.version.label, routing=self.routing, code=code
        )


def principal_id(user: User, api_key: ApiKey | None) -> str:
    """Who is asking, for sticky routing and idempotency: the key, else the user."""
    return f"key:{api_key.pk}" if api_key is not None else f"user:{user.pk}"


def model_resolve(name: str | None, *, refresh: bool = True) -> ModelEntry:
    """The named model (the default one when None); NotFound lists the models there are."""
    name = name or platform_setting("DEFAULT_MODEL")
    entry = registry.model(name, refresh=refresh)
    if entry is None:
        known = ", ".join(m.name for m in registry.models(refresh=False)) or "none"
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


def route(
    model_name: str | None, version_label: str | None, *, principal: str, refresh: bool = True
) -> Served:
    """Resolve a model and version as every face does; NotFound (404) names what is missing."""
    model = model_resolve(model_name, refresh=refresh)
    version, routing = version_resolve(model, version_label or None, principal=principal)
    return Served(model, version, routing)


# --- 2. inference -------------------------------------------------------------------------


class VersionUnavailable(PlatformError):
    """The version's artifact does not load: the version cannot serve (503, never a 500)."""

    status_code = 503
    code = "version_unavailable"

    def __init__(self, served_version: VersionEntry, exc: ArtifactError) -> None:
        super().__init__(
            f"Version {served_version.label!r} of model {served_version.model_name!r} cannot "
            f"be loaded: {exc}"
        )


def load(version: VersionEntry) -> Loaded:
    """The version's predictor (or ensemble), loaded on first use; 503 if its artifact fails."""
    try:
        return registry.predictor(version)
    except ArtifactError as exc:
        raise VersionUnavailable(version, exc) from None


async def aload(*versions: VersionEntry) -> None:
    """Make the registry fresh enough and load ``versions``, off the event loop; 503 if one
    fails to load."""
    try:
        await registry.aready(*versions)
    except ArtifactError:
        for version in versions:
            load(version)  # raises for the one that failed, without reading again


class NonFiniteOutputs(InvalidInput):
    """The model's outputs for a row are not finite numbers (its inputs overflow it)."""

    def __init__(self, *, row: int, n_rows: int, field: str) -> None:
        self.row = row
        where = field if n_rows == 1 else f"{field} row {row}"
        super().__init__(
            f"{where}: these values overflow the model (its outputs are not finite numbers)."
        )


def upstream_failed(version: VersionEntry, exc: UpstreamError) -> UpstreamFailed:
    kind = UpstreamTimedOut if isinstance(exc, UpstreamTimeout) else UpstreamFailed
    return kind(f"Version {version.label!r} of model {version.model_name!r}: {exc}.")


@dataclass(frozen=True, slots=True)
class Inference:
    """The outputs for some rows: one row of outputs per input row."""

    served: Served
    outputs: np.ndarray
    seconds: float  # from queueing to the answer (or the cache lookup)
    cached: bool

    def outcomes(self) -> list[Outcome]:
        model = self.served.model
        return describe(self.outputs, task=model.task, labels=model.labels)


_NO_CACHE = object()


class Pipeline:
    """The micro-batchers of this process's versions, and the steps around them."""

    def __init__(self) -> None:
        self._batchers: dict[int, tuple[tuple, Batcher]] = {}
        self._lock = threading.Lock()

    def submit(self, version: VersionEntry, rows: np.ndarray) -> Future:
        """Queue rows for a version; the future holds their outputs (float32, one row each).

        The version must be loaded, or loadable here (not on the event loop: ``aload`` first).
        """
        loaded = load(version)
        if isinstance(loaded, Ensemble):
            members = [self.submit(member, rows) for member, _ in loaded.members]
            return _combined(members, loaded.weights)
        return self._batcher(version, loaded).submit(rows, size=len(rows))

    def infer(
        self,
        served: Served,
        rows: np.ndarray,
        *,
        timeout: float | None,
        cache_input: Any = _NO_CACHE,
        field: str = "input_data",
    ) -> Inference:
        """Outputs of ``rows``, waiting at most ``timeout`` seconds (None: as long as it takes).

        ``cache_input`` (one row as the client sent it) answers from the model's response cache
        when it has a time to live.
        """
        key = _cache_key(served, cache_input)
        if key is not None and (hit := _cache_hit(served, key)) is not None:
            return hit
        started = time.perf_counter()
        future = self.submit(served.version, rows)
        try:
            outputs = future.result(timeout)
        except FutureTimeout:
            future.cancel()
            raise _timed_out(timeout) from None
        return _answered(served, outputs, started, key, field, timeout)

    async def ainfer(
        self,
        served: Served,
        rows: np.ndarray,
        *,
        timeout: float | None,
        cache_input: Any = _NO_CACHE,
        field: str = "input_data",
    ) -> Inference:
        """``infer`` for the event loop (the version loaded beforehand: ``aload``)."""
        key = _cache_key(served, cache_input)
        if key is not None and (hit := _cache_hit(served, key)) is not None:
            return hit
        started = time.perf_counter()
        try:
            async with asyncio.timeout(timeout):
                outputs = await self._outputs(served.version, rows)
        except TimeoutError:
            raise _timed_out(timeout) from None
        return _answered(served, outputs, started, key, field, timeout)

    def queued(self, version: VersionEntry) -> int:
        """How many requests wait for ``version``'s micro-batcher (``Batcher.queued``)."""
        found = self._batchers.get(version.id)
        return found[1].queued() if found is not None else 0

    async def _outputs(self, version: VersionEntry, rows: np.ndarray) -> np.ndarray:
        """``submit`` for the event loop: the outputs, awaited."""
        loaded = load(version)
        if isinstance(loaded, Ensemble):
            members = [self._outputs(member, rows) for member, _ in loaded.members]
            return weighted_sum(await asyncio.gather(*members), loaded.weights)
        return await self._batcher(version, loaded).asubmit(rows, size=len(rows))

    def _batcher(self, version: VersionEntry, predictor: Predictor) -> Batcher:
        config = (version.checksum, version.max_batch_size, version.batch_wait_ms)
        found = self._batchers.get(version.id)
        if found is not None and found[0] == config:
            return found[1]
        with self._lock:
            found = self._batchers.get(version.id)
            if found is None or found[0] != config:
                if found is not None:
                    found[1].close()
                batcher = Batcher(
                    _model_call(version, predictor),
                    max_size=version.max_batch_size,
                    wait=version.batch_wait_ms / 1000,
                    name=f"batcher-{version.model_name}-{version.label}",
                )
                found = self._batchers[version.id] = (config, batcher)
        return found[1]


def _model_call(version: VersionEntry, predictor: Predictor):
    """The batcher's handler: one call of the predictor for the blocks of rows queued together;
    if that call fails, each block is run alone, so that one bad block fails only its caller."""

    def run(blocks: list[np.ndarray]) -> list[np.ndarray | Exception]:
        rows = blocks[0] if len(blocks) == 1 else np.concatenate(blocks)
        try:
            outputs = predictor.predict(rows)
        except UpstreamError as exc:  # the server failed, not a block: no block is run again
            return [upstream_failed(version, exc) for _ in blocks]
        except Exception as exc:  # noqa: BLE001 - the caller of the block gets it
            if len(blocks) == 1:
                return [exc]
            return [run([block])[0] for block in blocks]
        metrics.inference_batch(model=version.model_name, version=version.label, rows=len(rows))
        if len(blocks) == 1:
            return [outputs]
        return np.split(outputs, np.cumsum([len(block) for block in blocks[:-1]]))

    return run


def _combined(members: list[Future], weights: Sequence[float]) -> Future:
    """A future of the weighted average of the members' outputs, done when the last is."""
    combined: Future = Future()
    remaining = [len(members)]
    lock = threading.Lock()

    def member_done(_: Future) -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0]:
                return
        with contextlib.suppress(InvalidStateError):  # the caller stopped waiting
            try:
                result = weighted_sum([member.result() for member in members], weights)
            except Exception as exc:  # noqa: BLE001 - the caller gets it
                combined.set_exception(exc)
            else:
                combined.set_result(result)

    for member in members:
        member.add_done_callback(member_done)
    return combined


def _timed_out(timeout: float | None) -> InferenceTimeout:
    return InferenceTimeout(f"Inference did not finish within the timeout of {timeout:g} s.")


def _cache_key(served: Served, cache_input: Any) -> str | None:
    """Model, version, artifact checksum and the exact input: a new artifact never hits."""
    if cache_input is _NO_CACHE or not served.model.cache_ttl:
        return None
    body = orjson.dumps(cache_input, option=orjson.OPT_SORT_KEYS)
    digest = hashlib.sha256(body).hexdigest()
    version = served.version
    return f"predict:{version.model_name}:{version.id}:{version.checksum}:{digest}"


def _cache_hit(served: Served, key: str) -> Inference | None:
    started = time.perf_counter()
    hit = cache.get(key)
    metrics.response_cache_lookup(model=served.model.name, hit=hit is not None)
    if hit is None:
        return None
    outputs = np.array([hit], dtype=np.float32)
    return Inference(served, outputs, time.perf_counter() - started, cached=True)


def _answered(
    served: Served,
    outputs: np.ndarray,
    started: float,
    key: str | None,
    field: str,
    timeout: float | None,
) -> Inference:
    """Outputs that came in time and are finite numbers, as an Inference (cached if asked)."""
    seconds = time.perf_counter() - started
    if timeout is not None and seconds > timeout:  # came while the caller woke from its wait
        raise _timed_out(timeout)
    finite = np.isfinite(outputs).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise NonFiniteOutputs(row=row, n_rows=len(outputs), field=field)
    if key is not None:
        cache.set(key, outputs[0].tolist(), served.model.cache_ttl)
    return Inference(served, outputs, seconds, cached=False)


pipeline = Pipeline()


# --- 3. storage ---------------------------------------------------------------------------


def store(rows: Sequence[Any]) -> None:
    """Store unsaved model instances with the process's group commit; 503 if it fails."""
    try:
        group_commit.submit(rows).result()
    except DatabaseError as exc:
        raise DatabaseUnavailable() from exc


async def astore(rows: Sequence[Any]) -> None:
    """``store`` for the event loop."""
    try:
        await group_commit.asubmit(rows)
    except DatabaseError as exc:
        raise DatabaseUnavailable() from exc
