"""JWT: token pair, refresh rotation with blacklisting, verify, logout, and the tutorial login."""

import pytest
from rest_framework.test import APIClient

CREDENTIALS = {"username": "alice", "password": "alice-pass-123"}
IRIS = {"input_data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def tokens(user) -> dict:
    return APIClient().post("/api/v1/auth/token", CREDENTIALS, format="json").json()


@pytest.mark.usefixtures("demo_models")
def test_an_access_token_authenticates_a_prediction(tokens):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")

    response = client.post("/api/v1/predict", IRIS, format="json")

    assert response.status_code == 200


def test_wrong_password_is_401(user):
    response = APIClient().post(
        "/api/v1/auth/token", {"username": "alice", "password": "nope"}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["detail"]


def test_refresh_rotates_and_a_used_refresh_token_cannot_be_reused(tokens):
    client = APIClient()

    first = client.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")
    reused = client.post(
        "/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )

    assert first.status_code == 200
    assert first.json()["refresh"] != tokens["refresh"]
    assert reused.status_code == 401
    assert reused.json()["code"] == "token_not_valid"


def test_verify_accepts_a_good_token_and_refuses_a_tampered_one(tokens):
    client = APIClient()
    tampered = tokens["access"][:-2] + ("AA" if not tokens["access"].endswith("AA") else "BB")

    assert (
        client.post(
            "/api/v1/auth/token/verify", {"token": tokens["access"]}, format="json"
        ).status_code
        == 200
    )
    assert (
        client.post("/api/v1/auth/token/verify", {"token": tampered}, format="json").status_code
        == 401
    )


def test_logout_blacklists_the_refresh_token(tokens):
    client = APIClient()

    assert (
        client.post(
            "/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json"
        ).status_code
        == 200
    )
    after = client.post("/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json")

    assert after.status_code == 401


def test_a_tampered_bearer_token_is_401_with_a_challenge(db):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")

    response = client.get("/api/v1/models")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json()["code"] == "token_not_valid"


@pytest.mark.parametrize("fmt", ["json", "multipart"])
def test_tutorial_login_takes_json_or_form_and_answers_a_bearer_token(user, fmt):
    response = APIClient().post("/api/v1/auth/login", CREDENTIALS, format=fmt)

    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access_token']}")
    assert client.get("/api/v1/models").status_code == 200


def test_tutorial_login_form_encoded(user):
    response = APIClient().post(
        "/api/v1/auth/login",
        "username=alice&password=alice-pass-123",
        content_type="application/x-www-form-urlencoded",
    )

    assert response.status_code == 200


def test_tutorial_login_with_a_wrong_password_is_401(user):
    response = APIClient().post(
        "/api/v1/auth/login", {"username": "alice", "password": "x"}, format="json"
    )

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_credentials"
    assert response["WWW-Authenticate"]


def test_session_login_works_for_the_browsable_api(user):
    client = APIClient()
    assert client.login(**CREDENTIALS)

    response = client.get("/api/v1/models", HTTP_ACCEPT="text/html")

    assert response.status_code == 200
    assert b"<html" in response.content
