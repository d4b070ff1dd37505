"""Structured logs: one JSON line per request, request ids end to end, readable text in DEBUG."""

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from mlplatform.logging import ContextFilter, JSONFormatter, TextFormatter, log_context
from predictions.models import BatchJob, Prediction
from predictions.tasks import batch_job_run
from predictions.webhooks import webhook_payload

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]


@pytest.fixture
def log_lines():
    """What the root handler would write, as the configured JSON formatter writes it."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    root.addHandler(handler)

    def read(logger: str | None = None) -> list[dict]:
        entries = [json.loads(line) for line in stream.getvalue().splitlines()]
        return [e for e in entries if logger is None or e["logger"] == logger]

    yield read
    root.removeHandler(handler)


def request_lines(read) -> list[dict]:
    return read("mlplatform.request")


def test_a_prediction_request_logs_one_json_line_with_its_fields(key_client, log_lines):
    response = key_client.post(
        "/api/v1/predict",
        {"input_data": SETOSA, "model_version": "v1"},
        format="json",
        HTTP_X_REQUEST_ID="client-req-42",
    )

    [line] = request_lines(log_lines)
    body = response.json()
    key_prefix = line["principal"].removeprefix("key:")
    assert line["request_id"] == "client-req-42" == response["X-Request-ID"]
    assert line["method"] == "POST" and line["path"] == "/api/v1/predict"
    assert line["status"] == 200 and line["level"] == "INFO"
    assert 0 < line["duration_ms"] < 10_000
    assert line["model"] == "iris" and line["version"] == "v1"
    assert line["prediction_id"] == body["prediction_id"]
    assert key_prefix.startswith("mlp_") and len(key_prefix) == 16
    assert line["time"].endswith("+00:00") and isinstance(line["pid"], int)


def test_the_principal_is_the_key_prefix_and_never_the_secret(
    user, make_key, client_for, log_lines
):
    key = make_key(user)

    client_for(key).get("/api/v1/models")

    [line] = request_lines(log_lines)
    assert key.startswith(line["principal"].removeprefix("key:") + "_")
    assert key not in json.dumps(line)


def test_a_user_with_a_jwt_is_logged_by_user_id(user, client, log_lines):
    token = client.post(
        "/api/v1/auth/token",
        {"username": "alice", "password": "alice-pass-123"},
        content_type="application/json",
    ).json()["access"]

    client.get("/api/v1/models", HTTP_AUTHORIZATION=f"Bearer {token}")

    models_line = [line for line in request_lines(log_lines) if line["path"] == "/api/v1/models"]
    assert models_line[0]["principal"] == f"user:{user.pk}"
    assert token not in json.dumps(models_line)


def test_an_anonymous_request_has_no_principal(client, log_lines):
    client.get("/health")

    [line] = request_lines(log_lines)
    assert line["path"] == "/health" and "principal" not in line


def test_an_invalid_request_id_is_replaced_by_a_generated_one(key_client):
    response = key_client.get("/api/v1/models", HTTP_X_REQUEST_ID="not valid; <script>")

    generated = response["X-Request-ID"]
    assert generated != "not valid; <script>"
    assert len(generated) == 32 and int(generated, 16) >= 0


def test_error_bodies_carry_the_request_id(key_client, client):
    refused = key_client.post(
        "/api/v1/predict", {"input_data": [1, 2]}, format="json", HTTP_X_REQUEST_ID="err-1"
    )
    unknown_route = client.get("/no/such/route", HTTP_X_REQUEST_ID="err-2")
    unauthenticated = client.get("/api/v1/models", HTTP_X_REQUEST_ID="err-3")

    assert refused.status_code == 400 and refused.json()["request_id"] == "err-1"
    assert unknown_route.status_code == 404 and unknown_route.json()["request_id"] == "err-2"
    assert unauthenticated.status_code == 401 and unauthenticated.json()["request_id"] == "err-3"


def test_an_oversized_body_is_refused_with_the_request_id(key_client, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_BODY_BYTES": 10}

    response = key_client.post(
        "/api/v1/predict", {"input_data": SETOSA}, format="json", HTTP_X_REQUEST_ID="big-1"
    )

    assert response.status_code == 413 and response.json()["request_id"] == "big-1"


def test_the_request_id_is_stored_on_predictions_and_jobs(key_client):
    prediction = key_client.post(
        "/api/v1/predict", {"input_data": SETOSA}, format="json", HTTP_X_REQUEST_ID="store-1"
    ).json()
    job = key_client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA]}, format="json", HTTP_X_REQUEST_ID="store-2"
    ).json()

    assert Prediction.objects.get(pk=prediction["prediction_id"]).request_id == "store-1"
    assert BatchJob.objects.get(pk=job["job_id"]).request_id == "store-2"
    assert key_client.get(f"/api/v1/predict/batch/{job['job_id']}").json()["request_id"] == (
        "store-2"
    )


def test_the_batch_task_logs_with_the_submitting_request_id(key_client, log_lines):
    job = key_client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA] * 3}, format="json", HTTP_X_REQUEST_ID="b-7"
    ).json()
    [submit_line] = request_lines(log_lines)

    batch_job_run(job["job_id"])

    task_lines = log_lines("predictions.batch.jobs")
    assert submit_line["job_id"] == job["job_id"] and submit_line["request_id"] == "b-7"
    assert task_lines and all(line["request_id"] == "b-7" for line in task_lines)
    assert all(line["job_id"] == job["job_id"] for line in task_lines)
    assert task_lines[0]["task"] == "batch_job_run"


def test_the_webhook_event_carries_the_request_id(key_client):
    job = key_client.post(
        "/api/v1/predict/batch", {"inputs": [SETOSA]}, format="json", HTTP_X_REQUEST_ID="hook-1"
    ).json()

    payload = webhook_payload(BatchJob.objects.get(pk=job["job_id"]), "batch_job.completed")

    assert payload["data"]["request_id"] == "hook-1"


def test_a_task_context_does_not_leak_into_the_next_task(log_lines):
    logger = logging.getLogger("tests.tasks")
    with log_context(request_id="first"):
        logger.info("inside")
    logger.info("outside")

    inside, outside = log_lines("tests.tasks")
    assert inside["request_id"] == "first" and "request_id" not in outside


def test_in_text_format_a_request_line_is_readable():
    record = logging.LogRecord(
        "mlplatform.request", logging.INFO, "", 0, "GET /x 200 1.0ms", (), None
    )
    record.method, record.path, record.status, record.duration_ms = "GET", "/x", 200, 1.0
    record.principal = "user:3"
    record.context = {"request_id": "abc"}

    line = TextFormatter().format(record)

    assert line.endswith("INFO mlplatform.request GET /x 200 1.0ms request_id=abc principal=user:3")


@pytest.mark.parametrize(("debug", "expected"), [("1", "text"), ("0", "json")])
def test_with_debug_on_the_console_logs_text(debug, expected, tmp_path):
    code = (
        "import django; django.setup(); import logging; "
        "print(type(logging.getLogger().handlers[0].formatter).__name__)"
    )
    env = {
        **os.environ,
        "DEBUG": debug,
        "MLPLATFORM_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "LOG_FORMAT"):
        env.pop(name, None)

    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )

    assert done.stdout.strip() == {"text": "TextFormatter", "json": "JSONFormatter"}[expected]


# The platform's handler: lines queued by callers, written by its thread and at exit.
_WRITER_SCRIPT = """
import django; django.setup()
import logging, os, sys, time
log = logging.getLogger("mlplatform.check")
for i in range(300):
    log.info("line %d", i)
try:
    1 / 0
except ZeroDivisionError:
    log.exception("failed")
if sys.argv[1] == "fork":
    child = os.fork()
    if child == 0:
        log.info("from the child")
        sys.exit(0)
    os.waitpid(child, 0)
log.info("the last line, written at exit")
"""


def console_lines(tmp_path, mode: str) -> list[dict]:
    env = {
        **os.environ,
        "DEBUG": "0",
        "MLPLATFORM_VAR_DIR": str(tmp_path),
        "DJANGO_SETTINGS_MODULE": "mlplatform.settings",
    }
    for name in ("DATABASE_URL", "REDIS_URL", "LOG_FORMAT"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _WRITER_SCRIPT, mode],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return [
        e for e in map(json.loads, done.stderr.splitlines()) if e["logger"] == "mlplatform.check"
    ]


def test_the_console_gets_every_line_in_order_up_to_the_process_exit(tmp_path):
    lines = console_lines(tmp_path, "plain")

    assert [e["message"] for e in lines[:300]] == [f"line {i}" for i in range(300)]
    assert lines[300]["message"] == "failed"
    assert "ZeroDivisionError" in lines[300]["exception"]
    assert lines[301]["message"] == "the last line, written at exit"
    assert len(lines) == 302


def test_a_forked_process_writes_its_own_lines_and_not_its_parents(tmp_path):
    lines = console_lines(tmp_path, "fork")

    messages = [e["message"] for e in lines]
    assert messages.count("line 0") == 1
    assert messages.count("failed") == 1
    assert messages.count("from the child") == 1
    assert messages[-1] == "the last line, written at exit"
    (child,) = (e["pid"] for e in lines if e["message"] == "from the child")
    parents = {e["pid"] for e in lines if e["message"] != "from the child"}
    assert len(parents) == 1
    assert child not in parents


def test_lines_queued_together_share_a_write():
    from mlplatform.logging import QueuedStreamHandler

    class Stream(io.StringIO):
        writes = 0

        def write(self, text: str) -> int:
            Stream.writes += 1
            return super().write(text)

    handler = QueuedStreamHandler()
    handler.setStream(Stream())
    handler.setFormatter(JSONFormatter())
    logger = logging.getLogger("mlplatform.check.one-write")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        for i in range(50):
            logger.warning("line %d", i)
        handler.flush()
    finally:
        logger.removeHandler(handler)
        logger.propagate = True

    lines = handler.stream.getvalue().splitlines()
    assert [json.loads(line)["message"] for line in lines] == [f"line {i}" for i in range(50)]
    # Usually one write; the thread may have taken some of them first on a slow host.
    assert 1 <= Stream.writes < 50
