"""The tutorial's clients, written as its code writes them, with only the base URL changed (and a
credential added): pydantic request models sent with every field, its polling loop, its stream
reader, its GraphQL operations and its demonstration routes, over real HTTP.
"""

import re
import time
from datetime import datetime

import orjson
import pytest
import requests
from pydantic import BaseModel

pytestmark = pytest.mark.e2e
SETOSA = [5.1, 3.5, 1.4, 0.2]
VIRGINICA = [6.9, 3.1, 5.4, 2.1]

# What ``datetime.fromisoformat`` reads on Python 3.10: its own isoformat() output.
PY310_ISOFORMAT = re.compile(
    r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d(:\d\d(\.\d{3}|\.\d{6})?)?([+-]\d\d:\d\d(:\d\d)?)?"
)


def fromisoformat_310(value: str) -> datetime:
    """``datetime.fromisoformat`` as Python 3.10 has it (it refuses ``Z``)."""
    assert PY310_ISOFORMAT.fullmatch(value), f"Python 3.10 cannot parse {value!r}"
    return datetime.fromisoformat(value)


# --- the tutorial's request models -----------------------------------------------------------


class PredictionRequest(BaseModel):
    input_data: list[float]
    model_version: str | None = None
    timeout: float | None = None


class BatchPredictionRequest(BaseModel):
    inputs: list[list[float]]
    model_version: str | None = None
    callback_url: str | None = None


class PredictionResponse(BaseModel):
    prediction: list[float]
    confidence: float
    model_version: str
    processing_time: float
    timestamp: str


@pytest.fixture(scope="module")
def base(server) -> str:
    return server.url("/api/v1")


@pytest.fixture(scope="module")
def key(instance) -> dict:
    return {"X-API-Key": instance.demo_key}


@pytest.fixture(scope="module")
def bearer(base, instance) -> dict:
    """A token from the tutorial's login, called with its query parameters."""
    response = requests.post(
        f"{base}/auth/login",
        params={"username": "demo", "password": instance.passwords["demo"]},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["token_type"] == "bearer"
    return {"Authorization": f"Bearer {body['access_token']}"}


def test_predict_with_every_optional_field_sent_as_null(base, key):
    request = PredictionRequest(input_data=SETOSA)

    response = requests.post(f"{base}/predict", json=request.model_dump(), headers=key, timeout=10)

    assert response.status_code == 200, response.text
    answer = PredictionResponse.model_validate(response.json())
    assert len(answer.prediction) == 3 and answer.confidence == max(answer.prediction)
    assert fromisoformat_310(answer.timestamp).utcoffset().total_seconds() == 0


def test_login_with_query_parameters_gives_a_working_bearer_token(base, bearer):
    response = requests.post(
        f"{base}/predict", json={"input_data": VIRGINICA}, headers=bearer, timeout=10
    )

    assert response.status_code == 200, response.text
    assert response.json()["label"] == "virginica"


def test_login_with_a_wrong_password_in_the_query_is_refused(base):
    response = requests.post(
        f"{base}/auth/login", params={"username": "demo", "password": "wrong"}, timeout=10
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"


def test_batch_polling_loop_reads_the_results_from_the_job(base, key):
    request = BatchPredictionRequest(inputs=[SETOSA, VIRGINICA, SETOSA])
    submitted = requests.post(
        f"{base}/predict/batch", json=request.model_dump(), headers=key, timeout=10
    )
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["job_id"]

    deadline = time.monotonic() + 60
    while True:
        status = requests.get(f"{base}/predict/batch/{job_id}", headers=key, timeout=10).json()
        if status["status"] == "completed" or time.monotonic() > deadline:
            break
        assert status["results"] is None
        time.sleep(0.2)

    assert status["status"] == "completed", status
    assert status["completed"] == 3
    fromisoformat_310(status["created_at"])
    fromisoformat_310(status["finished_at"])
    assert [r["input_index"] for r in status["results"]] == [0, 1, 2]
    assert [r["label"] for r in status["results"]] == ["setosa", "virginica", "setosa"]
    for row in status["results"]:
        assert row["confidence"] == max(row["prediction"])
    assert status["results_next"] is None


def test_stream_reader_sees_progress_and_the_prediction_in_data_lines(base, key):
    events = []
    with requests.post(
        f"{base}/predict/stream",
        json=PredictionRequest(input_data=SETOSA).model_dump(),
        headers=key,
        stream=True,
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith(b"data: "):
                events.append(orjson.loads(line[len(b"data: ") :]))

    statuses = [event["status"] for event in events]
    assert statuses[0] == "started" and statuses[-1] == "completed"
    assert "processing" in statuses
    assert [e["progress"] for e in events if "step" in e] == sorted(
        e["progress"] for e in events if "step" in e
    )
    final = events[-1]
    assert final["progress"] == 100 and final["step"] == 1
    assert final["label"] == "setosa" and len(final["prediction"]) == 3
    fromisoformat_310(final["timestamp"])
    stored = requests.get(f"{base}/predict/{final['prediction_id']}", headers=key, timeout=10)
    assert stored.json()["prediction"] == final["prediction"]


@pytest.mark.parametrize(
    ("accept", "json_error"),
    [(None, True), ("application/json", True), ("text/event-stream", False)],
)
def test_stream_errors_before_it_starts_are_json_unless_only_events_are_asked(
    base, key, accept, json_error
):
    headers = key | ({"Accept": accept} if accept else {})

    response = requests.post(
        f"{base}/predict/stream", json={"input_data": [1, 2]}, headers=headers, timeout=10
    )

    assert response.status_code == 400
    if json_error:
        assert response.headers["Content-Type"] == "application/json"
        assert "4 features" in response.json()["detail"]
    else:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.text.startswith("event: error\ndata: ")


def graphql(server, query: str, headers: dict, **variables) -> dict:
    response = requests.post(
        server.url("/graphql"),
        json={"query": query, "variables": variables},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "errors" not in body, body["errors"]
    return body["data"]


def test_graphql_operations_as_the_tutorial_writes_them(server, key):
    created = graphql(
        server,
        """mutation Predict($input: PredictInput!) {
          predict(input: $input) { id prediction confidence modelVersion timestamp }
        }""",
        key,
        input={"inputData": SETOSA, "modelVersion": None},
    )["predict"]
    fromisoformat_310(created["timestamp"])

    found = graphql(
        server,
        "query One($id: ID!) { prediction(id: $id) { id confidence } }",
        key,
        id=created["id"],
    )["prediction"]
    assert found == {"id": created["id"], "confidence": created["confidence"]}

    job = graphql(
        server,
        """mutation Batch($input: BatchInput!) { predictBatch(input: $input) { id status } }""",
        key,
        input={"inputs": [SETOSA, VIRGINICA]},
    )["predictBatch"]
    deadline = time.monotonic() + 60
    query = """query Job($id: ID!) {
      batchJob(id: $id) { id status completed results { inputIndex prediction confidence label } }
    }"""
    while (state := graphql(server, query, key, id=job["id"])["batchJob"])["status"] != "completed":
        assert time.monotonic() < deadline, state
        assert state["results"] is None
        time.sleep(0.2)
    assert [r["label"] for r in state["results"]] == ["setosa", "virginica"]
    assert [r["inputIndex"] for r in state["results"]] == [0, 1]


def test_graphql_refuses_both_the_arguments_and_the_input_object(server, key):
    response = requests.post(
        server.url("/graphql"),
        json={
            "query": "mutation { predict(inputData: [1, 2, 3, 4], input: {inputData: [1, 2, 3, 4]})"
            " { id } }"
        },
        headers=key,
        timeout=10,
    )

    (error,) = response.json()["errors"]
    assert "either inputData or input" in error["message"]


def test_health_and_json_metrics_under_the_base_url(base, key):
    health = requests.get(f"{base}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "healthy"
    fromisoformat_310(health.json()["timestamp"])

    metrics = requests.get(f"{base}/metrics", headers=key, timeout=10)

    assert metrics.status_code == 200
    body = metrics.json()
    assert body["total_requests"] == body["request_count"]
    assert body["average_response_time"] == body["average_duration"]
    assert body["total_predictions"] >= 1


def test_fixed_version_routes(base, key):
    for label in ("v1", "v2"):
        response = requests.post(
            f"{base}/predict/{label}",
            json={"input_data": SETOSA, "model_version": None},
            headers=key,
            timeout=10,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model_version"] == label
        assert response.json()["routing"] == "explicit"


def test_secure_route_takes_only_a_jwt_and_api_key_routes_only_a_key(base, key, bearer):
    row = {"input_data": SETOSA}
    assert requests.post(f"{base}/predict/secure", json=row, headers=bearer, timeout=10).ok
    refused = requests.post(f"{base}/predict/secure", json=row, headers=key, timeout=10)
    assert refused.status_code == 401 and refused.json()["code"] == "not_authenticated"

    assert requests.post(f"{base}/predict/api-key", json=row, headers=key, timeout=10).ok
    refused = requests.post(f"{base}/predict/api-key", json=row, headers=bearer, timeout=10)
    assert refused.status_code == 401

    batch = {"inputs": [SETOSA]}
    accepted = requests.post(f"{base}/predict/batch/api-key", json=batch, headers=key, timeout=10)
    assert accepted.status_code == 202
    refused = requests.post(f"{base}/predict/batch/api-key", json=batch, headers=bearer, timeout=10)
    assert refused.status_code == 401


@pytest.mark.parametrize("path", ["predict/cached", "predict/lru-cached"])
def test_cached_routes_answer_a_repeated_row_from_the_cache(base, key, path):
    row = {"input_data": [5.0, 3.4, 1.5, 0.2], "model_version": "v1"}

    first = requests.post(f"{base}/{path}", json=row, headers=key, timeout=10).json()
    second = requests.post(f"{base}/{path}", json=row, headers=key, timeout=10).json()

    assert second["cached"] is True
    assert second["prediction"] == first["prediction"]
    assert second["prediction_id"] != first["prediction_id"]  # each answer is still stored


def test_async_route_answers_with_every_version_in_parallel(base, key):
    response = requests.post(
        f"{base}/predict/async", json={"input_data": SETOSA}, headers=key, timeout=10
    )

    assert response.status_code == 200, response.text
    body = response.json()
    parallel = {p["model_version"]: p for p in body["parallel_predictions"]}
    assert set(parallel) == {"v1", "v2"}
    assert all(p["label"] == "setosa" for p in parallel.values())
    assert parallel[body["model_version"]]["prediction"] == pytest.approx(body["prediction"])


def test_logged_route_predicts_like_predict(base, key):
    response = requests.post(
        f"{base}/predict/logged", json={"input_data": SETOSA}, headers=key, timeout=10
    )

    assert response.status_code == 200 and response.json()["label"] == "setosa"
