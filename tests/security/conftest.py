"""Shared helpers of the security suite: callers, one user's objects, the error shape."""

import pytest
from prometheus_client import REGISTRY
from rest_framework.test import APIClient

from predictions.batch.jobs import batch_job_process
from predictions.models import BatchJob

IRIS = [5.1, 3.5, 1.4, 0.2]
ERROR_KEYS = {"detail", "code", "request_id"}


def assert_error(response, status: int, code: str | None = None) -> dict:
    """The one error shape: JSON ``{"detail", "code"}`` (and the request id), nothing else."""
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert isinstance(body.get("detail"), str) and body["detail"]
    assert isinstance(body.get("code"), str) and body["code"]
    assert set(body) <= ERROR_KEYS | {"errors"}, body
    if code is not None:
        assert body["code"] == code, body
    return body


def jwt_client(username: str) -> tuple[APIClient, dict]:
    """A client sending a fresh access token of ``username``, and the token pair."""
    client = APIClient()
    tokens = client.post(
        "/api/v1/auth/token",
        {"username": username, "password": f"{username}-pass-123"},
        format="json",
    ).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return client, tokens


@pytest.fixture
def alice(user, make_key, client_for) -> APIClient:
    """The attacker: a valid caller with every scope."""
    return client_for(make_key(user))


@pytest.fixture
def bob(other_user, make_key, client_for) -> APIClient:
    """The victim, holding every scope."""
    return client_for(make_key(other_user))


@pytest.fixture
def bobs_objects(demo_models, bob, other_user, make_key) -> dict:
    """One of each of the victim's objects: prediction, finished and queued jobs, feedback, key."""
    from accounts.models import ApiKey

    prediction = bob.post("/api/v1/predict", {"input_data": IRIS}, format="json").json()
    assert (
        bob.post(
            f"/api/v1/predictions/{prediction['prediction_id']}/feedback",
            {"actual": "setosa"},
            format="json",
        ).status_code
        == 201
    )
    finished = bob.post("/api/v1/predict/batch", {"inputs": [IRIS] * 3}, format="json").json()[
        "job_id"
    ]
    batch_job_process(job_id=finished)
    queued = bob.post("/api/v1/predict/batch", {"inputs": [IRIS] * 2}, format="json").json()
    make_key(other_user, name="bob's spare")
    return {
        "prediction": prediction["prediction_id"],
        "finished_job": finished,
        "queued_job": queued["job_id"],
        "key": ApiKey.objects.get(owner=other_user, name="bob's spare").pk,
        "job_status": BatchJob.objects.get(pk=queued["job_id"]).status,
    }


def _counter_total(name: str) -> float:
    value = 0.0
    for metric in REGISTRY.collect():
        for sample in metric.samples:
            if sample.name == name:
                value += sample.value
    return value


def pytest_terminal_summary(terminalreporter):
    """The figures SECURITY.md quotes: requests the rate limits refused, credentials refused."""
    limited = _counter_total("mlplatform_rate_limited_total")
    refused = _counter_total("mlplatform_auth_failures_total")
    if limited or refused:
        terminalreporter.write_line(
            f"security figures: {limited:.0f} requests refused by rate limits (429), "
            f"{refused:.0f} refused for bad or missing credentials (401)"
        )
