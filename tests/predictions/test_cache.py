"""The per-model response cache: hits, misses, and never a stale answer."""

import pytest
from django.core.cache import cache

from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.versions import model_save, model_version_replace_artifact
from predictions.models import MLModel, ModelVersion, Prediction

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
pytestmark = pytest.mark.usefixtures("demo_models")


@pytest.fixture(autouse=True)
def _empty_cache():
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def iris_ttl_60(demo_models):
    iris = MLModel.objects.get(name="iris")
    iris.cache_ttl = 60
    model_save(model=iris)
    return iris


def predict(client, **body):
    return client.post(
        "/api/v1/predict", {"input_data": IRIS_ROW, "model_version": "v1", **body}, format="json"
    ).json()


@pytest.mark.usefixtures("iris_ttl_60")
def test_a_repeated_input_is_a_hit_and_is_still_recorded(key_client):
    miss = predict(key_client)
    hit = predict(key_client)

    assert miss["cached"] is False and hit["cached"] is True
    assert hit["prediction"] == miss["prediction"] and hit["label"] == miss["label"]
    assert hit["prediction_id"] != miss["prediction_id"]
    assert Prediction.objects.filter(cached=True).count() == 1
    assert Prediction.objects.count() == 2


@pytest.mark.usefixtures("iris_ttl_60")
def test_another_input_or_version_is_a_miss(key_client):
    predict(key_client)

    other_input = predict(key_client, input_data=[6.0, 3.0, 4.8, 1.8])
    other_version = predict(key_client, model_version="v2")

    assert other_input["cached"] is False
    assert other_version["cached"] is False


def test_with_ttl_zero_nothing_is_cached(key_client):
    predict(key_client)

    assert predict(key_client)["cached"] is False


@pytest.mark.usefixtures("iris_ttl_60")
def test_a_new_artifact_never_serves_a_stale_entry(key_client):
    before = predict(key_client)
    v1 = ModelVersion.objects.get(model__name="iris", label="v1")
    v2_artifact = artifact_bytes(ModelVersion.objects.get(model__name="iris", label="v2"))

    model_version_replace_artifact(version=v1, artifact=v2_artifact)
    after = predict(key_client)

    assert after["cached"] is False
    assert after["prediction"] != before["prediction"]
