"""ONNX model versions: uploaded in the admin or with ``register_model``, checked, then served."""

import html
import io
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command

from predictions.catalogue.artifacts import artifact_bytes, artifact_save
from predictions.catalogue.versions import registry_touch
from predictions.demo.datasets import load_dataset
from predictions.demo.seed import demo_seed
from predictions.models import MLModel, ModelVersion
from predictions.runtime.artifacts import checksum, dump_dense, load_dense
from predictions.runtime.dense import DenseNetwork
from predictions.runtime.onnx import dense_to_onnx

IRIS_ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
pytestmark = pytest.mark.usefixtures("demo_models")


def exported(model: str, label: str) -> bytes:
    """A demo version's weights as an ONNX graph."""
    version = ModelVersion.objects.get(model__name=model, label=label)
    return dense_to_onnx(load_dense(artifact_bytes(version)))


def random_onnx(n_inputs: int, n_outputs: int) -> bytes:
    rng = np.random.default_rng(0)
    return dense_to_onnx(
        DenseNetwork(
            [rng.normal(size=(n_inputs, 5)), rng.normal(size=(5, n_outputs))],
            [rng.normal(size=5), rng.normal(size=n_outputs)],
            ["relu", "softmax"],
        )
    )


def upload(tmp_path, data: bytes, *args: str, name: str = "model.onnx") -> str:
    path = tmp_path / name
    path.write_bytes(data)
    out = io.StringIO()
    model, label, *rest = args
    call_command("register_model", model, str(path), "--label", label, *rest, stdout=out)
    return out.getvalue()


def rest_predict(client, version: str, row) -> dict:
    response = client.post(
        "/api/v1/predict",
        {"input_data": row, "model": "iris", "model_version": version},
        format="json",
    )
    assert response.status_code == 200, response.content
    return response.json()


def test_an_uploaded_onnx_version_serves_rest_and_v2_like_the_weights_it_came_from(
    tmp_path, key_client
):
    out = upload(tmp_path, exported("iris", "v1"), "iris", "v3", "--status", "active")

    assert "iris:v3 registered (onnx, active, weight 0)" in out
    version = ModelVersion.objects.get(model__name="iris", label="v3")
    assert version.runtime == "onnx" and version.artifact_name == "model.onnx"
    registry_touch()
    for row in IRIS_ROWS:
        by_onnx, by_numpy = rest_predict(key_client, "v3", row), rest_predict(key_client, "v1", row)
        assert by_onnx["label"] == by_numpy["label"]
        assert by_onnx["prediction"] == pytest.approx(by_numpy["prediction"], abs=1e-6)
    metadata = key_client.get("/v2/models/iris/versions/v3").json()
    assert metadata["platform"] == "onnxruntime_onnx"


def test_upload_can_make_the_version_the_default(tmp_path):
    upload(tmp_path, exported("iris", "v1"), "iris", "v3", "--status", "active", "--default")

    assert MLModel.objects.get(name="iris").default_version.label == "v3"


@pytest.mark.parametrize(
    ("data", "model", "problem"),
    [
        (random_onnx(64, 10), "iris", "The file takes 64 features; model 'iris' takes 4"),
        (random_onnx(4, 2), "iris", "The file gives 2 outputs; model 'iris' has 3 class labels"),
        (b"not a graph", "iris", "is not a valid onnx model: not an ONNX model"),
    ],
    ids=["features", "labels", "garbage"],
)
def test_an_onnx_file_that_does_not_fit_the_model_is_refused_by_the_command(
    tmp_path, data, model, problem
):
    with pytest.raises(CommandError, match=problem):
        upload(tmp_path, data, model, "v3")
    assert not ModelVersion.objects.filter(label="v3").exists()


@pytest.mark.parametrize(
    ("args", "name", "problem"),
    [
        (("iris", "v3"), "model.bin", "cannot tell the format of 'model.bin'"),
        (("iris", "v1"), "model.onnx", "already has a version 'v1'"),
        (("iris", "v3", "--default"), "model.onnx", "Only an active version can be the default"),
    ],
)
def test_register_model_refuses_what_it_cannot_register(tmp_path, args, name, problem):
    with pytest.raises(CommandError, match=problem):
        upload(tmp_path, exported("iris", "v1"), *args, name=name)


def admin_add(admin_client, data: bytes, *, label="v3", runtime="onnx"):
    return admin_client.post(
        "/admin/predictions/modelversion/add/",
        {
            "model": MLModel.objects.get(name="iris").pk,
            "label": label,
            "description": "exported from PyTorch",
            "runtime": runtime,
            "status": "staged",
            "traffic_weight": "0",
            "shadow_share": "1",
            "max_batch_size": "64",
            "batch_wait_ms": "0",
            "artifact_file": SimpleUploadedFile(f"{label}.onnx", data),
        },
    )


def test_the_admin_accepts_an_onnx_upload(admin_client):
    response = admin_add(admin_client, exported("iris", "v2"))

    assert response.status_code == 302, response.content.decode()[:2000]
    assert ModelVersion.objects.get(model__name="iris", label="v3").runtime == "onnx"


def test_the_admin_names_the_problem_of_an_onnx_graph_that_does_not_fit(admin_client):
    response = admin_add(admin_client, random_onnx(30, 2))

    assert response.status_code == 200
    page = html.unescape(response.content.decode())
    assert "The file takes 30 features; model 'iris' takes 4." in page
    assert not ModelVersion.objects.filter(label="v3").exists()


def test_an_onnx_graph_uploaded_with_the_numpy_runtime_is_explained(admin_client):
    response = admin_add(admin_client, exported("iris", "v2"), runtime="numpy")

    assert response.status_code == 200
    assert "is not a valid numpy model: not a .npz archive" in html.unescape(
        response.content.decode()
    )


# --- the demo's ONNX version ---------------------------------------------------------------------


def v2_probabilities(client, path: str, rows: np.ndarray) -> np.ndarray:
    document = {
        "inputs": [
            {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.tolist()}
        ],
        "outputs": [{"name": "prediction"}],
    }
    response = client.post(path, json.dumps(document), content_type="application/json")
    assert response.status_code == 200, response.content
    (output,) = response.json()["outputs"]
    return np.asarray(output["data"]).reshape(output["shape"])


def test_the_onnx_demo_is_exported_from_the_stored_v1_not_from_a_new_training_run(key_client):
    digits = MLModel.objects.get(name="digits")
    stored = digits.versions.get(label="v1")
    # The stored v1 is no longer what training gives today (training changed, or v1 was
    # replaced): the ONNX version must still serve v1's weights.
    network = load_dense(artifact_bytes(stored))
    changed = dump_dense(
        [w * 1.5 for w in network.weights],
        network.biases,
        network.activations,
        input_mean=network.input_mean,
        input_scale=network.input_scale,
    )
    name, sha256 = artifact_save(changed)
    ModelVersion.objects.filter(pk=stored.pk).update(artifact=name, checksum=sha256)
    digits.versions.filter(label="v1-onnx").delete()

    first, second = demo_seed(issue_key=False), demo_seed(issue_key=False)

    assert (first.created_versions, second.created_versions) == (["digits:v1-onnx"], [])
    onnx = digits.versions.get(label="v1-onnx")
    assert onnx.metrics["exported_from"] == "v1"
    assert onnx.metrics["exported_from_checksum"] == checksum(changed)
    rows = load_dataset("digits").X[:200].astype("f4")
    by_numpy = v2_probabilities(key_client, "/v2/models/digits/versions/v1/infer", rows)
    by_onnx = v2_probabilities(key_client, "/v2/models/digits/versions/v1-onnx/infer", rows)
    np.testing.assert_allclose(by_onnx, by_numpy, atol=1e-5)
