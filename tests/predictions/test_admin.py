"""The admin of models, versions and predictions, driven as a staff user would drive it."""

import hashlib
import html
import json

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from predictions.catalogue.artifacts import artifact_bytes
from predictions.models import MLModel, ModelVersion, Prediction
from predictions.runtime.artifacts import dump_dense

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]
MODELS_URL = "/admin/predictions/mlmodel/"
VERSIONS_URL = "/admin/predictions/modelversion/"
PREDICTIONS_URL = "/admin/predictions/prediction/"
pytestmark = pytest.mark.usefixtures("demo_models")


@pytest.fixture
def registry_checks_every_request(settings):
    """Each read asks whether the registry moved (on-commit hooks never fire inside a test)."""
    settings.PLATFORM = {**settings.PLATFORM, "REGISTRY_REFRESH_SECONDS": 0}


def iris() -> MLModel:
    return MLModel.objects.get(name="iris")


def iris_version(label: str) -> ModelVersion:
    return ModelVersion.objects.get(model__name="iris", label=label)


def dense_artifact(n_inputs: int, n_outputs: int, seed: int = 7) -> bytes:
    """A small valid network (n_inputs -> 6 tanh -> n_outputs softmax) with random weights."""
    rng = np.random.default_rng(seed)
    return dump_dense(
        [rng.normal(size=(n_inputs, 6)), rng.normal(size=(6, n_outputs))],
        [rng.normal(size=6), rng.normal(size=n_outputs)],
        ["tanh", "softmax"],
    )


def page_text(response) -> str:
    return html.unescape(response.content.decode())


def add_version(admin_client, *, label: str, artifact: bytes, status: str = "staged"):
    return admin_client.post(
        f"{VERSIONS_URL}add/",
        {
            "model": iris().pk,
            "label": label,
            "description": "uploaded in a test",
            "runtime": "numpy",
            "status": status,
            "traffic_weight": "0",
            "shadow_share": "1",
            "max_batch_size": "16",
            "batch_wait_ms": "0.5",
            "artifact_file": SimpleUploadedFile(f"{label}.npz", artifact),
        },
    )


def run_action(admin_client, action: str, *versions: ModelVersion):
    return admin_client.post(
        VERSIONS_URL,
        {"action": action, "index": "0", "_selected_action": [v.pk for v in versions]},
        follow=True,
    )


def predict(key_client, **body):
    return key_client.post(
        "/api/v1/predict",
        json.dumps({"input_data": IRIS_ROW, "model": "iris", **body}),
        content_type="application/json",
    )


def change_form_data(response) -> dict:
    """The POST data of a rendered change form, as the browser would submit it unchanged."""
    forms = [response.context["adminform"].form]
    for inline in response.context["inline_admin_formsets"]:
        formset = inline.formset
        forms.append(formset.management_form)
        forms.extend(formset.forms)
    data = {}
    for form in forms:
        for field in form:
            value = field.value()
            if value is None or value is False:
                continue  # an empty field or an unticked checkbox sends nothing
            data[field.html_name] = value
    return data


# --- Pages load ------------------------------------------------------------------------------


@pytest.mark.parametrize("url", [MODELS_URL, VERSIONS_URL, PREDICTIONS_URL])
def test_the_changelists_load_for_staff(admin_client, url):
    response = admin_client.get(url)

    assert response.status_code == 200


def test_the_change_pages_of_a_model_a_version_and_a_prediction_load(admin_client, key_client):
    prediction_id = predict(key_client).json()["prediction_id"]

    model_page = admin_client.get(f"{MODELS_URL}{iris().pk}/change/")
    version_page = admin_client.get(f"{VERSIONS_URL}{iris_version('v1').pk}/change/")
    prediction_page = admin_client.get(f"{PREDICTIONS_URL}{prediction_id}/change/")

    assert model_page.status_code == 200
    assert "sepal_length" in page_text(model_page)
    assert version_page.status_code == 200
    assert iris_version("v1").checksum in page_text(version_page)
    assert prediction_page.status_code == 200
    assert "setosa" in page_text(prediction_page)


def test_the_admin_is_closed_to_users_who_are_not_staff(client, user):
    client.force_login(user)

    response = client.get(VERSIONS_URL)

    assert response.status_code == 302
    assert response["Location"].startswith("/admin/login/")


# --- Uploading versions -----------------------------------------------------------------------


def test_uploading_a_valid_artifact_creates_a_version_with_its_checksum(admin_client):
    artifact = dense_artifact(4, 3)

    response = add_version(admin_client, label="v3", artifact=artifact)

    assert response.status_code == 302, page_text(response)
    version = iris_version("v3")
    assert version.checksum == hashlib.sha256(artifact).hexdigest()
    assert artifact_bytes(version) == artifact
    assert version.artifact_name == "v3.npz"
    assert version.status == "staged"
    assert (version.max_batch_size, version.batch_wait_ms) == (16, 0.5)


@pytest.mark.parametrize(
    ("artifact", "problem"),
    [
        (np.random.default_rng(3).bytes(600), "is not a valid numpy model"),
        (dense_artifact(5, 3), "takes 5 features; model 'iris' takes 4"),
        (dense_artifact(4, 2), "gives 2 outputs; model 'iris' has 3 class labels"),
    ],
    ids=["random-bytes", "five-inputs", "two-outputs"],
)
def test_if_artifact_is_malformed_then_the_admin_form_names_the_problem(
    admin_client, artifact, problem
):
    response = add_version(admin_client, label="broken", artifact=artifact)

    assert response.status_code == 200
    assert problem in page_text(response)
    assert response.context["adminform"].form.errors["artifact_file"]
    assert not ModelVersion.objects.filter(label="broken").exists()


def test_adding_a_version_without_an_artifact_asks_for_one(admin_client):
    response = admin_client.post(
        f"{VERSIONS_URL}add/",
        {
            "model": iris().pk,
            "label": "empty",
            "runtime": "numpy",
            "status": "staged",
            "traffic_weight": "0",
            "shadow_share": "1",
            "max_batch_size": "64",
            "batch_wait_ms": "0",
        },
    )

    assert response.status_code == 200
    assert "Upload the version&#x27;s artifact." in response.content.decode()
    assert not ModelVersion.objects.filter(label="empty").exists()


# --- Actions ----------------------------------------------------------------------------------


@pytest.mark.usefixtures("registry_checks_every_request")
def test_retire_action_retires_the_version_and_the_api_then_refuses_it(admin_client, key_client):
    assert predict(key_client, model_version="v1").status_code == 200

    response = run_action(admin_client, "retire", iris_version("v1"))

    assert response.status_code == 200
    assert "Retired 1 version(s)." in page_text(response)
    assert iris_version("v1").status == "retired"
    refused = predict(key_client, model_version="v1")
    assert refused.status_code == 404
    assert "retired" in refused.json()["detail"]


@pytest.mark.usefixtures("registry_checks_every_request")
def test_activate_action_puts_a_retired_version_back_in_service(admin_client, key_client):
    run_action(admin_client, "retire", iris_version("v1"))
    assert predict(key_client, model_version="v1").status_code == 404

    response = run_action(admin_client, "activate", iris_version("v1"))

    assert "Activated 1 version(s)." in page_text(response)
    assert iris_version("v1").status == "active"
    served = predict(key_client, model_version="v1")
    assert served.status_code == 200
    assert served.json()["model_version"] == "v1"


@pytest.mark.usefixtures("registry_checks_every_request")
def test_activating_an_uploaded_version_makes_it_the_latest(admin_client, key_client):
    add_version(admin_client, label="v3", artifact=dense_artifact(4, 3))
    assert predict(key_client, model_version="latest").json()["model_version"] == "v2"

    run_action(admin_client, "activate", iris_version("v3"))

    assert iris_version("v3").status == "active"
    assert predict(key_client, model_version="latest").json()["model_version"] == "v3"


@pytest.mark.usefixtures("registry_checks_every_request")
def test_make_default_action_changes_the_version_serving_requests_that_name_none(
    admin_client, key_client
):
    # The default serves requests that name no version when no weight routes them.
    ModelVersion.objects.filter(model__name="iris").update(traffic_weight=0)
    assert predict(key_client).json()["model_version"] == "v2"

    response = run_action(admin_client, "make_default", iris_version("v1"))

    assert "Default version updated." in page_text(response)
    assert iris().default_version == iris_version("v1")
    assert predict(key_client).json()["model_version"] == "v1"


# --- Traffic weights inline on the model's page ------------------------------------------------


def test_traffic_weights_edited_inline_on_the_models_page_are_saved(admin_client):
    url = f"{MODELS_URL}{iris().pk}/change/"
    data = change_form_data(admin_client.get(url))
    rows = {data[f"versions-{i}-id"]: i for i in range(int(data["versions-TOTAL_FORMS"]))}
    data[f"versions-{rows[iris_version('v1').pk]}-traffic_weight"] = "20"
    data[f"versions-{rows[iris_version('v2').pk]}-traffic_weight"] = "80"

    response = admin_client.post(url, data)

    assert response.status_code == 302, page_text(response)
    assert iris_version("v1").traffic_weight == 20
    assert iris_version("v2").traffic_weight == 80


def test_a_negative_traffic_weight_is_refused_with_a_form_error(admin_client):
    url = f"{MODELS_URL}{iris().pk}/change/"
    data = change_form_data(admin_client.get(url))
    rows = {data[f"versions-{i}-id"]: i for i in range(int(data["versions-TOTAL_FORMS"]))}
    data[f"versions-{rows[iris_version('v1').pk]}-traffic_weight"] = "-5"

    response = admin_client.post(url, data)

    assert response.status_code == 200
    assert "Ensure this value is greater than or equal to 0." in page_text(response)
    assert iris_version("v1").traffic_weight == 50


# --- Hold-out accuracy ------------------------------------------------------------------------


def test_the_version_list_shows_each_versions_holdout_accuracy(admin_client):
    response = admin_client.get(VERSIONS_URL)

    text = page_text(response)
    versions = list(ModelVersion.objects.all())
    assert len(versions) == 5  # digits v1-onnx carries v1's hold-out accuracy
    for version in versions:
        accuracy = version.metrics["holdout_accuracy"]
        assert f"{round(accuracy * 100, 1)}%" in text, version


# --- Predictions are read-only ----------------------------------------------------------------


def test_the_prediction_admin_offers_no_add(admin_client):
    changelist = admin_client.get(PREDICTIONS_URL)
    add_page = admin_client.get(f"{PREDICTIONS_URL}add/")

    assert f'href="{PREDICTIONS_URL}add/"' not in changelist.content.decode()
    assert add_page.status_code == 403


def test_a_predictions_change_page_shows_no_save_button_and_refuses_edits(admin_client, key_client):
    prediction_id = predict(key_client).json()["prediction_id"]
    url = f"{PREDICTIONS_URL}{prediction_id}/change/"

    page = admin_client.get(url)
    edit = admin_client.post(url, {"label": "virginica"})

    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert edit.status_code == 403
    assert Prediction.objects.get(pk=prediction_id).label == "setosa"


def test_the_prediction_list_filters_by_model(admin_client, key_client):
    iris_id = predict(key_client).json()["prediction_id"]
    cancer_id = predict(key_client, model="breast-cancer", input_data=[0.0] * 30).json()[
        "prediction_id"
    ]

    only_iris = admin_client.get(PREDICTIONS_URL, {"model_version__model__id__exact": iris().pk})
    everything = admin_client.get(PREDICTIONS_URL)

    assert only_iris.status_code == 200
    assert iris_id in page_text(only_iris)
    assert cancer_id not in page_text(only_iris)
    assert iris_id in page_text(everything) and cancer_id in page_text(everything)


def test_a_model_wider_than_max_features_is_refused_with_a_form_error(admin_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_FEATURES": 3}
    data = {
        "name": "wide-one",
        "task": "classification",
        "feature_names": json.dumps(["a", "b", "c", "d"]),
        "labels": json.dumps(["x", "y"]),
        "cache_ttl": 0,
        "versions-TOTAL_FORMS": 0,
        "versions-INITIAL_FORMS": 0,
    }

    response = admin_client.post(f"{MODELS_URL}add/", data)

    assert response.status_code == 200
    assert "4 features; at most 3 are allowed" in page_text(response)
    assert not MLModel.objects.filter(name="wide-one").exists()
