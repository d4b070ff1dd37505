"""Idempotency-Key on POST /api/v1/predict: replay, conflicting reuse, scope per principal."""

from datetime import timedelta

import pytest
from django.utils import timezone

from predictions.models import IdempotencyRecord, Prediction

BODY = {"input_data": [5.1, 3.5, 1.4, 0.2], "model": "iris"}
pytestmark = pytest.mark.usefixtures("demo_models")


def predict(client, body=BODY, key="order-1"):
    return client.post("/api/v1/predict", body, format="json", HTTP_IDEMPOTENCY_KEY=key)


def test_the_same_key_and_body_replay_the_first_answer(key_client):
    first = predict(key_client)
    again = predict(key_client, body=dict(reversed(list(BODY.items()))))

    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert Prediction.objects.count() == 1


def test_the_same_key_with_another_body_is_refused(key_client):
    predict(key_client)

    response = predict(key_client, body={**BODY, "input_data": [6.0, 3.0, 4.8, 1.8]})

    assert response.status_code == 422
    assert response.json()["code"] == "idempotency_key_reused"
    assert Prediction.objects.count() == 1


def test_keys_belong_to_their_principal(key_client, other_user, make_key, client_for):
    first = predict(key_client).json()
    other = predict(client_for(make_key(other_user))).json()

    assert other["prediction_id"] != first["prediction_id"]
    assert Prediction.objects.count() == 2


def test_after_24_hours_a_key_starts_afresh(key_client):
    first = predict(key_client).json()
    IdempotencyRecord.objects.update(created_at=timezone.now() - timedelta(hours=25))

    later = predict(key_client).json()

    assert later["prediction_id"] != first["prediction_id"]
    assert IdempotencyRecord.objects.count() == 1


def test_a_failed_request_is_not_remembered(key_client):
    bad = predict(key_client, body={"input_data": [1, 2]})
    good = predict(key_client, body={"input_data": [1, 2, 3, 4]})

    assert bad.status_code == 400
    assert good.status_code == 200


@pytest.mark.parametrize("key", ["", "with space", "x" * 256, "tab\\there"])
def test_a_malformed_key_is_a_400(key_client, key):
    response = predict(key_client, key=key.replace("\\t", "\t"))

    assert response.status_code == 400
    assert response.json()["code"] == "invalid_idempotency_key"
    assert Prediction.objects.count() == 0
