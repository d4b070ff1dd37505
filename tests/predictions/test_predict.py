"""POST /api/v1/predict and reading stored predictions back."""

import json
import uuid

import pytest

from predictions.models import ModelVersion, Prediction

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
pytestmark = pytest.mark.usefixtures("demo_models")


def post(client, body, **headers):
    raw = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post("/api/v1/predict", raw, content_type="application/json", **headers)


def test_predict_answers_the_documented_fields_and_stores_the_prediction(key_client, user):
    response = post(key_client, {"input_data": IRIS_ROW, "model": "iris", "model_version": "v1"})

    assert response.status_code == 200
    body = response.json()
    assert set(body) >= {
        "prediction_id",
        "model",
        "model_version",
        "prediction",
        "label",
        "confidence",
        "processing_time",
        "timestamp",
        "cached",
    }
    assert body["model"] == "iris" and body["model_version"] == "v1"
    assert body["label"] == "setosa"
    assert len(body["prediction"]) == 3
    assert sum(body["prediction"]) == pytest.approx(1.0, abs=1e-5)
    assert body["confidence"] == pytest.approx(max(body["prediction"]))
    assert body["cached"] is False
    assert body["timestamp"].endswith("+00:00")  # what datetime.fromisoformat reads on 3.10
    stored = Prediction.objects.get(pk=body["prediction_id"])
    assert stored.owner == user
    assert stored.input == IRIS_ROW
    assert stored.label == "setosa"
    assert stored.model_version.label == "v1"
    assert stored.request_id == response["X-Request-ID"]


def test_a_stored_prediction_is_readable_at_once_with_get(key_client):
    created = post(key_client, {"input_data": IRIS_ROW}).json()

    response = key_client.get(f"/api/v1/predict/{created['prediction_id']}")

    assert response.status_code == 200
    assert response.json()["prediction"] == created["prediction"]
    assert response.json()["model_version"] == created["model_version"]


def test_without_model_the_default_model_serves(key_client):
    body = post(key_client, {"input_data": IRIS_ROW}).json()

    assert body["model"] == "iris"
    assert body["routing"] == "split"


def test_optional_fields_sent_as_null_mean_absent(key_client):
    """As a client built on pydantic models sends them: every optional field, null."""
    body = {"input_data": IRIS_ROW, "model": None, "model_version": None, "timeout": None}

    response = key_client.post("/api/v1/predict", body, format="json")
    split = key_client.post("/api/v1/predict/ab-test", body, format="json")

    assert response.status_code == 200, response.json()
    assert response.json()["model"] == "iris"  # the default model
    assert split.status_code == 200, split.json()
    assert split.json()["routing"] == "split"


def test_latest_is_the_newest_active_version(key_client):
    ModelVersion.objects.filter(model__name="iris", label="v2").update(status="retired")
    from predictions.catalogue.versions import registry_touch

    registry_touch()

    body = post(key_client, {"input_data": IRIS_ROW, "model_version": "latest"}).json()

    assert body["model_version"] == "v1"


def test_feature_values_may_be_given_by_name(key_client):
    names = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
    response = post(key_client, {"input_data": dict(zip(names, IRIS_ROW, strict=True))})

    assert response.status_code == 200
    assert response.json()["label"] == "setosa"


def test_a_request_id_sent_by_the_client_is_kept(key_client):
    response = post(key_client, {"input_data": IRIS_ROW}, HTTP_X_REQUEST_ID="trace-42")

    assert response["X-Request-ID"] == "trace-42"
    assert Prediction.objects.get(pk=response.json()["prediction_id"]).request_id == "trace-42"


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        ({"model": "iris"}, 400, "input_data: This field is required"),
        ({"input_data": []}, 400, "must not be empty"),
        ({"input_data": [1, 2, 3]}, 400, "expected 4 features, got 3"),
        ({"input_data": [1, 2, 3, 4, 5]}, 400, "expected 4 features, got 5"),
        ({"input_data": [1, 2, "three", 4]}, 400, "input_data[2] must be a number"),
        ({"input_data": [1, 2, "nan", 4]}, 400, "input_data[2] must be a number"),
        ({"input_data": [1, 2, True, 4]}, 400, "input_data[2] must be a number"),
        ({"input_data": [1, 2, None, 4]}, 400, "input_data[2] must be a number"),
        ({"input_data": [1, 2, [3], 4]}, 400, "input_data"),
        ({"input_data": "5.1,3.5,1.4,0.2"}, 400, "input_data"),
        ({"input_data": [1e39, 2, 3, 4]}, 400, "input_data[0] is not a finite number"),
        ({"input_data": {"sepal_length": 1}}, 400, "missing feature"),
        ({"input_data": IRIS_ROW, "model": "nope"}, 404, "Unknown model 'nope'"),
        ({"input_data": IRIS_ROW, "model_version": "v9"}, 404, "has no version 'v9'"),
        ({"input_data": IRIS_ROW, "timeout": 0}, 400, "timeout"),
        ({"input_data": IRIS_ROW, "timeout": "soon"}, 400, "timeout"),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_stores_nothing(key_client, body, status, message):
    response = post(key_client, body)

    assert response.status_code == status, response.content
    assert message in response.json()["detail"]
    assert response.json()["code"]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    "raw",
    [
        '{"input_data": [NaN, 1, 2, 3]}',
        '{"input_data": [Infinity, 1, 2, 3]}',
        '{"input_data": [-Infinity, 1, 2, 3]}',
        '{"input_data": [1e400, 1, 2, 3]}',
    ],
)
def test_nan_and_infinity_in_every_spelling_are_refused_by_name(key_client, raw):
    response = post(key_client, raw)

    assert response.status_code == 400
    assert "not finite numbers" in response.json()["detail"]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize("raw", ["{", "", "[1, 2", "\xff", "null", "[1, 2, 3, 4]"])
def test_malformed_or_non_object_json_is_a_400(key_client, raw):
    response = post(key_client, raw)

    assert response.status_code == 400
    assert response.json()["detail"]


def test_a_body_over_the_limit_is_refused_with_413(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BODY_BYTES": 1000}

    response = post(key_client, {"input_data": IRIS_ROW, "padding": "x" * 2000})

    assert response.status_code == 413
    assert response.json()["code"] == "request_too_large"
    assert "1000 bytes" in response.json()["detail"]


def test_inference_past_the_timeout_answers_504(key_client):
    # The digits MLP on one row takes far more than a microsecond.
    row = [float(i % 16) for i in range(64)]

    response = post(key_client, {"input_data": row, "model": "digits", "timeout": 0.000001})

    assert response.status_code == 504
    assert response.json()["code"] == "inference_timeout"
    assert Prediction.objects.count() == 0


def test_another_principals_prediction_answers_404(key_client, other_user, make_key, client_for):
    created = post(key_client, {"input_data": IRIS_ROW}).json()
    other = client_for(make_key(other_user))

    response = other.get(f"/api/v1/predict/{created['prediction_id']}")

    assert response.status_code == 404
    assert response.json()["code"] == "prediction_not_found"


def test_staff_see_everyones_predictions(key_client, staff, make_key, client_for):
    created = post(key_client, {"input_data": IRIS_ROW}).json()
    staff_client = client_for(make_key(staff))

    assert staff_client.get(f"/api/v1/predict/{created['prediction_id']}").status_code == 200
    listed = staff_client.get("/api/v1/predictions").json()["results"]
    assert [p["prediction_id"] for p in listed] == [created["prediction_id"]]


def test_unknown_or_malformed_prediction_ids_answer_404(key_client):
    assert key_client.get(f"/api/v1/predict/{uuid.uuid4()}").status_code == 404
    response = key_client.get("/api/v1/predict/not-a-uuid")
    assert response.status_code in (404, 405)
    assert response.json()["detail"]


def test_list_shows_only_own_predictions_filtered_and_paginated(
    key_client, other_user, make_key, client_for
):
    for version in ("v1", "v1", "v2"):
        post(key_client, {"input_data": IRIS_ROW, "model_version": version})
    post(client_for(make_key(other_user)), {"input_data": IRIS_ROW})

    everything = key_client.get("/api/v1/predictions").json()
    only_v1 = key_client.get("/api/v1/predictions", {"model": "iris", "version": "v1"}).json()
    first_page = key_client.get("/api/v1/predictions", {"page_size": 2}).json()

    assert everything["count"] == 3
    assert only_v1["count"] == 2
    assert {p["model_version"] for p in only_v1["results"]} == {"v1"}
    assert len(first_page["results"]) == 2 and first_page["next"]


def test_list_filters_by_time_and_refuses_a_bad_date(key_client):
    post(key_client, {"input_data": IRIS_ROW})

    later = key_client.get("/api/v1/predictions", {"created_after": "2999-01-01T00:00:00Z"})
    bad = key_client.get("/api/v1/predictions", {"created_after": "yesterday"})

    assert later.json()["count"] == 0
    assert bad.status_code == 400
    assert "created_after" in bad.json()["detail"]


def test_every_route_answers_with_or_without_a_trailing_slash(key_client):
    with_slash = key_client.post("/api/v1/predict/", {"input_data": IRIS_ROW}, format="json")
    assert with_slash.status_code == 200
    assert key_client.get("/api/v1/predictions/").status_code == 200
    assert key_client.get("/api/v1/models/").status_code == 200


def test_values_that_overflow_inside_the_model_are_refused(key_client):
    huge = 3e38  # finite as float32, but the first layer overflows
    response = post(key_client, {"input_data": [huge, huge, huge, huge], "model_version": "v1"})

    assert response.status_code == 400
    assert "overflow" in response.json()["detail"]
    assert Prediction.objects.count() == 0


WEIRD_BODIES = [
    "1" + "0" * 400,
    '{"input_data": [' + "1" + "0" * 400 + ", 1, 1, 1]}",
    '{"input_data": ' + "[" * 5000 + "]" * 5000 + "}",
    '{"input_data": [1, 2, 3, 4], "model": ["iris"]}',
    '{"input_data": [1, 2, 3, 4], "model_version": {"$ne": 1}}',
    '{"input_data": [1, 2, 3, 4], "timeout": 1e308}',
    '{"input_data": [1, 2, 3, 4], "timeout": -1}',
    '{"input_data": {"sepal_length": 1, "sepal_width": 2, "petal_length": 3, "petal_width": 4,'
    ' "extra": 5}}',
    '{"input_data": [[1, 2, 3, 4], [1, 2, 3, 4]]}',
    '{"input_data": [1, 2, 3, 4], "model": "' + "x" * 10000 + '"}',
    '{"input_data": [1, 2, 3, 4], "model": "../../etc/passwd"}',
    '{"input_data": [1, 2, 3, 4], "model": "iris\\u0000"}',
    '{"input_data": [1, 2, 3, 4]',
    '"just a string"',
    "true",
]


@pytest.mark.parametrize("raw", WEIRD_BODIES)
def test_no_body_of_any_kind_produces_a_500(key_client, raw):
    response = post(key_client, raw)

    assert 400 <= response.status_code < 500, response.content
    assert response.json()["detail"]
    assert Prediction.objects.count() == 0


def test_a_body_that_is_not_json_is_415(key_client):
    response = key_client.post("/api/v1/predict", "input_data=1", content_type="text/plain")

    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"
