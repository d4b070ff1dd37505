"""The process-local registry notices changes made elsewhere within its refresh interval."""

import pytest

from predictions.models import MLModel, ModelVersion, RegistryRevision
from predictions.registry import Registry
from predictions.services import registry_touch

pytestmark = pytest.mark.usefixtures("demo_models")


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


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
    # artifact, a large model would be read from the database by every thread at once.
    import threading

    from django.db import connection
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
