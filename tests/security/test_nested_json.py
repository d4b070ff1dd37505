"""JSON nested deeper than any request needs is a 400 that says so, on every face.

orjson parses up to 1,024 levels; a document under that depth would reach code that walks it
recursively (DRF's JSONField, GraphQL's decoding) and run out of stack.
"""

import json

import pytest

from mlplatform.jsondepth import MAX_JSON_DEPTH
from predictions.models import BatchJob, Prediction
from tests.security.conftest import IRIS, assert_error

REST_FACES = [
    "/api/v1/predict",
    "/api/v1/predict/ab-test",
    "/api/v1/predict/batch",
    "/api/v1/predict/stream",
]


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


def body_with(document: dict, depth: int) -> str:
    """``document`` as JSON, with its value "NESTED" replaced by lists ``depth`` deep."""
    return json.dumps(document).replace('"NESTED"', nested(depth))


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 1_000, 5_000])
@pytest.mark.parametrize("path", REST_FACES)
def test_a_deeply_nested_body_is_a_400_on_rest(alice, demo_models, path, depth):
    response = alice.generic(
        "POST", path, f'{{"input_data": {nested(depth)}}}', content_type="application/json"
    )

    body = assert_error(response, 400, "parse_error")
    assert "nested deeper than" in body["detail"] or "depth limit" in body["detail"]
    assert Prediction.objects.count() == 0
    assert BatchJob.objects.count() == 0


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_a_deeply_nested_body_is_a_400_on_v2(alice, demo_models, depth):
    tensor = {"name": "input", "shape": [1, 4], "datatype": "FP32", "data": "NESTED"}
    body = body_with({"inputs": [tensor]}, depth)

    response = alice.generic("POST", "/v2/models/iris/infer", body, content_type="application/json")

    assert response.status_code == 400
    assert "nested deeper than" in response.json()["error"] or "depth" in response.json()["error"]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize("depth", [1_000, 5_000])
def test_a_deeply_nested_body_is_a_400_on_graphql(alice, demo_models, depth):
    query = "mutation P($row: JSON!) { predict(inputData: $row) { predictionId } }"
    body = body_with({"query": query, "variables": {"row": "NESTED"}}, depth)

    response = alice.generic("POST", "/graphql", body, content_type="application/json")

    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert "nested deeper than" in error["message"] or "depth" in error["message"]
    assert Prediction.objects.count() == 0


def test_a_request_nested_as_deep_as_allowed_is_answered_on_its_merits(alice, demo_models):
    # A row wrapped in lists up to the limit: parsed, then refused by the endpoint's own rules.
    depth = MAX_JSON_DEPTH - 1
    row = "[" * (depth - 1) + ",".join(map(str, IRIS)) + "]" * (depth - 1)

    response = alice.generic(
        "POST", "/api/v1/predict", f'{{"input_data": {row}}}', content_type="application/json"
    )

    assert_error(response, 400, "invalid_input")
