"""GET /api/v1/models and /api/v1/models/{name}."""

import pytest

pytestmark = pytest.mark.usefixtures("demo_models")


def test_models_list_versions_schema_labels_and_weights(key_client):
    response = key_client.get("/api/v1/models")

    assert response.status_code == 200
    by_name = {m["name"]: m for m in response.json()}
    assert set(by_name) == {"iris", "breast-cancer", "digits"}
    iris = by_name["iris"]
    assert iris["n_features"] == 4
    assert iris["feature_names"] == ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    assert iris["labels"] == ["setosa", "versicolor", "virginica"]
    assert iris["input_schema"]["minItems"] == iris["input_schema"]["maxItems"] == 4
    assert iris["default_version"] == "v2"
    versions = {v["label"]: v for v in iris["versions"]}
    assert set(versions) == {"v1", "v2"}
    assert versions["v1"]["traffic_weight"] == 50.0
    assert versions["v2"]["is_default"] is True
    assert versions["v1"]["metrics"]["holdout_accuracy"] > 0.9
    assert "artifact" not in versions["v1"]
    assert by_name["digits"]["n_features"] == 64


def test_one_model_by_name_and_an_unknown_one_is_404(key_client):
    assert key_client.get("/api/v1/models/digits").json()["labels"] == [str(i) for i in range(10)]

    missing = key_client.get("/api/v1/models/nope")

    assert missing.status_code == 404
    assert missing.json() == {
        "detail": "Unknown model 'nope'.",
        "code": "model_not_found",
        "request_id": missing["X-Request-ID"],
    }
