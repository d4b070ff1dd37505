"""Version resolution: explicit, latest, the sticky weighted split, and the default."""

from collections import Counter

import pytest

from predictions.catalogue.artifacts import artifact_bytes
from predictions.catalogue.registry import registry
from predictions.catalogue.versions import model_version_create, registry_touch
from predictions.models import ModelVersion
from predictions.pipeline import version_resolve

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
pytestmark = pytest.mark.usefixtures("demo_models")


def predict(client, path="/api/v1/predict", **body):
    return client.post(path, {"input_data": IRIS_ROW, **body}, format="json")


def set_weights(**weights: float) -> None:
    for label, weight in weights.items():
        ModelVersion.objects.filter(model__name="iris", label=label).update(traffic_weight=weight)
    registry_touch()


def test_an_explicit_version_serves_and_says_so(key_client):
    body = predict(key_client, model_version="v1").json()

    assert (body["model_version"], body["routing"]) == ("v1", "explicit")


def test_latest_is_the_newest_serving_version(key_client):
    body = predict(key_client, model_version="latest").json()

    assert (body["model_version"], body["routing"]) == ("v2", "latest")


def test_ten_thousand_principals_follow_the_weights_within_two_points():
    set_weights(v1=70, v2=30)
    iris = registry.model("iris")

    served = Counter(
        version_resolve(iris, None, principal=f"key:{n}")[0].label for n in range(10_000)
    )

    assert abs(served["v1"] / 10_000 - 0.70) < 0.02
    assert abs(served["v2"] / 10_000 - 0.30) < 0.02


def test_the_split_is_sticky_per_principal_while_the_weights_stay(
    key_client, user, make_key, client_for
):
    first = {predict(key_client).json()["model_version"] for _ in range(10)}
    others = [client_for(make_key(user, name=f"k{n}")) for n in range(20)]
    seen = {predict(client).json()["model_version"] for client in others}

    assert len(first) == 1  # one key, one version
    assert seen == {"v1", "v2"}  # different keys land on both


def test_a_zero_weight_version_is_reachable_only_explicitly(key_client, user, make_key, client_for):
    set_weights(v1=0, v2=100)
    clients = [client_for(make_key(user, name=f"k{n}")) for n in range(20)]

    split = {predict(client).json()["model_version"] for client in clients}
    explicit = predict(clients[0], model_version="v1").json()["model_version"]

    assert split == {"v2"}
    assert explicit == "v1"


def test_with_no_positive_weight_the_default_version_serves(key_client):
    set_weights(v1=0, v2=0)

    body = predict(key_client).json()

    assert (body["model_version"], body["routing"]) == ("v2", "default")


def test_the_tutorials_ab_test_path_routes_by_the_split_whatever_is_asked(key_client):
    set_weights(v1=0, v2=100)

    body = predict(key_client, "/api/v1/predict/ab-test", model_version="v1").json()

    assert (body["model_version"], body["routing"]) == ("v2", "split")


def test_shadow_versions_are_never_chosen_by_split_or_latest(key_client):
    from predictions.models import MLModel

    iris = MLModel.objects.get(name="iris")
    artifact = artifact_bytes(iris.versions.get(label="v1"))
    model_version_create(
        model=iris, label="v3", artifact=artifact, status="active", traffic_weight=1000
    )
    ModelVersion.objects.filter(label="v3").update(is_shadow=True)
    registry_touch()

    labels = {predict(key_client).json()["model_version"]}
    labels.add(predict(key_client, model_version="latest").json()["model_version"])

    assert "v3" not in labels
