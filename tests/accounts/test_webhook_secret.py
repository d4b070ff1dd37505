"""The webhook signing secret: readable and rotatable by its user's own login only."""

import base64

import pytest
from rest_framework.test import APIClient

from accounts.models import User

SECRET_URL = "/api/v1/webhooks/secret"
ROTATE_URL = "/api/v1/webhooks/secret/rotate"


def jwt_client_for(username: str) -> APIClient:
    client = APIClient()
    tokens = client.post(
        "/api/v1/auth/token",
        {"username": username, "password": f"{username}-pass-123"},
        format="json",
    ).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return client


@pytest.fixture
def alice(user) -> APIClient:
    return jwt_client_for(user.username)


def test_the_user_reads_their_secret_and_it_is_not_cached(alice, user):
    response = alice.get(SECRET_URL)

    assert response.status_code == 200
    secret = response.json()["secret"]
    assert secret == user.webhook_secret
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"))) == 32
    assert response["Cache-Control"] == "no-store"
    assert alice.get(SECRET_URL + "/").json()["secret"] == secret


def test_a_session_login_may_read_it_too(client, user):
    client.force_login(user)

    response = client.get(SECRET_URL, HTTP_ACCEPT="application/json")

    assert response.status_code == 200
    assert response.json()["secret"] == user.webhook_secret


def test_rotate_replaces_the_secret(alice, user):
    old = user.webhook_secret

    response = alice.post(ROTATE_URL)

    assert response.status_code == 200
    assert response["Cache-Control"] == "no-store"
    new = response.json()["secret"]
    assert new != old and new.startswith("whsec_")
    assert len(base64.b64decode(new.removeprefix("whsec_"))) == 32
    assert User.objects.get(pk=user.pk).webhook_secret == new
    assert alice.get(SECRET_URL).json()["secret"] == new


def test_rotate_needs_post(alice, user):
    response = alice.get(ROTATE_URL)

    assert response.status_code == 405
    assert User.objects.get(pk=user.pk).webhook_secret == user.webhook_secret


@pytest.mark.parametrize(("method", "url"), [("get", SECRET_URL), ("post", ROTATE_URL)])
def test_if_called_with_an_api_key_then_403(key_client, user, method, url):
    response = getattr(key_client, method)(url)

    assert response.status_code == 403
    assert response.json()["code"] == "user_credentials_required"
    assert "webhook secret" in response.json()["detail"]
    assert user.webhook_secret not in response.content.decode()
    assert User.objects.get(pk=user.pk).webhook_secret == user.webhook_secret


@pytest.mark.parametrize(("method", "url"), [("get", SECRET_URL), ("post", ROTATE_URL)])
def test_if_anonymous_then_401(db, method, url):
    response = getattr(APIClient(), method)(url)

    assert response.status_code == 401


def test_another_users_secret_is_never_visible(alice, user, other_user):
    bob = jwt_client_for(other_user.username)

    read = bob.get(SECRET_URL).json()["secret"]
    rotated = bob.post(ROTATE_URL).json()["secret"]

    assert read == other_user.webhook_secret
    assert user.webhook_secret not in (read, rotated)
    assert User.objects.get(pk=user.pk).webhook_secret == user.webhook_secret
    assert alice.get(SECRET_URL).json()["secret"] == user.webhook_secret
