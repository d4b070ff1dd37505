"""OWASP API3:2023 Broken Object Property Level Authorization.

Excessive exposure: no key hash, password hash, signing secret, raw key (after its create
answer) or another user's webhook secret appears in any API answer or any log line.
Mass assignment: fields a client may not set (owner, lookup, hash, revocation, rate limits,
status, progress...) are ignored, and the stored rows show it.
"""

import logging
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import crypto
from accounts.models import ApiKey
from predictions.batch.jobs import batch_job_process
from predictions.models import BatchJob, Feedback, Prediction
from tests.security.conftest import IRIS, assert_error, jwt_client
from tests.streams import streamed

WEBHOOK_SECRET_URL = "/api/v1/webhooks/secret"


def _secrets_of(*users) -> dict[str, str]:
    """Every secret value the platform holds for these users, by name."""
    found = {
        "SECRET_KEY": settings.SECRET_KEY,
        "JWT_SIGNING_KEY": settings.JWT_SIGNING_KEY,
    }
    for user in users:
        user.refresh_from_db()
        found[f"{user.username}: password hash"] = user.password
        found[f"{user.username}: password"] = f"{user.username}-pass-123"
        found[f"{user.username}: webhook secret"] = user.webhook_secret
        for key in ApiKey.objects.filter(owner=user):
            found[f"{user.username}: key hash {key.pk}"] = key.hashed_key
    return found


def _leaks(text: str, secrets: dict[str, str]) -> list[str]:
    return [name for name, value in secrets.items() if value and value in text]


def _crawl(client: APIClient, objects: dict) -> dict[str, str]:
    """The answer text of every read endpoint, for the caller's own data."""
    urls = [
        "/api/v1/",
        "/api/v1/models",
        "/api/v1/models/iris",
        "/api/v1/predictions",
        f"/api/v1/predict/{objects['prediction']}",
        "/api/v1/jobs",
        f"/api/v1/predict/batch/{objects['job']}",
        f"/api/v1/predict/batch/{objects['job']}/results",
        f"/api/v1/predict/batch/{objects['job']}/results?format=csv",
        f"/api/v1/predict/batch/{objects['job']}/results?format=jsonl",
        f"/api/v1/predict/batch/{objects['job']}/events",
        "/api/v1/stats",
        "/api/schema/",
        "/health",
        "/ready",
    ]
    answers = {}
    for url in urls:
        response = client.get(url)
        assert response.status_code == 200, (url, response.status_code)
        content = streamed(response) if response.streaming else response.content
        answers[url] = content.decode(errors="replace") + str(response.headers)
    return answers


@pytest.fixture
def own_objects(demo_models, user, make_key, client_for) -> dict:
    client = client_for(make_key(user))
    prediction = client.post("/api/v1/predict", {"input_data": IRIS}, format="json").json()
    job = client.post("/api/v1/predict/batch", {"inputs": [IRIS] * 2}, format="json").json()
    batch_job_process(job_id=job["job_id"])
    return {"client": client, "prediction": prediction["prediction_id"], "job": job["job_id"]}


def test_no_secret_appears_in_any_answer_about_the_callers_own_data(
    user, other_user, make_key, own_objects
):
    make_key(other_user)
    jwt, tokens = jwt_client(user.username)
    created = jwt.post("/api/v1/keys", {"name": "crawl", "scopes": ["read"]}, format="json")
    raw = created.json()["key"]
    secrets = {
        **_secrets_of(user, other_user),
        "the new raw key": raw,
        "the new key's secret part": raw.split("_")[2],
        "refresh token": tokens["refresh"],
    }

    answers = _crawl(own_objects["client"], own_objects)
    answers |= {
        "GET /api/v1/keys (jwt)": jwt.get("/api/v1/keys").content.decode(),
        "GET /api/v1/keys/{id} (jwt)": jwt.get(
            f"/api/v1/keys/{created.json()['id']}"
        ).content.decode(),
    }

    assert {
        url: _leaks(text, secrets) for url, text in answers.items() if _leaks(text, secrets)
    } == {}
    assert len(answers) == 17


def test_key_answers_carry_no_hash_and_the_raw_key_only_once(user):
    jwt, _ = jwt_client(user.username)

    created = jwt.post("/api/v1/keys", {"name": "k", "scopes": ["read"]}, format="json").json()
    listed = jwt.get("/api/v1/keys").json()["results"][0]
    read = jwt.get(f"/api/v1/keys/{created['id']}").json()

    stored = ApiKey.objects.get(pk=created["id"])
    assert created["key"] and crypto.key_matches(created["key"], stored.hashed_key)
    for answer in (created, listed, read):
        assert not {"hashed_key", "lookup", "owner", "rate_limits"} & set(answer)
        assert stored.hashed_key not in str(answer)
    assert "key" not in listed and "key" not in read


def test_the_webhook_secret_is_only_the_callers_own(user, other_user):
    jwt, _ = jwt_client(user.username)

    mine = jwt.get(WEBHOOK_SECRET_URL).json()["secret"]
    rotated = jwt.post(WEBHOOK_SECRET_URL + "/rotate").json()["secret"]

    other_user.refresh_from_db()
    user.refresh_from_db()
    assert mine != other_user.webhook_secret and rotated != other_user.webhook_secret
    assert rotated == user.webhook_secret


# --- Logs -------------------------------------------------------------------------------


def _logged_text(records) -> str:
    """Everything a log line can show: message, arguments, extras, context, exception."""
    formatter = logging.Formatter()
    lines = []
    for record in records:
        trace = formatter.formatException(record.exc_info) if record.exc_info else ""
        lines.append(f"{record.getMessage()} {record.__dict__!r} {trace}")
    return "\n".join(lines)


@pytest.mark.usefixtures("demo_models")
def test_no_credential_appears_in_any_log_line(user, caplog):
    caplog.set_level(logging.DEBUG)
    anonymous = APIClient()
    # Login (both endpoints), a wrong password, key creation, predictions, failed key auth.
    tokens = anonymous.post(
        "/api/v1/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json"
    ).json()
    login = anonymous.post(
        "/api/v1/auth/login", {"username": "alice", "password": "alice-pass-123"}, format="json"
    ).json()
    anonymous.post(
        "/api/v1/auth/login", {"username": "alice", "password": "wrong-pass-456"}, format="json"
    )
    jwt = APIClient()
    jwt.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    raw = jwt.post("/api/v1/keys", {"name": "logged", "scopes": ["predict"]}, format="json").json()[
        "key"
    ]
    keyed = APIClient()
    keyed.credentials(HTTP_X_API_KEY=raw)
    assert keyed.post("/api/v1/predict", {"input_data": IRIS}, format="json").status_code == 200
    bad_key = raw[:-1] + ("A" if raw[-1] != "A" else "B")
    keyed.credentials(HTTP_X_API_KEY=bad_key)
    keyed.get("/api/v1/predictions")
    jwt.get(WEBHOOK_SECRET_URL)
    anonymous.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    anonymous.post("/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json")

    logged = _logged_text(caplog.records)
    user.refresh_from_db()
    secrets = {
        "password": "alice-pass-123",
        "wrong password": "wrong-pass-456",
        "raw key": raw,
        "key secret part": raw.split("_")[2],
        "forged key": bad_key,
        "access token": tokens["access"],
        "refresh token": tokens["refresh"],
        "login token": login["access_token"],
        "webhook secret": user.webhook_secret,
        **_secrets_of(user),
    }
    assert len(caplog.records) >= 8  # the request lines were captured: the check means something
    assert _leaks(logged, secrets) == []


# --- Mass assignment --------------------------------------------------------------------


def test_key_creation_ignores_fields_a_client_may_not_set(user, other_user):
    jwt, _ = jwt_client(user.username)
    long_ago = (timezone.now() - timedelta(days=400)).isoformat()

    response = jwt.post(
        "/api/v1/keys",
        {
            "name": "mass",
            "scopes": ["read"],
            "owner": other_user.pk,
            "owner_id": other_user.pk,
            "lookup": "AAAAAAAAAAAA",
            "prefix": "mlp_AAAAAAAAAAAA",
            "hashed_key": "0" * 64,
            "key": "mlp_chosen",
            "revoked_at": long_ago,
            "rate_limits": "predict=100000/s",
            "created_at": long_ago,
            "last_used_at": long_ago,
            "is_active": False,
            "id": 424242,
        },
        format="json",
    )

    assert response.status_code == 201
    body = response.json()
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.pk != 424242
    assert stored.owner == user
    assert stored.lookup != "AAAAAAAAAAAA" and crypto.parse_lookup(body["key"]) == stored.lookup
    assert stored.hashed_key == crypto.hash_key(body["key"]) != "0" * 64
    assert body["key"] != "mlp_chosen"
    assert stored.revoked_at is None and stored.last_used_at is None
    assert stored.rate_limits == ""
    assert timezone.now() - stored.created_at < timedelta(minutes=1)


def test_key_creation_refuses_scopes_the_owner_lacks(db, client_for):
    from accounts.models import User

    plain = User.objects.create_user("erin", password="erin-pass-123")
    jwt, _ = jwt_client(plain.username)

    response = jwt.post("/api/v1/keys", {"name": "k", "scopes": ["predict"]}, format="json")

    assert_error(response, 403)
    assert not ApiKey.objects.filter(owner=plain).exists()


def test_a_key_cannot_be_edited_or_unrevoked(user, make_key):
    make_key(user)
    key = ApiKey.objects.get(owner=user)
    key.revoked_at = timezone.now()
    key.save()
    jwt, _ = jwt_client(user.username)

    for method in ("put", "patch"):
        response = getattr(jwt, method)(
            f"/api/v1/keys/{key.pk}",
            {"revoked_at": None, "scopes": ["predict", "batch"], "rate_limits": "9999/s"},
            format="json",
        )
        assert_error(response, 405)

    key.refresh_from_db()
    assert key.revoked_at is not None and key.rate_limits == ""


@pytest.mark.usefixtures("demo_models")
def test_batch_submission_ignores_owner_status_and_progress(alice, user, other_user):
    response = alice.post(
        "/api/v1/predict/batch",
        {
            "inputs": [IRIS] * 2,
            "owner": other_user.pk,
            "status": "completed",
            "completed": 2,
            "completed_inputs": 2,
            "total_inputs": 1,
            "error": "none",
            "cancel_requested": True,
            "job_id": "00000000-0000-0000-0000-000000000000",
        },
        format="json",
    )

    assert response.status_code == 202
    job = BatchJob.objects.get(pk=response.json()["job_id"])
    assert str(job.pk) != "00000000-0000-0000-0000-000000000000"
    assert job.owner == user
    assert job.status == BatchJob.Status.QUEUED
    assert job.completed_inputs == 0 and job.total_inputs == 2
    assert not job.cancel_requested and not job.error


@pytest.mark.usefixtures("demo_models")
def test_a_prediction_ignores_output_and_owner_fields(alice, user, other_user):
    response = alice.post(
        "/api/v1/predict",
        {
            "input_data": IRIS,
            "model": "iris",
            "model_version": "v1",
            "owner": other_user.pk,
            "prediction_id": "00000000-0000-0000-0000-000000000000",
            "prediction": [0, 0, 1],
            "label": "virginica",
            "confidence": 1.0,
            "cached": True,
        },
        format="json",
    )

    assert response.status_code == 200
    body = response.json()
    stored = Prediction.objects.get(pk=body["prediction_id"])
    assert stored.owner == user
    assert body["prediction_id"] != "00000000-0000-0000-0000-000000000000"
    assert body["label"] == stored.label == "setosa"
    assert body["cached"] is False


@pytest.mark.usefixtures("demo_models")
def test_feedback_computes_correctness_itself(alice):
    prediction = alice.post("/api/v1/predict", {"input_data": IRIS}, format="json").json()

    response = alice.post(
        f"/api/v1/predictions/{prediction['prediction_id']}/feedback",
        {"actual": "virginica", "correct": True, "actual_label": "setosa"},
        format="json",
    )

    assert response.status_code == 201
    stored = Feedback.objects.get(prediction_id=prediction["prediction_id"])
    assert stored.actual_label == "virginica" and stored.correct is False
