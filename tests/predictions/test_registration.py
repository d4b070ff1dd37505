"""Registration in one step, over REST, the CLI and the admin, from real scikit-learn ONNX files.

Each way registers a model whose signature is read from the file, and the platform's
``/predict`` answers as the scikit-learn pipeline's own ``predict_proba`` does (within 1e-5).
Every kind of bad input is a 4xx naming the problem, and nothing is stored.
"""

import io

import numpy as np
import onnx
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient
from skl2onnx import to_onnx
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from predictions.catalogue.versions import registry_touch
from predictions.demo.datasets import load_dataset
from predictions.models import MLModel, ModelVersion
from predictions.runtime.signature import read_signature

pytestmark = pytest.mark.usefixtures("demo_models")
IRIS = load_dataset("iris")
IRIS_NAMES = ["setosa", "versicolor", "virginica"]


def _classifier(X, y):
    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(X, y)
    options = {id(pipeline.steps[-1][1]): {"zipmap": False}}
    return pipeline, to_onnx(pipeline, X[:1].astype(np.float32), options=options)


@pytest.fixture(scope="module")
def iris_sklearn():
    """A scikit-learn pipeline on iris (classes 0..2) and its ONNX bytes."""
    pipeline, onx = _classifier(IRIS.X, IRIS.y)
    return pipeline, onx.SerializeToString()


def _regressor_onnx(n_features: int) -> bytes:
    rng = np.random.default_rng(1)
    X = rng.normal(size=(50, n_features))
    model = LinearRegression().fit(X, X.sum(axis=1))
    return to_onnx(model, X[:1].astype(np.float32)).SerializeToString()


def _state() -> tuple:
    """The models, their versions and the artifact files in the storage."""
    stored = default_storage.listdir("artifacts")[1] if default_storage.exists("artifacts") else []
    return (
        sorted(MLModel.objects.values_list("name", "task", "feature_names", "labels")),
        sorted(ModelVersion.objects.values_list("model__name", "label", "checksum")),
        sorted(stored),
    )


def _predict(client, model: str, version: str, rows: np.ndarray) -> np.ndarray:
    registry_touch()
    answers = []
    for row in rows:
        response = client.post(
            "/api/v1/predict",
            {"input_data": row.tolist(), "model": model, "model_version": version},
            format="json",
        )
        assert response.status_code == 200, response.content
        answers.append(response.json()["prediction"])
    return np.asarray(answers)


def _upload(client, name: str, data: bytes, filename: str = "model.onnx", **fields):
    return client.post(
        f"/api/v1/models/{name}/versions",
        {"artifact": SimpleUploadedFile(filename, data), **fields},
        format="multipart",
    )


# --- What the file says --------------------------------------------------------------------


def test_the_signature_of_a_scikit_learn_classifier_is_read_from_its_onnx_file(iris_sklearn):
    _, data = iris_sklearn

    _, signature = read_signature("onnx", data)

    assert (signature.n_features, signature.n_outputs) == (4, 3)
    assert signature.task_guess == "classification"
    assert signature.class_labels == ("0", "1", "2")
    assert signature.feature_names is None


def test_string_classes_and_feature_names_in_the_file_are_used():
    y = np.asarray(IRIS_NAMES)[IRIS.y]
    _, onx = _classifier(IRIS.X, y)
    onnx.helper.set_model_props(onx, {"feature_names": "sl,sw,pl,pw"})

    _, signature = read_signature("onnx", onx.SerializeToString())

    assert signature.class_labels == tuple(IRIS_NAMES)
    assert signature.feature_names == ("sl", "sw", "pl", "pw")


def test_a_regressor_is_guessed_as_regression():
    _, signature = read_signature("onnx", _regressor_onnx(3))

    assert (signature.n_features, signature.n_outputs, signature.task_guess) == (
        3,
        1,
        "regression",
    )


# --- REST ------------------------------------------------------------------------------------


def test_a_models_key_registers_a_model_and_serves_sklearns_probabilities(
    models_client, iris_sklearn
):
    pipeline, data = iris_sklearn
    created = models_client.post(
        "/api/v1/models",
        {"name": "iris-sk", "task": "classification", "description": "sklearn pipeline"},
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["versions"] == []

    response = _upload(
        models_client,
        "iris-sk",
        data,
        label="v1",
        status="active",
        traffic_weight="1",
        labels=",".join(IRIS_NAMES),
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["n_features"] == 4 and body["feature_names"] == ["x0", "x1", "x2", "x3"]
    assert body["labels"] == IRIS_NAMES
    assert [v["label"] for v in body["versions"]] == ["v1"]
    served = _predict(models_client, "iris-sk", "v1", IRIS.X.astype(np.float32))
    np.testing.assert_allclose(served, pipeline.predict_proba(IRIS.X), atol=1e-5)


def test_a_staff_session_registers_without_a_key(staff, iris_sklearn):
    client = APIClient()
    client.force_login(staff)
    assert (
        client.post(
            "/api/v1/models", {"name": "iris-staff", "task": "classification"}, format="json"
        ).status_code
        == 201
    )

    response = _upload(client, "iris-staff", iris_sklearn[1])

    assert response.status_code == 201, response.content
    assert response.json()["labels"] == ["0", "1", "2"]  # the file's own class labels
    assert response.json()["versions"][0]["label"] == "v1"


@pytest.mark.parametrize("scopes", [["predict", "batch", "stream", "read"]])
def test_a_key_without_the_models_scope_gets_403_and_nothing_is_stored(
    publisher, make_key, client_for, iris_sklearn, scopes
):
    client = client_for(make_key(publisher, scopes=scopes))
    before = _state()

    created = client.post(
        "/api/v1/models", {"name": "nope", "task": "classification"}, format="json"
    )
    uploaded = _upload(client, "iris", iris_sklearn[1], label="v9")

    for response in (created, uploaded):
        assert response.status_code == 403
        assert response.json()["code"] == "missing_scope"
        assert "'models'" in response.json()["detail"]
    assert _state() == before


def test_a_user_without_the_permission_cannot_carry_the_scope(user, make_key):
    from mlplatform.errors import Forbidden

    with pytest.raises(Forbidden, match="does not hold the 'models' scope"):
        make_key(user, scopes=["models"])


@pytest.mark.parametrize(
    ("name", "data", "fields", "status", "problem"),
    [
        ("iris", b"this is no graph", {}, 400, "not a valid onnx model"),
        (
            "iris",
            b"\x80\x04\x95pickled",
            {"runtime": "numpy"},
            400,
            "looks like a Python pickle, which is never loaded",
        ),
        ("iris", "regressor5", {}, 400, "The file takes 5 features; model 'iris' takes 4."),
        ("iris", "iris", {"label": "v1"}, 409, "Model 'iris' already has a version 'v1'."),
        ("iris", "iris", {"task": "regression"}, 409, "'iris' is a classification model"),
        ("iris", "iris", {"labels": "a,b,c"}, 400, "model 'iris' has labels"),
        ("new-one", "iris", {}, 404, "Unknown model 'new-one'."),
    ],
    ids=["not-onnx", "pickle", "features", "duplicate-label", "task", "labels", "unknown"],
)
def test_bad_uploads_are_refused_naming_the_problem_and_nothing_is_stored(
    models_client, iris_sklearn, name, data, fields, status, problem
):
    data = {"regressor5": _regressor_onnx(5), "iris": iris_sklearn[1]}.get(data, data)
    before = _state()

    response = _upload(models_client, name, data, **fields)

    assert response.status_code == status, response.content
    assert problem in response.json()["detail"]
    assert _state() == before


def test_labels_that_do_not_match_the_outputs_are_refused(models_client, iris_sklearn):
    models_client.post("/api/v1/models", {"name": "m", "task": "classification"}, format="json")
    before = _state()

    response = _upload(models_client, "m", iris_sklearn[1], labels="a,b")

    assert response.status_code == 400
    assert response.json()["detail"] == "labels: 2 labels given; the file gives 3 outputs."
    assert _state() == before


def test_creating_a_model_whose_name_is_taken_is_a_409(models_client):
    before = _state()

    response = models_client.post(
        "/api/v1/models", {"name": "iris", "task": "regression"}, format="json"
    )

    assert response.status_code == 409
    assert "Model 'iris' exists (a classification model)" in response.json()["detail"]
    assert _state() == before


# --- CLI -------------------------------------------------------------------------------------


def test_register_model_creates_the_model_and_prints_what_it_registered(
    tmp_path, key_client, iris_sklearn
):
    pipeline, data = iris_sklearn
    path = tmp_path / "iris.onnx"
    path.write_bytes(data)
    out = io.StringIO()

    call_command(
        "register_model",
        "iris-cli",
        str(path),
        "--labels",
        ",".join(IRIS_NAMES),
        "--status",
        "active",
        "--default",
        stdout=out,
    )

    lines = out.getvalue().splitlines()
    assert lines[0] == (
        "model iris-cli created (classification, 4 features: x0, x1, x2, x3; "
        "labels: setosa, versicolor, virginica)"
    )
    assert lines[1].startswith("iris-cli:v1 registered (onnx, active, weight 0, default)")
    model = MLModel.objects.get(name="iris-cli")
    assert model.default_version.label == "v1"
    served = _predict(key_client, "iris-cli", "v1", IRIS.X[:20].astype(np.float32))
    np.testing.assert_allclose(served, pipeline.predict_proba(IRIS.X[:20]), atol=1e-5)


def test_register_model_adds_a_version_and_refuses_a_file_of_another_width(tmp_path):
    path = tmp_path / "wide.onnx"
    path.write_bytes(_regressor_onnx(5))
    before = _state()

    with pytest.raises(CommandError, match="The file takes 5 features; model 'iris' takes 4."):
        call_command("register_model", "iris", str(path), stdout=io.StringIO())
    assert _state() == before


def test_register_model_guesses_a_regressor_and_names_its_features(tmp_path):
    path = tmp_path / "sum.onnx"
    path.write_bytes(_regressor_onnx(3))
    out = io.StringIO()

    call_command("register_model", "summer", str(path), "--features", "a,b,c", stdout=out)

    model = MLModel.objects.get(name="summer")
    assert (model.task, model.feature_names, model.labels) == ("regression", ["a", "b", "c"], [])
    assert "model summer created (regression, 3 features: a, b, c)" in out.getvalue()


# --- Admin -----------------------------------------------------------------------------------

FROM_FILE_URL = "/admin/predictions/mlmodel/add-from-file/"


def test_the_admin_adds_a_model_from_a_file(admin_client, key_client, iris_sklearn):
    pipeline, data = iris_sklearn
    assert "Add model from file" in admin_client.get("/admin/predictions/mlmodel/").content.decode()
    assert admin_client.get(FROM_FILE_URL).status_code == 200

    response = admin_client.post(
        FROM_FILE_URL,
        {
            "artifact": SimpleUploadedFile("iris.onnx", data),
            "name": "iris-admin",
            "labels": ",".join(IRIS_NAMES),
            "task": "classification",
            "status": "active",
            "traffic_weight": "1",
        },
    )

    model = MLModel.objects.get(name="iris-admin")
    assert response.status_code == 302
    assert response["Location"] == f"/admin/predictions/mlmodel/{model.pk}/change/"
    assert model.labels == IRIS_NAMES
    served = _predict(key_client, "iris-admin", "v1", IRIS.X[:20].astype(np.float32))
    np.testing.assert_allclose(served, pipeline.predict_proba(IRIS.X[:20]), atol=1e-5)


def test_the_admin_form_names_the_problem_and_stores_nothing(admin_client):
    before = _state()

    response = admin_client.post(
        FROM_FILE_URL,
        {
            "artifact": SimpleUploadedFile("wide.onnx", _regressor_onnx(5)),
            "name": "iris",
            "status": "staged",
            "traffic_weight": "0",
        },
    )

    assert response.status_code == 200
    assert "The file takes 5 features; model &#x27;iris&#x27; takes 4." in response.content.decode()
    assert _state() == before


def test_staff_without_model_permissions_cannot_open_the_form(staff):
    client = APIClient()
    client.force_login(staff)

    assert client.get(FROM_FILE_URL).status_code == 403
