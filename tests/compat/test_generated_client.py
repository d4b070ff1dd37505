"""A client generated from the live schema by openapi-python-client predicts and runs a batch.

The server's ``/api/schema/`` is fetched, checked by an independent validator
(openapi-spec-validator), and turned into a Python package by ``openapi-python-client generate``
(its post-hooks off: they only format the code). The package is imported and used as its users
would: typed request models in, typed response models out, over real HTTP to ``manage.py serve``
(whose embedded worker runs the batch).
"""

import importlib
import io
import json
import math
import pkgutil
import subprocess
import sys
import time
import uuid
from datetime import datetime

import pytest
import requests
from openapi_spec_validator import validate

pytestmark = pytest.mark.e2e

PACKAGE = "mlplatform_client"
IRIS_LABELS = {"setosa", "versicolor", "virginica"}
ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.1, 4.4, 1.4], [6.3, 3.3, 6.0, 2.5]]


@pytest.fixture(scope="module")
def served_schema(server) -> dict:
    response = requests.get(
        server.url("/api/schema/"),
        headers={"Accept": "application/vnd.oai.openapi+json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()


@pytest.fixture(scope="module")
def generated(served_schema, tmp_path_factory):
    """The client package generated from the served schema, imported."""
    where = tmp_path_factory.mktemp("generated")
    (where / "schema.json").write_text(json.dumps(served_schema))
    (where / "config.json").write_text(
        json.dumps({"package_name_override": PACKAGE, "post_hooks": []})
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(where / "schema.json"),
            "--config",
            str(where / "config.json"),
            "--meta",
            "none",
            "--output-path",
            str(where / PACKAGE),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    # The generator skips (with a warning) what it cannot read: every operation must be read.
    assert "Warning" not in output, output
    sys.path.insert(0, str(where))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(where))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def client(generated, server, instance):
    """The generated client with the demo API key in its ``X-API-Key`` header."""
    with generated.AuthenticatedClient(
        base_url=server.base_url,
        token=instance.demo_key,
        prefix="",
        auth_header_name="X-API-Key",
        raise_on_unexpected_status=True,
        timeout=30,
    ) as client:
        yield client


def _api(name: str):
    return importlib.import_module(f"{PACKAGE}.api.api.{name}")


def _models():
    return importlib.import_module(f"{PACKAGE}.models")


def _finished(client, job_id: uuid.UUID, within: float = 60):
    """The job's status once it has ended, read with the generated client."""
    models = _models()
    deadline = time.monotonic() + within
    while True:
        status = _api("api_v1_predict_batch_retrieve").sync(client=client, id=job_id)
        assert isinstance(status, models.BatchJobDetail)
        unfinished = (models.BatchJobStatusEnum.QUEUED, models.BatchJobStatusEnum.PROCESSING)
        if status.status not in unfinished:
            return status
        assert time.monotonic() < deadline, f"not done within {within:g} s: {status.to_dict()}"
        time.sleep(0.2)


def test_the_served_schema_passes_an_independent_validator(served_schema):
    validate(served_schema)  # raises, naming the first error


def test_every_module_of_the_generated_client_imports(generated):
    modules = [
        module.name
        for module in pkgutil.walk_packages(generated.__path__, f"{PACKAGE}.")
        if not module.ispkg
    ]

    assert f"{PACKAGE}.api.api.api_v1_predict_batch_create" in modules
    for name in modules:
        importlib.import_module(name)


def test_the_generated_client_predicts_and_reads_the_prediction_back(client):
    models = _models()

    response = _api("api_v1_predict_create").sync_detailed(
        client=client, body=models.PredictRequestRequest(input_data=ROWS[0], model="iris")
    )

    assert response.status_code == 200
    prediction = response.parsed
    assert isinstance(prediction, models.Prediction)
    assert isinstance(prediction.prediction_id, uuid.UUID)
    assert prediction.model == "iris"
    assert prediction.label in IRIS_LABELS
    assert len(prediction.prediction) == 3
    assert math.isclose(sum(prediction.prediction), 1.0, rel_tol=1e-5)
    assert prediction.confidence == max(prediction.prediction)
    assert isinstance(prediction.timestamp, datetime)
    assert prediction.timestamp.tzinfo is not None

    stored = _api("api_v1_predict_retrieve").sync(client=client, id=prediction.prediction_id)

    assert isinstance(stored, models.Prediction)
    assert stored.prediction_id == prediction.prediction_id
    assert stored.input_data == ROWS[0]
    assert stored.prediction == prediction.prediction
    assert stored.label == prediction.label


def test_the_generated_client_submits_a_json_batch_and_reads_its_results(client):
    models = _models()
    single = _api("api_v1_predict_create").sync(
        client=client,
        body=models.PredictRequestRequest(input_data=ROWS[2], model="iris", model_version="v1"),
    )

    accepted = _api("api_v1_predict_batch_create").sync_detailed(
        client=client,
        body=models.BatchInputsRequest(inputs=ROWS, model="iris", model_version="v1"),
    )

    assert accepted.status_code == 202
    job = accepted.parsed
    assert isinstance(job, models.BatchAccepted)
    assert isinstance(job.job_id, uuid.UUID)
    assert job.total_inputs == len(ROWS)
    assert job.model_version == "v1"

    status = _finished(client, job.job_id)
    assert status.status == _models().BatchJobStatusEnum.COMPLETED, status.to_dict()
    assert status.completed == status.total_inputs == len(ROWS)
    assert status.progress == 1.0
    assert isinstance(status.finished_at, datetime)

    results = _api("api_v1_predict_batch_results_retrieve").sync(client=client, id=job.job_id)

    assert isinstance(results, models.BatchResults)
    assert results.job_id == job.job_id
    assert results.count == len(ROWS)
    rows = results.results
    assert all(isinstance(row, models.BatchResultRow) for row in rows)
    assert [row.input_index for row in rows] == list(range(len(ROWS)))
    assert {row.label for row in rows} <= IRIS_LABELS
    assert rows[2].label == single.label
    assert rows[2].prediction == pytest.approx(single.prediction, rel=1e-5)


def test_the_generated_client_uploads_a_batch_file(generated, client):
    models = _models()
    csv = "sepal_length,sepal_width,petal_length,petal_width\n" + "".join(
        ",".join(map(str, row)) + "\n" for row in ROWS
    )

    accepted = _api("api_v1_predict_batch_create").sync_detailed(
        client=client,
        body=models.BatchUploadRequest(
            file=generated.types.File(
                payload=io.BytesIO(csv.encode()), file_name="rows.csv", mime_type="text/csv"
            ),
            model="iris",
        ),
    )

    assert accepted.status_code == 202, accepted.content
    assert accepted.parsed.total_inputs == len(ROWS)
    status = _finished(client, accepted.parsed.job_id)
    assert status.status == models.BatchJobStatusEnum.COMPLETED, status.to_dict()
    assert status.input_format == "csv"
    results = _api("api_v1_predict_batch_results_retrieve").sync(
        client=client, id=accepted.parsed.job_id
    )
    assert [row.input_index for row in results.results] == list(range(len(ROWS)))


def test_the_generated_client_logs_in_with_the_tutorial_form(generated, server, instance):
    models = _models()
    with generated.Client(base_url=server.base_url, timeout=30) as anonymous:
        login = _api("api_v1_auth_login_create").sync_detailed(
            client=anonymous,
            body=models.LoginRequest(username="demo", password=instance.passwords["demo"]),
        )

    assert login.status_code == 200
    assert isinstance(login.parsed, models.LoginResponse)
    assert login.parsed.token_type == "bearer"
    assert login.parsed.expires_in > 0
    with generated.AuthenticatedClient(
        base_url=server.base_url, token=login.parsed.access_token, timeout=30
    ) as bearer:
        catalogue = _api("api_v1_models_list").sync(client=bearer)
    assert {model.name for model in catalogue} >= {"iris", "breast-cancer", "digits"}
    assert all(isinstance(model, models.MLModel) for model in catalogue)
