"""End to end: the V2 protocol spoken by real client libraries to ``manage.py serve`` over HTTP.

tritonclient.http (binary tensors by default, JSON on request; health, metadata, readiness,
inference with and without a version; model configuration, the repository index and
statistics) and the KServe SDK's REST client and data models.
"""

import asyncio
from urllib.parse import urlsplit

import httpx
import kserve
import numpy as np
import pytest
import requests
import tritonclient.http as httpclient
from kserve.protocol.rest.v2_datamodels import ListModelsResponse
from tritonclient.utils import InferenceServerException

from predictions.demo.datasets import load_dataset

IRIS_ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], "f4")
IRIS_LABELS = ["setosa", "virginica", "versicolor"]
pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def triton(server):
    client = httpclient.InferenceServerClient(urlsplit(server.base_url).netloc)
    yield client
    client.close()


@pytest.fixture
def auth(instance):
    """Fresh headers for each call: tritonclient writes its own headers into the dict it gets."""
    return lambda: {"X-API-Key": instance.demo_key}


def texts(array: np.ndarray) -> list[str]:
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


def triton_input(rows: np.ndarray, binary: bool = True) -> httpclient.InferInput:
    tensor = httpclient.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    return tensor


def rest_predict(server, key: str, row, **body) -> dict:
    response = requests.post(
        server.url("/api/v1/predict"),
        json={"input_data": list(map(float, row)), **body},
        headers={"X-API-Key": key},
        timeout=10,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_health_and_server_metadata_through_tritonclient(triton):
    assert triton.is_server_live()
    assert triton.is_server_ready()
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "mlplatform"
    assert {"binary_tensor_data", "model_repository", "statistics"} <= set(metadata["extensions"])


def test_model_readiness_and_metadata_with_and_without_a_version(triton, auth):
    assert triton.is_model_ready("iris", headers=auth())
    assert triton.is_model_ready("digits", "v1-onnx", headers=auth())
    assert not triton.is_model_ready("iris", "v9", headers=auth())

    metadata = triton.get_model_metadata("iris", "v1", headers=auth())
    assert metadata["platform"] == "mlplatform_numpy"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
    assert [o["name"] for o in metadata["outputs"]] == [
        "prediction",
        "label",
        "confidence",
        "prediction_id",
    ]
    onnx = triton.get_model_metadata("digits", "v1-onnx", headers=auth())
    assert onnx["platform"] == "onnxruntime_onnx"
    assert triton.get_model_metadata("digits", headers=auth())["versions"] == ["v1", "v1-onnx"]


def test_readiness_answers_probes_without_credentials(triton):
    assert triton.is_model_ready("iris")
    assert triton.is_model_ready("iris", "v1")
    assert triton.is_model_ready("digits", "v1-onnx")
    assert not triton.is_model_ready("nope")
    assert not triton.is_model_ready("iris", "v9")
    with pytest.raises(InferenceServerException, match="Authentication credentials"):
        triton.get_model_metadata("iris")


def test_model_configuration_through_tritonclient(triton, auth):
    config = triton.get_model_config("iris", "v1", headers=auth())

    assert (config["name"], config["version"]) == ("iris", "v1")
    assert config["max_batch_size"] == 64
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [4]}]
    assert [(o["name"], o["data_type"], o["dims"]) for o in config["output"]] == [
        ("prediction", "TYPE_FP32", [3]),
        ("label", "TYPE_BYTES", []),
        ("confidence", "TYPE_FP32", []),
        ("prediction_id", "TYPE_BYTES", []),
    ]
    assert triton.get_model_config("digits", headers=auth())["input"][0]["dims"] == [64]
    with pytest.raises(InferenceServerException, match="Authentication credentials"):
        triton.get_model_config("iris")


def test_repository_index_through_tritonclient(triton, auth):
    index = triton.get_model_repository_index(headers=auth())

    states = {(e["name"], e["version"]): e["state"] for e in index}
    assert states[("iris", "v1")] == states[("iris", "v2")] == "READY"
    assert states[("digits", "v1-onnx")] == "READY"
    with pytest.raises(InferenceServerException) as refused:
        triton.load_model("iris", headers=auth())
    assert refused.value.status() == "501"
    assert "not supported" in refused.value.message()


def test_inference_statistics_rise_with_inferences(triton, auth):
    def iris_v1() -> dict:
        (stat,) = triton.get_inference_statistics("iris", "v1", headers=auth())["model_stats"]
        return stat

    before = iris_v1()
    for _ in range(2):
        triton.infer("iris", [triton_input(IRIS_ROWS)], model_version="v1", headers=auth())
    after = iris_v1()

    assert after["inference_count"] == before["inference_count"] + 6
    success, earlier = after["inference_stats"]["success"], before["inference_stats"]["success"]
    assert success["count"] == earlier["count"] + 6
    assert success["ns"] > earlier["ns"]
    assert after["last_inference"] > before["last_inference"]
    assert after["inference_stats"]["queue"] == {"count": 0, "ns": 0}
    every = triton.get_inference_statistics(headers=auth())["model_stats"]
    assert ("iris", "v1") in {(s["name"], s["version"]) for s in every}
    versions = triton.get_inference_statistics("iris", headers=auth())["model_stats"]
    # The instance is shared: other tests may have registered more versions of iris.
    assert {"v1", "v2"} <= {s["version"] for s in versions}
    assert {s["name"] for s in versions} == {"iris"}


def test_binary_inference_with_a_version_matches_the_rest_api(server, instance, triton, auth):
    result = triton.infer(
        "iris", [triton_input(IRIS_ROWS)], model_version="v1", headers=auth(), request_id="e2e-1"
    )

    response = result.get_response()
    assert (response["model_version"], response["id"]) == ("v1", "e2e-1")
    assert texts(result.as_numpy("label")) == IRIS_LABELS
    rest = rest_predict(server, instance.demo_key, IRIS_ROWS[1], model="iris", model_version="v1")
    np.testing.assert_allclose(result.as_numpy("prediction")[1], rest["prediction"], atol=1e-6)


def test_json_inference_without_a_version_follows_the_traffic_split(triton, auth):
    outputs = [
        httpclient.InferRequestedOutput("label", binary_data=False),
        httpclient.InferRequestedOutput("prediction", binary_data=False),
    ]

    result = triton.infer(
        "iris", [triton_input(IRIS_ROWS, binary=False)], outputs=outputs, headers=auth()
    )

    response = result.get_response()
    assert response["parameters"]["routing"] == "split"
    assert [o["name"] for o in response["outputs"]] == ["label", "prediction"]
    assert all("data" in o for o in response["outputs"])
    assert texts(result.as_numpy("label")) == IRIS_LABELS
    assert result.as_numpy("prediction").shape == (3, 3)


def test_each_row_is_stored_and_readable_through_the_rest_api(server, triton, auth):
    result = triton.infer("iris", [triton_input(IRIS_ROWS)], model_version="v2", headers=auth())

    for prediction_id, label in zip(
        texts(result.as_numpy("prediction_id")), IRIS_LABELS, strict=True
    ):
        stored = requests.get(
            server.url(f"/api/v1/predict/{prediction_id}"), headers=auth(), timeout=10
        )
        assert stored.status_code == 200, stored.text
        assert stored.json()["label"] == label
        assert stored.json()["model_version"] == "v2"


def test_a_gzip_request_body_is_understood(triton, auth):
    result = triton.infer(
        "iris",
        [triton_input(IRIS_ROWS)],
        model_version="v1",
        headers=auth(),
        request_compression_algorithm="gzip",
    )

    assert texts(result.as_numpy("label")) == IRIS_LABELS


def test_errors_reach_the_client_with_the_servers_message(triton, auth):
    with pytest.raises(InferenceServerException, match="expected 4 features, got 3"):
        triton.infer("iris", [triton_input(IRIS_ROWS[:, :3])], headers=auth())
    with pytest.raises(InferenceServerException, match="has no version 'v9'"):
        triton.infer("iris", [triton_input(IRIS_ROWS)], model_version="v9", headers=auth())
    with pytest.raises(InferenceServerException, match="Authentication credentials"):
        triton.infer("iris", [triton_input(IRIS_ROWS)])


def test_a_body_over_the_limit_reaches_the_client_as_the_servers_413_message(triton, auth):
    rows = np.zeros((5000, 64), "f4")  # 1.28 MB of binary tensor data: over the 1 MiB limit

    with pytest.raises(InferenceServerException) as refused:
        triton.infer("digits", [triton_input(rows)], model_version="v1", headers=auth())

    assert refused.value.status() == "413"
    assert refused.value.message() == "Request body is larger than the limit of 1048576 bytes."


def test_onnx_and_numpy_digits_agree_through_tritonclient(triton, auth):
    X = load_dataset("digits").X
    rng = np.random.default_rng(5)
    rows = np.clip(X[rng.integers(0, len(X), 2000)] + rng.normal(0, 1, (2000, 64)), 0, 16)
    rows = rows.astype("f4")

    by_numpy = triton.infer("digits", [triton_input(rows)], model_version="v1", headers=auth())
    by_onnx = triton.infer("digits", [triton_input(rows)], model_version="v1-onnx", headers=auth())

    np.testing.assert_allclose(
        by_onnx.as_numpy("prediction"), by_numpy.as_numpy("prediction"), atol=1e-5
    )
    assert texts(by_onnx.as_numpy("label")) == texts(by_numpy.as_numpy("label"))


def test_the_kserve_sdk_rest_client_speaks_to_the_server(server, auth):
    async def session() -> tuple:
        client = kserve.InferenceRESTClient(kserve.RESTConfig(protocol="v2", timeout=30))
        try:
            live = await client.is_server_live(server.base_url)
            ready = await client.is_server_ready(server.base_url)
            model_ready = await client.is_model_ready(server.base_url, "iris", headers=auth())
            unknown_ready = await client.is_model_ready(server.base_url, "nope")
            anonymous_ready = await client.is_model_ready(server.base_url, "iris")
            request = kserve.InferRequest(
                model_name="iris",
                infer_inputs=[kserve.InferInput("input", list(IRIS_ROWS.shape), "FP32", IRIS_ROWS)],
            )
            response = await client.infer(
                server.base_url, request, model_name="iris", headers=auth()
            )
        finally:
            await client.close()
        return live, ready, model_ready, unknown_ready, anonymous_ready, response

    live, ready, model_ready, unknown_ready, anonymous_ready, response = asyncio.run(session())

    assert live and ready and model_ready
    assert not unknown_ready and anonymous_ready
    outputs = {o.name: o for o in response.outputs}
    assert [v.decode() if isinstance(v, bytes) else v for v in outputs["label"].data] == (
        IRIS_LABELS
    )
    assert np.asarray(outputs["prediction"].data).size == 9


def test_the_model_list_parses_as_the_kserve_sdk_defines_it(server, auth):
    # The SDK's REST client has no call for the list; its data model is the contract.
    response = httpx.get(server.url("/v2/models"), headers=auth(), timeout=10)

    assert response.status_code == 200
    listed = ListModelsResponse.model_validate_json(response.content)
    assert listed.models == ["breast-cancer", "digits", "iris"]
    assert httpx.get(server.url("/v2/models"), timeout=10).status_code == 401
