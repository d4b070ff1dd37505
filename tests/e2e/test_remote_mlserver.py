"""End to end: a remote version served by a real MLServer, beside the same model in ONNX.

MLServer (its own virtualenv, ``tests/mlserver.py``) serves a scikit-learn pipeline on a
loopback port; the platform, as ``manage.py serve`` with its worker, has model ``iris-remote``
with the pipeline converted to ONNX as version ``local`` and MLServer's model as version
``remote``, traffic split between them. The tests talk HTTP to both servers, in order: the last
ones pause and stop MLServer.
"""

import html
import io
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import numpy as np
import pytest
import requests

from tests.mlserver import MODEL_NAME, MODEL_VERSION, iris_models, start_mlserver
from tests.servers import MANAGE, every_process_reads_the_registry, free_port

pytestmark = pytest.mark.e2e

MODEL = "iris-remote"
CREDENTIAL = "upstream-secret-7f3a9c"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
REMOTE_TIMEOUT = 2.0


@pytest.fixture(scope="module")
def iris():
    return iris_models()


@pytest.fixture(scope="module")
def mlserver(iris, tmp_path_factory):
    server = start_mlserver(
        tmp_path_factory.mktemp("mlserver"),
        iris.pipeline,
        http_port=free_port(),
        grpc_port=free_port(),
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def admin_bearer(server, instance) -> dict[str, str]:
    token = requests.post(
        server.url("/api/v1/auth/token"),
        json={"username": "admin", "password": instance.passwords["admin"]},
        timeout=10,
    )
    assert token.status_code == 200, token.text
    return {"Authorization": f"Bearer {token.json()['access']}"}


def new_key(server, bearer: dict[str, str], name: str, scopes: list[str]) -> str:
    created = requests.post(
        server.url("/api/v1/keys"),
        json={"name": name, "scopes": scopes},
        headers=bearer,
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()["key"]


@pytest.fixture(scope="module")
def admin_key(server, admin_bearer) -> str:
    return new_key(server, admin_bearer, "remote-e2e", ["predict", "read", "batch", "models"])


def post(server, key: str, path: str, **kwargs) -> requests.Response:
    return requests.post(server.url(path), headers={"X-API-Key": key}, timeout=30, **kwargs)


def register_remote(server, key: str, mlserver, label: str, **fields) -> requests.Response:
    return post(
        server,
        key,
        f"/api/v1/models/{MODEL}/remote-versions",
        json={
            "remote_url": mlserver.url,
            "remote_model": MODEL_NAME,
            "remote_model_version": MODEL_VERSION,
            "remote_timeout": REMOTE_TIMEOUT,
            "remote_credential": CREDENTIAL,
            "label": label,
            **fields,
        },
    )


@pytest.fixture(scope="module")
def registered(server, instance, admin_key, mlserver, iris) -> Iterator[dict]:
    """The model, its ONNX version ``local`` and its MLServer version ``remote``, both active
    with equal weights; the body of the remote registration."""
    created = post(
        server,
        admin_key,
        "/api/v1/models",
        json={"name": MODEL, "task": "classification", "feature_names": FEATURES},
    )
    assert created.status_code == 201, created.text
    local = post(
        server,
        admin_key,
        f"/api/v1/models/{MODEL}/versions",
        files={"artifact": ("iris.onnx", iris.onnx, "application/octet-stream")},
        data={
            "label": "local",
            "status": "active",
            "traffic_weight": "1",
            "labels": ",".join(iris.labels),
        },
    )
    assert local.status_code == 201, local.text
    remote = register_remote(
        server, admin_key, mlserver, "remote", status="active", traffic_weight=1
    )
    assert remote.status_code == 201, remote.text
    every_process_reads_the_registry()
    yield remote.json()
    # The instance is shared with the other end-to-end modules, which list its models.
    instance.manage(
        "shell",
        "-c",
        "from predictions.models import ModelVersion\n"
        "from predictions.catalogue.versions import model_version_set_status\n"
        f"for v in ModelVersion.objects.filter(model__name={MODEL!r}):\n"
        "    model_version_set_status(version=v, status='retired')",
    )


def predict(server, key: str, row, version: str | None = None) -> requests.Response:
    body = {"input_data": [float(x) for x in row], "model": MODEL}
    if version:
        body["model_version"] = version
    return post(server, key, "/api/v1/predict", json=body)


def test_a_remote_version_is_registered_from_the_servers_answers(registered, mlserver):
    versions = {v["label"]: v for v in registered["versions"]}

    assert versions["remote"]["runtime"] == "remote"
    assert versions["remote"]["remote"] == {
        "url": mlserver.url,
        "model": MODEL_NAME,
        "version": MODEL_VERSION,
        "timeout": REMOTE_TIMEOUT,
        "output": "predict_proba",
        "credential_set": True,
    }
    assert versions["local"]["remote"] is None
    assert CREDENTIAL not in json.dumps(registered)


def test_a_remote_whose_outputs_do_not_fit_the_model_is_refused(server, admin_key, mlserver):
    # MLServer's "predict" output is the class index: one output, where the model has three.
    refused = register_remote(server, admin_key, mlserver, "labels-only", remote_output="predict")

    assert refused.status_code == 400, refused.text
    assert refused.json()["code"] == "signature_mismatch"
    assert "3 class labels" in refused.json()["detail"]


def test_an_unreachable_upstream_is_refused_at_registration_naming_it(server, admin_key):
    port = free_port()
    refused = post(
        server,
        admin_key,
        f"/api/v1/models/{MODEL}/remote-versions",
        json={
            "remote_url": f"http://127.0.0.1:{port}",
            "remote_model": MODEL_NAME,
            "remote_credential": CREDENTIAL,
        },
    )

    assert refused.status_code == 502, refused.text
    assert refused.json()["code"] == "upstream_error"
    assert f"http://127.0.0.1:{port}" in refused.json()["detail"]
    assert CREDENTIAL not in refused.text


def test_both_versions_answer_the_same_and_the_answers_are_stored(
    server, admin_key, registered, iris
):
    rows = iris.X[::5]
    expected = iris.pipeline.predict_proba(rows)
    for version in ("local", "remote"):
        answers = [predict(server, admin_key, row, version) for row in rows]
        assert [a.status_code for a in answers] == [200] * len(rows), answers[0].text
        got = np.array([a.json()["prediction"] for a in answers])
        np.testing.assert_allclose(got, expected, atol=1e-5, err_msg=version)
        assert [a.json()["label"] for a in answers] == [
            iris.labels[i] for i in expected.argmax(axis=1)
        ]
        stored = requests.get(
            server.url(f"/api/v1/predict/{answers[0].json()['prediction_id']}"),
            headers={"X-API-Key": admin_key},
            timeout=10,
        )
        assert stored.status_code == 200
        assert stored.json()["model_version"] == version
        assert stored.json()["prediction"] == answers[0].json()["prediction"]


def test_the_traffic_split_sends_callers_to_both_versions(server, admin_bearer, registered, iris):
    served = {}
    for n in range(12):
        key = new_key(server, admin_bearer, f"caller-{n}", ["predict"])
        answer = predict(server, key, iris.X[60])
        assert answer.status_code == 200, answer.text
        assert answer.json()["routing"] == "split"
        served.setdefault(answer.json()["model_version"], []).append(answer.json()["prediction"])

    assert set(served) == {"local", "remote"}
    np.testing.assert_allclose(served["local"][0], served["remote"][0], atol=1e-5)


def shadow_copies(instance, ids: list[str]) -> dict[str, list]:
    code = (
        "import json; from predictions.models import ShadowPrediction\n"
        f"rows = ShadowPrediction.objects.filter(primary_id__in={ids!r})\n"
        "print(json.dumps({str(s.primary_id): [s.model_version.label, s.label, s.error]"
        " for s in rows.select_related('model_version')}))"
    )
    return json.loads(instance.manage("shell", "-c", code).stdout.strip().splitlines()[-1])


def test_a_remote_shadow_answers_copies_of_the_local_versions_requests(
    server, instance, admin_key, mlserver, registered, iris
):
    shadow = register_remote(server, admin_key, mlserver, "remote-shadow", status="active")
    assert shadow.status_code == 201, shadow.text
    instance.manage(  # as the admin's shadow switch does
        "shell",
        "-c",
        "from predictions.models import ModelVersion\n"
        "from predictions.catalogue.versions import model_version_save\n"
        f"v = ModelVersion.objects.get(model__name={MODEL!r}, label='remote-shadow')\n"
        "v.is_shadow = True; v.shadow_share = 1.0; model_version_save(version=v)",
    )
    try:
        every_process_reads_the_registry()
        answers = [predict(server, admin_key, row, "local") for row in iris.X[::30]]
        assert [a.status_code for a in answers] == [200] * len(answers)
        assert not any("remote-shadow" in a.text for a in answers)
        ids = [a.json()["prediction_id"] for a in answers]

        deadline = time.monotonic() + 15
        while len(stored := shadow_copies(instance, ids)) < len(ids):
            assert time.monotonic() < deadline, f"{len(stored)} of {len(ids)} copies stored"
            time.sleep(0.3)

        labels = {a.json()["prediction_id"]: a.json()["label"] for a in answers}
        assert stored == {id_: ["remote-shadow", labels[id_], ""] for id_ in ids}
    finally:
        instance.manage(
            "shell",
            "-c",
            "from predictions.models import ModelVersion\n"
            "from predictions.catalogue.versions import model_version_set_status\n"
            f"v = ModelVersion.objects.get(model__name={MODEL!r}, label='remote-shadow')\n"
            "model_version_set_status(version=v, status='retired')",
        )


def batch_outputs(server, key: str, rows: np.ndarray, version: str) -> np.ndarray:
    """Run a batch job of ``rows`` on a version; its results once it completed."""
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    submitted = post(
        server,
        key,
        "/api/v1/predict/batch",
        files={"file": ("rows.npy", buffer.getvalue(), "application/octet-stream")},
        data={"model": MODEL, "model_version": version},
    )
    assert submitted.status_code == 202, submitted.text
    job_url = server.url(f"/api/v1/predict/batch/{submitted.json()['job_id']}")
    deadline = time.monotonic() + 60
    while True:
        job = requests.get(job_url, headers={"X-API-Key": key}, timeout=10).json()
        if job["status"] not in ("queued", "processing"):
            break
        assert time.monotonic() < deadline, job
        time.sleep(0.2)
    assert job["status"] == "completed", job["error"]
    assert job["model_version"] == version
    results = requests.get(
        f"{job_url}/results", params={"format": "npy"}, headers={"X-API-Key": key}, timeout=60
    )
    assert results.status_code == 200, results.text
    return np.load(io.BytesIO(results.content), allow_pickle=False)


def test_a_batch_job_runs_through_the_remote_version(server, admin_key, registered, iris):
    rows = np.tile(iris.X, (20, 1))  # 3,000 rows: one chunk, one request to MLServer

    outputs = batch_outputs(server, admin_key, rows, "remote")

    np.testing.assert_allclose(outputs, iris.pipeline.predict_proba(rows), atol=1e-5)


def test_a_server_that_takes_binary_tensors_answers_batch_chunks_sent_so(
    server, admin_key, admin_bearer, registered, iris
):
    # This platform's own /v2 lists binary_tensor_data: version "loopback" is "local" asked
    # over V2, with a key of its own in X-API-Key; a 3,000-row chunk goes as binary data.
    upstream_key = new_key(server, admin_bearer, "as-upstream", ["predict"])
    created = post(
        server,
        admin_key,
        f"/api/v1/models/{MODEL}/remote-versions",
        json={
            "remote_url": server.base_url,
            "remote_model": MODEL,
            "remote_model_version": "local",
            "remote_credential": upstream_key,
            "remote_credential_header": "X-API-Key",
            "label": "loopback",
        },
    )
    assert created.status_code == 201, created.text
    every_process_reads_the_registry()
    rows = np.tile(iris.X, (20, 1))

    outputs = batch_outputs(server, admin_key, rows, "loopback")

    np.testing.assert_allclose(outputs, iris.pipeline.predict_proba(rows), atol=1e-5)
    assert upstream_key not in created.text


def test_ready_reports_the_upstreams_health(server, registered, mlserver):
    ready = requests.get(server.url("/ready"), timeout=10)

    assert ready.status_code == 200, ready.text
    assert ready.json()["remote"][f"{MODEL}:remote"] == {
        "status": "ok",
        "upstream": f"model {MODEL_NAME!r} (version {MODEL_VERSION}) at {mlserver.url}",
    }


def test_register_model_adds_a_remote_version_with_the_credential_from_the_environment(
    instance, registered, mlserver
):
    done = subprocess.run(
        [sys.executable, str(MANAGE), "register_model", MODEL, "--label", "from-cli"]
        + ["--remote-url", mlserver.url, "--remote-model", MODEL_NAME]
        + ["--remote-credential-env", "UPSTREAM_TOKEN"],
        env={**instance.env, "UPSTREAM_TOKEN": CREDENTIAL},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert done.returncode == 0, done.stderr
    assert f"{MODEL}:from-cli registered (remote, staged, weight 0)" in done.stdout
    assert CREDENTIAL not in done.stdout + done.stderr


def admin_session(server, instance) -> requests.Session:
    session = requests.Session()
    page = session.get(server.url("/admin/login/"), timeout=10)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    signed_in = session.post(
        server.url("/admin/login/?next=/admin/"),
        data={
            "csrfmiddlewaretoken": token,
            "username": "admin",
            "password": instance.passwords["admin"],
        },
        headers={"Referer": server.url("/admin/login/")},
        timeout=10,
    )
    assert signed_in.status_code == 200 and "/admin/login/" not in signed_in.url, signed_in.text
    return session


def test_the_admin_shows_the_upstreams_health_and_never_the_credential(
    server, instance, registered, mlserver
):
    session = admin_session(server, instance)
    listed = session.get(
        server.url("/admin/predictions/modelversion/"), params={"runtime": "remote"}, timeout=30
    )
    assert listed.status_code == 200
    assert "✔ ready" in listed.text
    link = re.search(
        r'href="(/admin/predictions/modelversion/\d+/change/[^"]*)">iris-remote:remote<',
        listed.text,
    )
    page = session.get(server.url(link.group(1).replace("&amp;", "&")), timeout=30)
    assert page.status_code == 200
    assert f"ready: model {MODEL_NAME!r}" in html.unescape(page.text)
    assert "stored (never shown)" in page.text
    assert CREDENTIAL not in listed.text + page.text


def test_the_admin_adds_a_remote_version_after_asking_the_server(
    server, instance, admin_bearer, registered, mlserver
):
    session = admin_session(server, instance)
    add = server.url("/admin/predictions/modelversion/add/")
    form = session.get(add, timeout=30)
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', form.text).group(1)
    model_id = re.search(rf'<option value="(\d+)">{MODEL}</option>', form.text).group(1)
    fields = {
        "csrfmiddlewaretoken": token,
        "model": model_id,
        "label": "from-admin",
        "runtime": "remote",
        "status": "staged",
        "traffic_weight": "0",
        "shadow_share": "1",
        "max_batch_size": "64",
        "batch_wait_ms": "0",
        "remote_url": mlserver.url,
        "remote_model": MODEL_NAME,
        "remote_timeout": "3",
        "remote_credential_header": "Authorization",
        "credential": CREDENTIAL,
    }

    wrong = session.post(add, data={**fields, "remote_model": "no-such-model"}, timeout=30)
    added = session.post(add, data=fields, timeout=30)

    assert wrong.status_code == 200  # the form again, with the server's refusal
    assert "does not exist there (HTTP 404)" in html.unescape(wrong.text)
    assert added.status_code == 200 and "was added successfully" in added.text, added.text[-2000:]
    assert CREDENTIAL not in wrong.text + added.text
    key = new_key(server, admin_bearer, "admin-check", ["predict"])
    answer = predict(server, key, [5.1, 3.5, 1.4, 0.2], "from-admin")
    assert answer.status_code == 200, answer.text
    assert answer.json()["label"] == "setosa"


def set_cache_ttl(instance, seconds: int) -> None:
    instance.manage(
        "shell",
        "-c",
        "from predictions.models import MLModel\n"
        "from predictions.catalogue.versions import model_save\n"
        f"m = MLModel.objects.get(name={MODEL!r}); m.cache_ttl = {seconds}; model_save(model=m)",
    )


def test_the_response_cache_and_idempotency_keys_serve_a_remote_version(
    server, instance, admin_key, registered, mlserver, iris
):
    set_cache_ttl(instance, 60)
    try:
        every_process_reads_the_registry()
        first = predict(server, admin_key, iris.X[99], "remote")
        mlserver.pause()  # a cached answer needs no upstream
        try:
            cached = predict(server, admin_key, iris.X[99], "remote")
        finally:
            mlserver.resume()
    finally:
        set_cache_ttl(instance, 0)
    assert first.status_code == cached.status_code == 200, cached.text
    assert (first.json()["cached"], cached.json()["cached"]) == (False, True)
    assert cached.json()["prediction"] == first.json()["prediction"]

    body = {"input_data": iris.X[120].tolist(), "model": MODEL, "model_version": "remote"}
    headers = {"X-API-Key": admin_key, "Idempotency-Key": "remote-e2e-1"}
    once, twice = (
        requests.post(server.url("/api/v1/predict"), json=body, headers=headers, timeout=30)
        for _ in range(2)
    )
    assert once.status_code == twice.status_code == 200, twice.text
    assert twice.json()["prediction_id"] == once.json()["prediction_id"]


def test_a_slow_upstream_is_a_504_and_a_stopped_one_a_502_naming_it(
    server, admin_key, registered, mlserver, iris
):
    upstream = f"model {MODEL_NAME!r} (version {MODEL_VERSION}) at {mlserver.url}"
    mlserver.pause()
    try:
        started = time.monotonic()
        slow = predict(server, admin_key, iris.X[0], "remote")
        waited = time.monotonic() - started
    finally:
        mlserver.resume()
    assert slow.status_code == 504, slow.text
    assert slow.json()["code"] == "upstream_timeout"
    assert upstream in slow.json()["detail"]
    assert f"within {REMOTE_TIMEOUT:g} s" in slow.json()["detail"]
    assert waited < REMOTE_TIMEOUT + 3
    assert CREDENTIAL not in slow.text

    mlserver.stop()
    stopped = predict(server, admin_key, iris.X[0], "remote")
    assert stopped.status_code == 502, stopped.text
    assert stopped.json()["code"] == "upstream_error"
    assert stopped.json()["detail"] == (
        f"Version 'remote' of model {MODEL!r}: cannot connect to {upstream} (3 attempts): "
        "Connection refused."
    )
    # The local version goes on answering, and the server stays ready, saying which is down.
    assert predict(server, admin_key, iris.X[0], "local").status_code == 200
    ready = requests.get(server.url("/ready"), timeout=10)
    assert ready.status_code == 200
    assert ready.json()["remote"][f"{MODEL}:remote"]["status"] == "error"
    assert "Connection refused" in ready.json()["remote"][f"{MODEL}:remote"]["error"]
    assert CREDENTIAL not in stopped.text + ready.text
    log = server.log.read_text(errors="replace")
    assert CREDENTIAL not in log
