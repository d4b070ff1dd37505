"""POST /api/v1/predictions/{id}/feedback and the live metrics it feeds."""

import uuid

import pytest

from predictions.models import Feedback

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]


def predict(client, version="v1"):
    return client.post(
        "/api/v1/predict", {"input_data": SETOSA, "model_version": version}, format="json"
    ).json()


def feedback(client, prediction_id, actual):
    return client.post(
        f"/api/v1/predictions/{prediction_id}/feedback", {"actual": actual}, format="json"
    )


def test_feedback_records_whether_the_label_was_right(key_client):
    prediction = predict(key_client)

    right = feedback(key_client, prediction["prediction_id"], "setosa")

    assert right.status_code == 201
    assert right.json()["correct"] is True
    corrected = feedback(key_client, prediction["prediction_id"], "virginica")
    assert corrected.json()["correct"] is False
    assert Feedback.objects.count() == 1


def test_live_accuracy_per_version_is_shown_with_counts(key_client):
    for actual in ("setosa", "setosa", "setosa", "virginica"):
        feedback(key_client, predict(key_client, "v1")["prediction_id"], actual)
    feedback(key_client, predict(key_client, "v2")["prediction_id"], "setosa")

    versions = {
        v["label"]: v["live_metrics"]
        for v in key_client.get("/api/v1/models/iris").json()["versions"]
    }

    assert versions["v1"] == {"feedback_count": 4, "accuracy": 0.75, "mean_absolute_error": None}
    assert versions["v2"]["feedback_count"] == 1 and versions["v2"]["accuracy"] == 1.0


@pytest.mark.parametrize("actual", ["dog", 3, None, ["setosa"]])
def test_an_actual_that_is_not_a_label_is_a_400(key_client, actual):
    prediction = predict(key_client)

    response = feedback(key_client, prediction["prediction_id"], actual)

    assert response.status_code == 400
    assert "actual" in response.json()["detail"]
    assert Feedback.objects.count() == 0


def test_feedback_on_another_principals_or_unknown_prediction_is_404(
    key_client, other_user, make_key, client_for
):
    prediction = predict(key_client)
    other = client_for(make_key(other_user))

    assert feedback(other, prediction["prediction_id"], "setosa").status_code == 404
    assert feedback(key_client, uuid.uuid4(), "setosa").status_code == 404
    assert Feedback.objects.count() == 0
