"""Ensemble versions: members run concurrently, outputs averaged by weight, bounded by timeout."""

import json

import numpy as np
import pytest

from predictions.catalogue.versions import model_version_create
from predictions.models import MLModel, ModelVersion, Prediction

SETOSA = [5.1, 3.5, 1.4, 0.2]
pytestmark = pytest.mark.usefixtures("demo_models")


def spec(*members) -> bytes:
    return json.dumps({"members": [{"version": v, "weight": w} for v, w in members]}).encode()


@pytest.fixture
def ensemble(demo_models):
    iris = MLModel.objects.get(name="iris")
    return model_version_create(
        model=iris,
        label="mix",
        runtime="ensemble",
        artifact=spec(("v1", 1), ("v2", 3)),
        status="active",
    )


def predict(client, version, row=SETOSA, **extra):
    return client.post(
        "/api/v1/predict", {"input_data": row, "model_version": version, **extra}, format="json"
    )


@pytest.mark.usefixtures("ensemble")
def test_an_ensemble_answers_the_weighted_average_of_its_members(key_client):
    row = [6.0, 2.9, 4.5, 1.5]
    v1 = np.array(predict(key_client, "v1", row).json()["prediction"])
    v2 = np.array(predict(key_client, "v2", row).json()["prediction"])

    mixed = predict(key_client, "mix", row).json()

    np.testing.assert_allclose(mixed["prediction"], 0.25 * v1 + 0.75 * v2, atol=1e-6)
    assert (
        mixed["label"] == ["setosa", "versicolor", "virginica"][int(np.argmax(mixed["prediction"]))]
    )
    assert Prediction.objects.get(pk=mixed["prediction_id"]).model_version.label == "mix"


@pytest.mark.usefixtures("ensemble")
def test_the_timeout_bounds_the_whole_ensemble(key_client):
    response = predict(key_client, "mix", timeout=0.000001)

    assert response.status_code == 504
    assert response.json()["code"] == "inference_timeout"


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"not json", "JSON"),
        (spec(("v1", 1)), "at least two"),
        (spec(("v1", 1), ("v9", 1)), "no version 'v9'"),
        (spec(("v1", 1), ("v2", -1)), "positive number"),
        (spec(("v1", 1), ("v1", 2)), "only once"),
    ],
)
def test_a_malformed_ensemble_is_refused_when_saved(document, message):
    from mlplatform.errors import InvalidInput

    iris = MLModel.objects.get(name="iris")

    with pytest.raises(InvalidInput, match=message):
        model_version_create(model=iris, label="bad", runtime="ensemble", artifact=document)
    assert not ModelVersion.objects.filter(label="bad").exists()


def test_an_ensemble_of_ensembles_is_refused(ensemble):
    from mlplatform.errors import InvalidInput

    with pytest.raises(InvalidInput, match="itself an ensemble"):
        model_version_create(
            model=ensemble.model,
            label="meta",
            runtime="ensemble",
            artifact=spec(("mix", 1), ("v1", 1)),
        )
