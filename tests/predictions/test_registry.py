"""The process-local registry notices changes made elsewhere within its refresh interval."""

import asyncio
import threading

import pytest
from asgiref.sync import async_to_sync
from django.db import DatabaseError, connection
from django.test.utils import CaptureQueriesContext

from predictions.catalogue import registry as registry_module
from predictions.catalogue.artifacts import artifact_save
from predictions.catalogue.registry import Registry
from predictions.catalogue.versions import registry_touch
from predictions.models import MLModel, ModelVersion, RegistryRevision
from predictions.runtime.errors import ArtifactError
from tests.concurrency import Clock, HeldRead

pytestmark = pytest.mark.usefixtures("demo_models")


@pytest.fixture
def local_registry(monkeypatch):
    clock = Clock()
    registry = Registry()
    monkeypatch.setattr(registry, "timer", clock)
    return registry, clock


def _change_default_elsewhere(label: str) -> None:
    """What another process does: write the rows and bump the revision counter."""
    model = MLModel.objects.get(name="iris")
    model.default_version = model.versions.get(label=label)
    model.save()
    RegistryRevision.objects.filter(pk=1).update(
        revision=RegistryRevision.objects.get().revision + 1
    )


def test_a_change_elsewhere_is_seen_after_the_refresh_interval(local_registry):
    registry, clock = local_registry
    assert registry.model("iris").default.label == "v2"

    _change_default_elsewhere("v1")
    still_cached = registry.model("iris").default.label
    clock.now += 1.01
    refreshed = registry.model("iris").default.label

    assert still_cached == "v2"
    assert refreshed == "v1"


def test_between_refreshes_no_query_is_made(local_registry, django_assert_num_queries):
    registry, clock = local_registry
    registry.model("iris")

    with django_assert_num_queries(0):
        for _ in range(100):
            registry.model("iris")


def test_an_unchanged_revision_costs_one_query(local_registry, django_assert_num_queries):
    registry, clock = local_registry
    registry.model("iris")
    clock.now += 5

    with django_assert_num_queries(1):
        registry.model("iris")


def test_predictors_are_loaded_once_and_dropped_when_the_artifact_changes(local_registry):
    registry, clock = local_registry
    version = registry.model("iris").versions["v1"]

    first = registry.predictor(version)
    again = registry.predictor(version)
    other = ModelVersion.objects.get(model__name="iris", label="v2")
    ModelVersion.objects.filter(model__name="iris", label="v1").update(
        artifact=other.artifact, checksum=other.checksum
    )
    registry_touch()
    clock.now += 5
    reloaded = registry.predictor(registry.model("iris").versions["v1"])

    assert first is again
    assert reloaded is not first


@pytest.mark.django_db(transaction=True)
def test_threads_asking_at_once_for_a_version_not_loaded_yet_load_it_once():
    # The first requests after a start or a new artifact arrive together; if each loaded the
    # artifact, a large model would be read from the storage by every thread at once.

    from prometheus_client import REGISTRY

    registry = Registry()
    version = registry.model("iris").versions["v1"]
    labels = {"model": "iris", "version": "v1"}
    loads_before = REGISTRY.get_sample_value("mlplatform_model_load_seconds_count", labels) or 0
    start = threading.Barrier(8)
    got = []

    def ask():
        try:
            start.wait()
            got.append(registry.predictor(version))
        finally:
            connection.close()

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    loads = REGISTRY.get_sample_value("mlplatform_model_load_seconds_count", labels)
    assert len(got) == 8 and all(p is got[0] for p in got)
    assert loads - loads_before == 1


@pytest.fixture
def held_read(monkeypatch):
    """The registry's read of the revision, held when armed."""
    return HeldRead(monkeypatch, registry_module, "current_revision")


def _on_the_loop(work):
    """Run the coroutine function ``work`` on an event loop, as the web server would."""
    return async_to_sync(work)()


@pytest.mark.django_db(transaction=True)
def test_the_event_loop_goes_on_with_a_snapshot_younger_than_the_limit_while_it_is_read(
    local_registry, held_read
):
    # Waiting would stop every request of the process for the read; a snapshot a little over
    # an interval old is within the bound the module promises.
    registry, clock = local_registry
    assert registry.model("iris").default.label == "v2"
    _change_default_elsewhere("v1")
    clock.now += 1.2
    held_read.arm()

    async def ask_twice():
        await registry.aready()  # starts the read on a thread
        first = registry.model("iris", refresh=False).default.label
        await asyncio.to_thread(held_read.entered.wait, 5)
        during = registry.model("iris", refresh=False).default.label
        held_read.release.set()
        await registry._reading
        return first, during, registry.model("iris", refresh=False).default.label

    assert _on_the_loop(ask_twice) == ("v2", "v2", "v1")


@pytest.mark.django_db(transaction=True)
def test_the_event_loop_waits_for_the_read_when_its_snapshot_is_older_than_the_limit(
    local_registry, held_read
):
    # A process idle for a while must not answer the first requests of a burst from a
    # snapshot several intervals old: a change is served everywhere within about a second.
    registry, clock = local_registry
    assert registry.model("iris").default.label == "v2"
    _change_default_elsewhere("v1")
    clock.now += 2

    async def ask():
        await registry.aready()
        return registry.model("iris", refresh=False).default.label

    assert _on_the_loop(ask) == "v1"


@pytest.mark.django_db(transaction=True)
def test_if_a_read_fails_the_next_request_reads_again(local_registry, held_read):
    registry, clock = local_registry
    registry.model("iris")
    _change_default_elsewhere("v1")
    registry.mark_stale()
    reads_before = held_read.calls
    held_read.arm(error=DatabaseError("the database went away"))
    held_read.release.set()

    async def ask_twice():
        with pytest.raises(DatabaseError):
            await registry.aready()
        await registry.aready()
        return registry.model("iris", refresh=False).default.label

    assert _on_the_loop(ask_twice) == "v1"
    assert held_read.calls == reads_before + 2


def test_a_version_whose_artifact_fails_is_not_read_again(local_registry):
    registry, clock = local_registry
    name, sha256 = artifact_save(b"broken")
    ModelVersion.objects.filter(model__name="iris", label="v1").update(
        artifact=name, checksum=sha256
    )
    version = registry.model("iris").versions["v1"]

    with pytest.raises(ArtifactError) as first:
        registry.predictor(version)
    with CaptureQueriesContext(connection) as queries, pytest.raises(ArtifactError) as again:
        registry.predictor(version)

    assert again.value is first.value
    assert len(queries) == 0
