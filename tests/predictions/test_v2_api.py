"""The V2 REST API in-process: health, metadata, readiness, inference, storage and errors.

Bodies are made by tritonclient's own encoder where binary tensors are involved; real HTTP with
the client libraries is in tests/e2e/test_v2_clients.py.
"""

import gzip
import json
import zlib

import numpy as np
import pytest
import tritonclient.http as httpclient
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from mlplatform.conf import DEFAULTS
from predictions.catalogue.artifacts import artifact_save
from predictions.catalogue.versions import model_save, registry_touch
from predictions.demo.datasets import load_dataset
from predictions.models import MLModel, ModelVersion, Prediction, ShadowPrediction
from predictions.services.shadow import shadows_join
from predictions.v2 import views

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], "f4")
pytestmark = pytest.mark.usefixtures("demo_models")


def infer_body(rows: np.ndarray, *, binary=True, outputs=None, datatype="FP32", **kwargs):
    """(body, Inference-Header-Content-Length or None) exactly as tritonclient sends them."""
    tensor = httpclient.InferInput("input", list(rows.shape), datatype)
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return httpclient.InferenceServerClient.generate_request_body(
        [tensor], outputs=outputs, **kwargs
    )


def post_infer(client, path, body: bytes, header_length=None, **headers):
    if header_length is not None:
        headers["HTTP_INFERENCE_HEADER_CONTENT_LENGTH"] = str(header_length)
    return client.post(path, body, content_type="application/octet-stream", **headers)


def infer(client, rows=IRIS_ROWS, path="/v2/models/iris/versions/v1/infer", **kwargs):
    return post_infer(client, path, *infer_body(rows, **kwargs))


def parsed(response) -> httpclient.InferResult:
    assert response.status_code == 200, response.content
    length = response.headers.get("Inference-Header-Content-Length")
    return httpclient.InferenceServerClient.parse_response_body(
        response.content, header_length=int(length) if length else None
    )


def texts(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def json_infer(client, document, path="/v2/models/iris/versions/v1/infer", **headers):
    return client.post(path, json.dumps(document), content_type="application/json", **headers)


def iris_json(data, shape=(1, 4), **extra) -> dict:
    return {
        "inputs": [{"name": "input", "shape": list(shape), "datatype": "FP32", "data": data}],
        **extra,
    }


# --- server -----------------------------------------------------------------------------------


def test_server_metadata_names_the_binary_tensor_extension_without_credentials(client):
    response = client.get("/v2")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "mlplatform" and body["version"]
    assert body["extensions"] == [
        "binary_tensor_data",
        "parameters",
        "model_configuration",
        "model_repository",
        "statistics",
    ]


def test_liveness_and_readiness_answer_200_with_a_body_saying_so(client):
    live, ready = client.get("/v2/health/live"), client.get("/v2/health/ready")

    assert (live.status_code, live.json()) == (200, {"live": True})
    assert (ready.status_code, ready.json()) == (200, {"ready": True})


def test_readiness_is_503_when_no_model_can_serve(client):
    ModelVersion.objects.update(status=ModelVersion.Status.RETIRED)
    registry_touch()

    response = client.get("/v2/health/ready")

    assert response.status_code == 503
    assert response.json()["ready"] is False
    assert "no model has an active version" in response.json()["error"]


def test_an_unknown_path_under_v2_answers_404_in_the_protocols_shape(client):
    response = client.get("/v2/models/iris/versions/v1/explain")

    assert response.status_code == 404
    assert response.json() == {"error": "No route matches '/v2/models/iris/versions/v1/explain'."}


def test_a_post_to_an_unknown_v2_path_is_a_404_not_a_csrf_page():
    browser_like = Client(enforce_csrf_checks=True)

    response = browser_like.post("/v2/models/iris/explain", b"{}", content_type="application/json")

    assert response.status_code == 404
    assert response.json() == {"error": "No route matches '/v2/models/iris/explain'."}


# --- errors answered before (or after) the views: still the protocol's shape ---------------------


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (
            "/v2/models/iris/infer",
            {"error": "Request body is larger than the limit of 1000 bytes."},
        ),
        (
            "/api/v1/predict",
            {
                "detail": "Request body is larger than the limit of 1000 bytes.",
                "code": "request_too_large",
                "request_id": "req-1",
            },
        ),
    ],
    ids=["v2", "rest"],
)
def test_a_declared_length_over_the_limit_is_a_413_in_the_shape_of_the_path(
    key_client, settings, path, body
):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BODY_BYTES": 1000}

    response = key_client.post(
        path, b"", content_type="application/json", CONTENT_LENGTH="5000", HTTP_X_REQUEST_ID="req-1"
    )

    assert response.status_code == 413
    assert response.json() == body
    assert response["X-Request-ID"] == "req-1"
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v2/models/iris/infer", {"error": "Content-Length is not a number."}),
        (
            "/api/v1/predict",
            {
                "detail": "Content-Length is not a number.",
                "code": "invalid_header",
                "request_id": "req-1",
            },
        ),
    ],
    ids=["v2", "rest"],
)
def test_a_content_length_that_is_not_a_number_is_a_400_in_the_shape_of_the_path(
    key_client, path, body
):
    response = key_client.post(
        path, b"", content_type="application/json", CONTENT_LENGTH="lots", HTTP_X_REQUEST_ID="req-1"
    )

    assert response.status_code == 400
    assert response.json() == body
    assert response["X-Request-ID"] == "req-1"


def test_an_unexpected_failure_in_a_v2_view_is_a_500_in_the_protocols_shape(
    key_client, monkeypatch
):
    def broken(**kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(views, "route", broken)
    key_client.raise_request_exception = False

    response = key_client.get("/v2/models/iris", HTTP_X_REQUEST_ID="req-1")

    assert response.status_code == 500
    assert response.json() == {"error": "Internal server error."}
    assert response["X-Request-ID"] == "req-1"


# --- models -----------------------------------------------------------------------------------


def test_model_metadata_gives_platform_versions_and_tensors(key_client):
    response = key_client.get("/v2/models/iris/versions/v1")

    assert response.status_code == 200
    body = response.json()
    assert body["name"] == "iris"
    assert body["versions"] == ["v1", "v2"]
    assert body["platform"] == "mlplatform_numpy"
    assert body["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert body["outputs"] == [
        {"name": "prediction", "datatype": "FP32", "shape": [-1, 3]},
        {"name": "label", "datatype": "BYTES", "shape": [-1]},
        {"name": "confidence", "datatype": "FP32", "shape": [-1]},
        {"name": "prediction_id", "datatype": "BYTES", "shape": [-1]},
    ]
    assert body["parameters"]["labels"] == ["setosa", "versicolor", "virginica"]
    assert body["parameters"]["version"] == "v1"


def test_model_metadata_without_a_version_describes_the_callers_version(key_client):
    body = key_client.get("/v2/models/digits").json()

    assert body["parameters"]["version"] == "v1"  # the only version with traffic weight
    assert body["inputs"][0]["shape"] == [-1, 64]
    assert key_client.get("/v2/models/digits/versions/v1-onnx").json()["platform"] == (
        "onnxruntime_onnx"
    )


def test_a_retired_version_is_not_listed_and_answers_404(key_client):
    ModelVersion.objects.filter(model__name="iris", label="v1").update(status="retired")
    registry_touch()

    assert key_client.get("/v2/models/iris").json()["versions"] == ["v2"]
    response = key_client.get("/v2/models/iris/versions/v1")
    assert response.status_code == 404
    assert response.json() == {"error": "Version 'v1' of model 'iris' is retired."}


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/v2/models/nope", "Unknown model 'nope'"),
        ("/v2/models/nope/config", "Unknown model 'nope'"),
        ("/v2/models/nope/stats", "Unknown model 'nope'"),
        ("/v2/models/iris/versions/v9", "has no version 'v9'; versions: v1, v2"),
        ("/v2/models/iris/versions/v9/config", "has no version 'v9'"),
        ("/v2/models/iris/versions/v9/stats", "has no version 'v9'"),
    ],
)
def test_unknown_models_and_versions_answer_404_with_an_error(key_client, path, message):
    response = key_client.get(path)

    assert response.status_code == 404
    assert message in response.json()["error"]


def test_model_readiness_answers_200_with_a_body_without_credentials(client):
    response = client.get("/v2/models/iris/versions/v2/ready")

    assert response.status_code == 200
    assert response.json() == {"name": "iris", "version": "v2", "ready": True}
    assert client.get("/v2/models/digits/ready").json() == {"name": "digits", "ready": True}
    assert client.get("/v2/models/digits/versions/v1-onnx/ready").status_code == 200


def break_artifact(model: str, label: str) -> None:
    # Only possible behind the admin's back (uploads are validated), yet it must not be a 500.
    name, sha256 = artifact_save(b"broken")
    ModelVersion.objects.filter(model__name=model, label=label).update(
        artifact=name, checksum=sha256
    )
    registry_touch()


def test_a_probe_learns_ready_or_not_and_nothing_else(client):
    ModelVersion.objects.filter(model__name="iris", label="v1").update(status="retired")
    break_artifact("digits", "v1-onnx")
    ModelVersion.objects.filter(model__name="breast-cancer").update(status="retired")
    registry_touch()

    answers = {
        path: client.get(path)
        for path in (
            "/v2/models/nope/ready",
            "/v2/models/iris/versions/v9/ready",
            "/v2/models/iris/versions/v1/ready",  # retired
            "/v2/models/digits/versions/v1-onnx/ready",  # its artifact does not load
            "/v2/models/breast-cancer/ready",  # nothing left to serve
        )
    }

    assert {path: r.status_code for path, r in answers.items()} == dict.fromkeys(answers, 404)
    assert answers["/v2/models/nope/ready"].json() == {"error": "Model 'nope' is not ready."}
    assert answers["/v2/models/iris/versions/v1/ready"].json() == {
        "error": "Version 'v1' of model 'iris' is not ready."
    }
    assert answers["/v2/models/iris/versions/v9/ready"].json() == {
        "error": "Version 'v9' of model 'iris' is not ready."
    }
    assert answers["/v2/models/digits/versions/v1-onnx/ready"].json() == {
        "error": "Version 'v1-onnx' of model 'digits' is not ready."
    }


def test_without_a_version_a_model_is_ready_only_if_every_version_of_its_split_loads(client):
    assert client.get("/v2/models/iris/ready").status_code == 200

    break_artifact("iris", "v1")  # iris splits its traffic between v1 and v2

    assert client.get("/v2/models/iris/ready").status_code == 404
    assert client.get("/v2/models/iris/versions/v2/ready").status_code == 200


def test_a_probe_ignores_credentials_even_bad_ones(client):
    response = client.get("/v2/models/iris/ready", HTTP_X_API_KEY="mlp_not-a-key")

    assert (response.status_code, response.json()["ready"]) == (200, True)
    assert client.get("/v2/models/iris/ready", HTTP_AUTHORIZATION="Bearer x.y.z").status_code == 200


def test_probes_do_not_count_against_the_rate_limit(key_client, client, settings):
    settings.PLATFORM = {
        **settings.PLATFORM,
        "RATE_LIMITS": {**DEFAULTS["RATE_LIMITS"], "api": "2/m"},
    }

    probes = [key_client.get("/v2/models/iris/ready") for _ in range(5)]
    probes += [client.get("/v2/models/iris/versions/v1/ready") for _ in range(5)]

    assert [r.status_code for r in probes] == [200] * 10
    assert all("X-RateLimit-Limit" not in r for r in probes)
    metadata = [key_client.get("/v2/models/iris") for _ in range(3)]
    assert [r.status_code for r in metadata] == [200, 200, 429]
    assert metadata[0]["X-RateLimit-Limit"] == "2"


def test_a_version_whose_artifact_no_longer_loads_is_unavailable_in_the_index(key_client, client):
    break_artifact("iris", "v1")

    assert client.get("/v2/models/iris/versions/v1/ready").status_code == 404
    index = key_client.post("/v2/repository/index", {}, format="json").json()
    entry = next(e for e in index if (e["name"], e.get("version")) == ("iris", "v1"))
    assert entry["state"] == "UNAVAILABLE"
    assert "Version 'v1' of model 'iris' cannot be loaded" in entry["reason"]
    assert "not a .npz archive" in entry["reason"]


def test_inference_on_a_version_that_no_longer_loads_is_a_503_not_a_500(key_client):
    break_artifact("iris", "v1")

    response = infer(key_client)

    assert response.status_code == 503
    assert "Version 'v1' of model 'iris' cannot be loaded" in response.json()["error"]
    assert Prediction.objects.count() == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v2/models"),
        ("get", "/v2/models/iris"),
        ("get", "/v2/models/iris/versions/v1"),
        ("get", "/v2/models/iris/config"),
        ("get", "/v2/models/stats"),
        ("get", "/v2/models/iris/stats"),
        ("get", "/v2/models/iris/versions/v1/stats"),
        ("post", "/v2/repository/index"),
        ("post", "/v2/repository/models/iris/load"),
        ("post", "/v2/models/iris/infer"),
    ],
)
def test_model_endpoints_other_than_readiness_need_credentials(client, method, path):
    response = getattr(client, method)(path)

    assert response.status_code == 401
    assert response.json() == {"error": "Authentication credentials were not provided."}
    assert "ApiKey" in response["WWW-Authenticate"]


# --- the model list, the repository index and statistics ------------------------------------


def test_the_model_list_names_the_models_with_a_version_to_serve(key_client):
    assert key_client.get("/v2/models").json() == {"models": ["breast-cancer", "digits", "iris"]}

    ModelVersion.objects.filter(model__name="breast-cancer").update(status="retired")
    registry_touch()

    assert key_client.get("/v2/models").json() == {"models": ["digits", "iris"]}


def index(client, body=b"", **headers):
    return client.post("/v2/repository/index", body, content_type="application/json", **headers)


def test_the_repository_index_lists_every_version_with_its_state(key_client):
    ModelVersion.objects.filter(model__name="iris", label="v1").update(status="retired")
    ModelVersion.objects.filter(model__name="digits", label="v1-onnx").update(status="staged")
    registry_touch()

    response = index(key_client)

    assert response.status_code == 200
    entries = {(e["name"], e["version"]): (e["state"], e["reason"]) for e in response.json()}
    assert entries == {
        ("breast-cancer", "v1"): ("READY", ""),
        ("digits", "v1"): ("READY", ""),
        ("digits", "v1-onnx"): ("READY", ""),  # staged: served to requests that name it
        ("iris", "v1"): ("UNAVAILABLE", "retired"),
        ("iris", "v2"): ("READY", ""),
    }
    ready = index(key_client, b'{"ready": true}').json()
    assert [(e["name"], e["version"]) for e in ready] == [
        ("breast-cancer", "v1"),
        ("digits", "v1"),
        ("digits", "v1-onnx"),
        ("iris", "v2"),
    ]
    assert index(key_client, b"{}").json() == response.json()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"ready": "yes"}', "Invalid value for 'ready': expected a boolean"),
        (b"[true]", "the body must be a JSON object"),
        (b'{"ready": tru', "the body is not valid JSON"),
    ],
)
def test_a_malformed_index_request_is_a_400_that_says_why(key_client, body, message):
    response = index(key_client, body)

    assert response.status_code == 400
    assert message in response.json()["error"]


@pytest.mark.parametrize("action", ["load", "unload"])
def test_loading_and_unloading_models_is_not_supported(key_client, action):
    response = key_client.post(f"/v2/repository/models/iris/{action}", {}, format="json")

    assert response.status_code == 501
    assert response.json()["error"].startswith(f"Model {action} is not supported")
    assert ModelVersion.objects.filter(model__name="iris", status="active").count() == 2


def stats(client, path="/v2/models/iris/versions/v1/stats") -> list[dict]:
    response = client.get(path)
    assert response.status_code == 200, response.content
    return response.json()["model_stats"]


ZERO = {"count": 0, "ns": 0}


def test_statistics_count_and_time_the_stored_predictions_of_a_version(key_client, user):
    (before,) = stats(key_client)
    assert before == {
        "name": "iris",
        "version": "v1",
        "last_inference": 0,
        "inference_count": 0,
        "execution_count": 0,
        "inference_stats": dict.fromkeys(
            [
                "success",
                "fail",
                "queue",
                "compute_input",
                "compute_infer",
                "compute_output",
                "cache_hit",
                "cache_miss",
            ],
            ZERO,
        ),
        "batch_stats": [],
    }

    parsed(infer(key_client))  # three rows
    rest = key_client.post(
        "/api/v1/predict",
        {"input_data": [5.1, 3.5, 1.4, 0.2], "model_version": "v1"},
        format="json",
    )
    assert rest.status_code == 200

    (after,) = stats(key_client)
    stored = Prediction.objects.filter(model_version__label="v1", model_version__model__name="iris")
    assert after["inference_count"] == 4
    assert after["inference_stats"]["success"] == {
        "count": 4,
        "ns": round(sum(p.processing_time for p in stored) * 1e9),
    }
    latest = max(p.created_at for p in stored)
    assert after["last_inference"] == round(latest.timestamp() * 1000)
    for unmeasured in ("fail", "queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][unmeasured] == ZERO
    assert after["execution_count"] == 0 and after["batch_stats"] == []
    (v2,) = stats(key_client, "/v2/models/iris/versions/v2/stats")
    assert v2["inference_count"] == 0


def test_cache_hits_count_apart_from_inferences(key_client):
    iris = MLModel.objects.get(name="iris")
    iris.cache_ttl = 60
    model_save(model=iris)
    body = {"input_data": [5.1, 3.5, 1.4, 0.2], "model_version": "v1"}
    answers = [key_client.post("/api/v1/predict", body, format="json").json() for _ in range(3)]
    assert [a["cached"] for a in answers] == [False, True, True]

    (stat,) = stats(key_client)

    hits = Prediction.objects.filter(cached=True)
    assert stat["inference_count"] == 1
    assert stat["inference_stats"]["success"]["count"] == 3
    assert stat["inference_stats"]["cache_hit"] == {
        "count": 2,
        "ns": round(sum(p.processing_time for p in hits) * 1e9),
    }
    assert stat["inference_stats"]["cache_miss"] == ZERO


def test_statistics_cover_a_models_versions_or_every_model_retired_ones_left_out(key_client):
    ModelVersion.objects.filter(model__name="iris", label="v1").update(status="retired")
    registry_touch()

    assert [s["version"] for s in stats(key_client, "/v2/models/iris/stats")] == ["v2"]
    every = stats(key_client, "/v2/models/stats")
    assert [(s["name"], s["version"]) for s in every] == [
        ("breast-cancer", "v1"),
        ("digits", "v1"),
        ("digits", "v1-onnx"),
        ("iris", "v2"),
    ]
    response = key_client.get("/v2/models/iris/versions/v1/stats")
    assert response.status_code == 404
    assert response.json() == {"error": "Version 'v1' of model 'iris' is retired."}


def test_statistics_are_the_callers_own_and_everyones_for_staff(
    user, other_user, staff, make_key, client_for
):
    alice, bob, carol = (client_for(make_key(u)) for u in (user, other_user, staff))
    parsed(infer(alice))  # three rows
    parsed(infer(bob, rows=IRIS_ROWS[:1]))

    assert stats(alice)[0]["inference_count"] == 3
    assert stats(bob)[0]["inference_count"] == 1
    assert stats(carol)[0]["inference_count"] == 4


def test_statistics_need_the_read_scope(user, make_key, client_for):
    client = client_for(make_key(user, scopes=["predict"]))

    response = client.get("/v2/models/stats")

    assert response.status_code == 403
    assert response.json() == {"error": "This API key lacks the 'read' scope."}


def test_statistics_of_every_model_read_the_predictions_in_one_query(key_client):
    parsed(infer(key_client))
    key_client.get("/v2/models/stats")  # the registry is read

    with CaptureQueriesContext(connection) as queries:
        every = stats(key_client, "/v2/models/stats")

    assert len(every) == 5
    reads = [q["sql"] for q in queries if "predictions_prediction" in q["sql"]]
    assert len(reads) == 1
    assert "GROUP BY" in reads[0]


# --- inference --------------------------------------------------------------------------------


def test_binary_inference_answers_every_output_and_stores_each_row(key_client, user):
    response = infer(key_client, request_id="batch-7")

    result = parsed(response)
    assert response["Content-Type"] == "application/octet-stream"
    body = result.get_response()
    assert (body["model_name"], body["model_version"], body["id"]) == ("iris", "v1", "batch-7")
    assert body["parameters"]["routing"] == "explicit"
    probabilities = result.as_numpy("prediction")
    assert probabilities.shape == (3, 3) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    assert texts(result.as_numpy("label")) == ["setosa", "virginica", "versicolor"]
    np.testing.assert_allclose(result.as_numpy("confidence"), probabilities.max(axis=1))
    ids = texts(result.as_numpy("prediction_id"))
    stored = {str(p.pk): p for p in Prediction.objects.filter(pk__in=ids)}
    assert len(stored) == 3
    for i, prediction_id in enumerate(ids):
        row = stored[prediction_id]
        assert row.owner == user and row.model_version.label == "v1"
        assert row.input == pytest.approx(IRIS_ROWS[i].tolist())
        assert row.output == pytest.approx(probabilities[i].tolist())
        assert row.label == texts(result.as_numpy("label"))[i]
        assert row.routing == "explicit" and row.request_id == response["X-Request-ID"]


def test_a_stored_row_reads_back_through_the_rest_api(key_client):
    result = parsed(infer(key_client, IRIS_ROWS[:1]))
    prediction_id = texts(result.as_numpy("prediction_id"))[0]

    response = key_client.get(f"/api/v1/predict/{prediction_id}")

    assert response.status_code == 200
    assert response.json()["label"] == "setosa"
    assert response.json()["prediction"] == pytest.approx(result.as_numpy("prediction")[0])


def test_v2_and_the_rest_api_give_the_same_answer_for_the_same_row(key_client):
    for version in ("v1", "v2"):
        rest = key_client.post(
            "/api/v1/predict",
            {"input_data": IRIS_ROWS[1].tolist(), "model": "iris", "model_version": version},
            format="json",
        ).json()
        result = parsed(
            infer(key_client, IRIS_ROWS[1:2], path=f"/v2/models/iris/versions/{version}/infer")
        )

        assert result.as_numpy("prediction")[0].tolist() == pytest.approx(rest["prediction"])
        assert texts(result.as_numpy("label")) == [rest["label"]]


def test_json_tensors_flat_or_nested_give_json_outputs(key_client):
    flat = json_infer(key_client, iris_json(IRIS_ROWS.ravel().tolist(), shape=(3, 4), id="x"))
    nested = json_infer(key_client, iris_json(IRIS_ROWS.tolist(), shape=(3, 4)))

    assert flat.status_code == nested.status_code == 200
    assert flat["Content-Type"] == "application/json"
    assert "Inference-Header-Content-Length" not in flat
    assert flat.json()["id"] == "x" and "id" not in nested.json()
    outputs = {o["name"]: o for o in flat.json()["outputs"]}
    assert outputs["prediction"]["shape"] == [3, 3] and len(outputs["prediction"]["data"]) == 9
    assert outputs["label"]["data"] == ["setosa", "virginica", "versicolor"]
    assert [o["data"] for o in flat.json()["outputs"][:3]] == [
        o["data"] for o in nested.json()["outputs"][:3]
    ]


def test_the_json_input_is_stored_as_sent(key_client):
    json_infer(key_client, iris_json([5.1, 3.5, 1.4, 0.2]))

    assert Prediction.objects.get().input == [5.1, 3.5, 1.4, 0.2]


def test_only_the_requested_outputs_are_sent_each_binary_or_not_as_asked(key_client):
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("confidence", binary_data=True),
    ]

    response = infer(key_client, outputs=outputs)

    result = parsed(response)
    header = json.loads(response.content[: int(response["Inference-Header-Content-Length"])])
    assert [o["name"] for o in header["outputs"]] == ["label", "confidence"]
    assert header["outputs"][0]["data"] == ["setosa", "virginica", "versicolor"]
    assert header["outputs"][1]["parameters"]["binary_data_size"] == 12
    assert result.as_numpy("confidence").shape == (3,)
    assert Prediction.objects.count() == 3  # rows are stored whatever the client reads


def test_without_a_version_the_models_traffic_split_serves(key_client):
    result = parsed(infer(key_client, path="/v2/models/iris/infer"))

    assert result.get_response()["parameters"]["routing"] == "split"
    assert result.get_response()["model_version"] in ("v1", "v2")


def test_latest_names_the_newest_serving_version(key_client):
    result = parsed(infer(key_client, path="/v2/models/iris/versions/latest/infer"))

    assert result.get_response()["model_version"] == "v2"
    assert result.get_response()["parameters"]["routing"] == "latest"


@pytest.mark.parametrize("datatype", ["FP64", "FP16", "INT32", "UINT8"])
def test_other_real_datatypes_are_converted(key_client, datatype):
    dtype = {"FP64": "<f8", "FP16": "<f2", "INT32": "<i4", "UINT8": "u1"}[datatype]

    response = infer(key_client, np.array([[5, 3, 1, 0]], dtype=dtype), datatype=datatype)

    assert texts(parsed(response).as_numpy("label")) == ["setosa"]


def test_a_jwt_works_as_for_the_rest_api(user, client):
    token = client.post(
        "/api/v1/auth/token",
        {"username": "alice", "password": "alice-pass-123"},
        content_type="application/json",
    ).json()["access"]

    body, header_length = infer_body(IRIS_ROWS)

    response = post_infer(
        client,
        "/v2/models/iris/versions/v1/infer",
        body,
        header_length,
        HTTP_AUTHORIZATION=f"Bearer {token}",
    )

    assert response.status_code == 200


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_compressed_request_bodies_are_accepted(key_client, encoding):
    body, header_length = infer_body(IRIS_ROWS)
    compressed = gzip.compress(body) if encoding == "gzip" else zlib.compress(body)

    response = post_infer(
        key_client,
        "/v2/models/iris/versions/v1/infer",
        compressed,
        header_length,
        HTTP_CONTENT_ENCODING=encoding,
    )

    assert texts(parsed(response).as_numpy("label")) == ["setosa", "virginica", "versicolor"]


# --- what a client does wrong -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("document", "status", "message"),
    [
        (iris_json([1, 2, 3], shape=(1, 3)), 400, "input 'input': expected 4 features, got 3"),
        (iris_json([1, 2, "three", 4]), 400, "input 'input'.data[2] must be a number, got string"),
        (iris_json([1, 2, True, 4]), 400, "data[2] must be a number, got boolean"),
        (iris_json([1, 2, 3]), 400, "shape [1, 4] holds 4 values but data has 3"),
        (iris_json([1e39, 2, 3, 4]), 400, "input 'input'[0][0] is not a finite number"),
        (iris_json([], shape=(0, 4)), 400, "must not be empty"),
        (
            {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "BF16", "data": [1] * 4}]},
            400,
            "datatype must be one of",
        ),
        (
            {"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
            400,
            "unknown input 'x'",
        ),
        (
            iris_json([1, 2, 3, 4], outputs=[{"name": "probabilities"}]),
            400,
            "unknown output 'probabilities'",
        ),
        (iris_json([1, 2, 3, 4], parameters={"timeout": 0}), 400, "parameters.timeout"),
        ({"inputs": "nope"}, 400, "inputs must be a non-empty array"),
    ],
)
def test_bad_json_requests_get_a_4xx_error_and_store_nothing(key_client, document, status, message):
    response = json_infer(key_client, document)

    assert response.status_code == status, response.content
    assert set(response.json()) == {"error"}
    assert message in response.json()["error"]
    assert Prediction.objects.count() == 0


def test_bool_tensors_are_refused_as_booleans_are_in_the_rest_api(key_client):
    document = iris_json([True, False, True, True])
    document["inputs"][0]["datatype"] = "BOOL"

    response = json_infer(key_client, document)

    assert response.status_code == 400
    assert "datatype BOOL is not accepted" in response.json()["error"]


@pytest.mark.parametrize("raw", ['{"inputs": [NaN]}', '{"inputs": [1e400]}', "{", "", "[1, 2]"])
def test_malformed_json_and_non_finite_tokens_are_a_400(key_client, raw):
    response = key_client.post("/v2/models/iris/infer", raw, content_type="application/json")

    assert response.status_code == 400
    assert response.json()["error"]


def test_nan_in_binary_data_is_refused_by_position(key_client):
    rows = IRIS_ROWS.copy()
    rows[2, 1] = np.nan

    response = infer(key_client, rows)

    assert response.status_code == 400
    assert response.json() == {"error": "input 'input'[2][1] is not a finite number"}
    assert Prediction.objects.count() == 0


def test_a_truncated_binary_body_is_a_400(key_client):
    body, header_length = infer_body(IRIS_ROWS)

    response = post_infer(key_client, "/v2/models/iris/infer", body[:-5], header_length)

    assert response.status_code == 400
    assert "truncated" in response.json()["error"]


def test_a_binary_body_without_its_header_length_is_a_400_that_says_so(key_client):
    body, _ = infer_body(IRIS_ROWS)

    response = post_infer(key_client, "/v2/models/iris/infer", body)

    assert response.status_code == 400
    assert "Inference-Header-Content-Length" in response.json()["error"]


def test_unknown_models_and_versions_answer_404_on_infer(key_client):
    assert infer(key_client, path="/v2/models/nope/infer").status_code == 404
    response = infer(key_client, path="/v2/models/iris/versions/v9/infer")
    assert response.status_code == 404
    assert "has no version 'v9'" in response.json()["error"]


def test_inference_needs_the_predict_scope(user, make_key, client_for):
    reader = client_for(make_key(user, scopes=["read"]))

    response = infer(reader)

    assert response.status_code == 403
    assert response.json() == {"error": "This API key lacks the 'predict' scope."}


def test_too_many_rows_are_refused_before_inference(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BATCH_JSON_ROWS": 2}

    response = infer(key_client)

    assert response.status_code == 400
    assert "has 3 rows; at most 2 are allowed" in response.json()["error"]


def test_a_decompressed_body_over_the_limit_is_a_413(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BODY_BYTES": 4096}
    body = gzip.compress(json.dumps(iris_json([1, 2, 3, 4], padding="x" * 10_000)).encode())

    response = key_client.post(
        "/v2/models/iris/infer",
        body,
        content_type="application/json",
        HTTP_CONTENT_ENCODING="gzip",
    )

    assert response.status_code == 413
    assert "4096 bytes" in response.json()["error"]


@pytest.mark.parametrize(("encoding", "status"), [("br", 415), ("gzip", 400)])
def test_unsupported_or_broken_compression_is_refused(key_client, encoding, status):
    response = key_client.post(
        "/v2/models/iris/infer",
        b"not compressed at all",
        content_type="application/json",
        HTTP_CONTENT_ENCODING=encoding,
    )

    assert response.status_code == status
    assert response.json()["error"]


def test_inference_past_the_timeout_parameter_answers_504(key_client):
    rows = np.tile(load_dataset("digits").X[:1].astype("f4"), (100, 1))
    body, length = infer_body(rows, timeout=1)  # one microsecond

    response = post_infer(key_client, "/v2/models/digits/versions/v1/infer", body, length)

    assert response.status_code == 504
    assert "timeout" in response.json()["error"]
    assert Prediction.objects.count() == 0


# --- traffic features and metrics ---------------------------------------------------------------


def test_every_row_of_a_tensor_is_copied_to_a_shadow_version(key_client, shadow_v3):
    result = parsed(infer(key_client))
    assert shadows_join()

    ids = texts(result.as_numpy("prediction_id"))
    shadows = ShadowPrediction.objects.filter(primary_id__in=ids, model_version=shadow_v3)
    assert shadows.count() == 3
    # v3 has v2's weights: it may disagree with v1, but it answered each row itself.
    assert all(len(s.output) == 3 and s.error == "" for s in shadows)
    assert Prediction.objects.count() == 3


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a Prometheus text exposition (0 when absent)."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_v2_requests_are_counted_in_the_same_metrics_as_rest_predictions(key_client, client):
    ok = {"model": "iris", "version": "v1", "routing": "explicit", "outcome": "ok"}
    refused = {**ok, "outcome": "invalid_input"}
    before = client.get("/metrics").content.decode()

    infer(key_client)  # three rows
    json_infer(key_client, iris_json([1, 2, 3], shape=(1, 3)))

    after = client.get("/metrics").content.decode()
    predictions = "mlplatform_predictions_total"
    assert metric(after, predictions, **ok) - metric(before, predictions, **ok) == 3
    assert metric(after, predictions, **refused) - metric(before, predictions, **refused) == 1
    http = "django_http_responses_total_by_status_view_method_total"
    assert metric(after, http, view="v2-version-infer", status="200") >= 1


# --- the ONNX demo version ----------------------------------------------------------------------


def test_the_onnx_and_numpy_digits_versions_agree_on_thousands_of_rows(key_client):
    X = load_dataset("digits").X
    rng = np.random.default_rng(1)
    rows = np.clip(X[rng.integers(0, len(X), 2000)] + rng.normal(0, 1, (2000, 64)), 0, 16)
    rows = rows.astype("f4")

    numpy_result = parsed(infer(key_client, rows, path="/v2/models/digits/versions/v1/infer"))
    onnx_result = parsed(infer(key_client, rows, path="/v2/models/digits/versions/v1-onnx/infer"))

    np.testing.assert_allclose(
        onnx_result.as_numpy("prediction"), numpy_result.as_numpy("prediction"), atol=1e-5
    )
    assert texts(onnx_result.as_numpy("label")) == texts(numpy_result.as_numpy("label"))
    assert Prediction.objects.filter(model_version__label="v1-onnx").count() == 2000
