"""OWASP API2:2023 Broken Authentication.

Forged, expired, replayed and revoked credentials of every kind are refused with 401, the one
error shape and a ``WWW-Authenticate`` challenge; nothing is served to them. Password guesses
are rate limited per client address, on the API's login and on the password forms alike.
"""

import base64
import json
from datetime import timedelta

import jwt
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from accounts import crypto
from accounts.models import ApiKey
from mlplatform.conf import DEFAULTS
from tests.security.conftest import IRIS, assert_error, jwt_client

PROTECTED = "/api/v1/predictions"
OTHER_KEY = "a-key-that-is-not-the-signing-key-of-this-platform-at-all-0123456789"


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def assert_refused(response, code: str | None = None) -> None:
    assert_error(response, 401, code)
    assert response["WWW-Authenticate"]


def bearer(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def _claims(user) -> dict:
    return jwt.decode(
        str(AccessToken.for_user(user)), settings.JWT_SIGNING_KEY, algorithms=["HS256"]
    )


# --- JWT --------------------------------------------------------------------------------


def test_a_valid_access_token_is_accepted(user):
    """The control for the forgeries below."""
    assert bearer(str(AccessToken.for_user(user))).get(PROTECTED).status_code == 200


def test_an_expired_access_token_is_401(user):
    token = AccessToken.for_user(user)
    token.set_exp(from_time=timezone.now() - timedelta(hours=1))

    assert_refused(bearer(str(token)).get(PROTECTED), "token_not_valid")


def test_a_tampered_payload_is_401(user, other_user):
    header, payload, signature = str(AccessToken.for_user(user)).split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=="))
    claims["user_id"] = str(other_user.pk)

    forged = ".".join([header, _b64(claims), signature])

    assert_refused(bearer(forged).get(PROTECTED), "token_not_valid")


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_an_unsigned_alg_none_token_is_401(user, alg):
    claims = _claims(user)
    unsigned = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64(claims)}."

    assert_refused(bearer(unsigned).get(PROTECTED), "token_not_valid")


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (OTHER_KEY, "HS256"),
        (None, "HS256"),  # Django's SECRET_KEY: a real secret, but not the JWT key
        (OTHER_KEY, "HS512"),
    ],
)
def test_a_token_signed_with_another_key_or_algorithm_is_401(user, key, alg):
    forged = jwt.encode(_claims(user), key or settings.SECRET_KEY, algorithm=alg)

    assert_refused(bearer(forged).get(PROTECTED), "token_not_valid")


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
def test_the_signing_algorithm_cannot_be_switched_to_hs512_with_the_real_key(user):
    forged = jwt.encode(_claims(user), settings.JWT_SIGNING_KEY, algorithm="HS512")

    assert_refused(bearer(forged).get(PROTECTED), "token_not_valid")


def test_a_refresh_token_is_not_an_access_token(user):
    refresh = str(RefreshToken.for_user(user))

    assert_refused(bearer(refresh).get(PROTECTED), "token_not_valid")


def test_a_token_of_a_deactivated_user_is_401(user):
    token = str(AccessToken.for_user(user))
    user.is_active = False
    user.save()

    assert_refused(bearer(token).get(PROTECTED))


@pytest.mark.parametrize(
    "header", ["Bearer", "Bearer ", "Bearer a b", "Token abc", "Basic YWxpY2U6eA==", "bearer x.y.z"]
)
def test_a_malformed_authorization_header_is_refused(db, header):
    response = APIClient().get(PROTECTED, HTTP_AUTHORIZATION=header)

    assert_refused(response)


def test_a_refresh_token_reused_after_rotation_is_blacklisted(user):
    _, tokens = jwt_client(user.username)
    client = APIClient()

    rotated = client.post(
        "/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    replayed = client.post(
        "/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )

    assert rotated.status_code == 200
    assert_refused(replayed, "token_not_valid")
    assert "blacklisted" in replayed.json()["detail"]
    assert "access" not in replayed.json()


def test_a_logged_out_refresh_token_is_refused(user):
    _, tokens = jwt_client(user.username)
    client = APIClient()
    logout = client.post("/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json")
    assert logout.status_code == 200

    refreshed = client.post(
        "/api/v1/auth/token/refresh", {"refresh": tokens["refresh"]}, format="json"
    )
    logged_out_again = client.post(
        "/api/v1/auth/logout", {"refresh": tokens["refresh"]}, format="json"
    )

    assert_refused(refreshed, "token_not_valid")
    assert_refused(logged_out_again, "token_not_valid")


def refresh(token: str):
    return APIClient().post("/api/v1/auth/token/refresh", {"refresh": token}, format="json")


def test_a_password_change_ends_every_token_of_the_user(user, make_key, client_for):
    access_client, tokens = jwt_client(user.username)
    _, other_session = jwt_client(user.username)
    key_client = client_for(make_key(user))
    assert access_client.get(PROTECTED).status_code == 200

    user.set_password("a-new-password-456")
    user.save()

    assert_refused(refresh(tokens["refresh"]), "password_changed")
    assert_refused(refresh(other_session["refresh"]), "password_changed")
    assert_refused(access_client.get(PROTECTED), "password_changed")
    assert key_client.get(PROTECTED).status_code == 200  # keys are revoked one by one
    again = APIClient().post(
        "/api/v1/auth/token",
        {"username": user.username, "password": "a-new-password-456"},
        format="json",
    )
    assert refresh(again.json()["refresh"]).status_code == 200


def test_logging_out_everywhere_ends_every_refresh_token_of_the_user(user, other_user):
    client, first = jwt_client(user.username)
    _, second = jwt_client(user.username)
    _, someone_else = jwt_client(other_user.username)

    response = client.post("/api/v1/auth/logout/all")

    assert response.status_code == 204
    assert_refused(refresh(first["refresh"]), "token_not_valid")
    assert_refused(refresh(second["refresh"]), "token_not_valid")
    assert refresh(someone_else["refresh"]).status_code == 200


def test_an_api_key_cannot_log_its_user_out_everywhere(user, make_key, client_for):
    _, tokens = jwt_client(user.username)

    response = client_for(make_key(user)).post("/api/v1/auth/logout/all")

    assert_error(response, 403, "user_credentials_required")
    assert refresh(tokens["refresh"]).status_code == 200


@pytest.mark.parametrize("url", ["/api/v1/auth/token", "/api/v1/auth/login"])
def test_wrong_passwords_and_unknown_users_are_401_alike(user, url):
    wrong = APIClient().post(url, {"username": "alice", "password": "nope"}, format="json")
    unknown = APIClient().post(url, {"username": "mallory", "password": "nope"}, format="json")

    assert_refused(wrong)
    assert_refused(unknown)
    # The same words: the answer does not tell which usernames exist.
    assert wrong.json()["detail"] == unknown.json()["detail"]


# --- API keys ---------------------------------------------------------------------------


def _key_client(raw: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_X_API_KEY=raw)
    return client


@pytest.mark.usefixtures("demo_models")
def test_a_revoked_key_is_401(user, make_key):
    raw = make_key(user)
    ApiKey.objects.update(revoked_at=timezone.now())

    response = _key_client(raw).post("/api/v1/predict", {"input_data": IRIS}, format="json")

    assert_refused(response, "revoked_api_key")


@pytest.mark.usefixtures("demo_models")
def test_an_expired_key_is_401(user, make_key):
    raw = make_key(user, expires_at=timezone.now() + timedelta(days=1))
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = _key_client(raw).post("/api/v1/predict", {"input_data": IRIS}, format="json")

    assert_refused(response, "expired_api_key")


def _with_valid_checksum(body: str) -> str:
    return body + crypto.checksum(body)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "mlp_",
        "not-a-key",
        "mlp_short_key",
        "mlp_" + "A" * 200,
        "xyz_AAAAAAAAAAAA_" + "A" * 46,
        "mlp_AAAAAAAAAAAA_" + "A" * 46,  # the shape, a wrong checksum
        "mlp_AAAAAAAAAAAA_" + "A" * 45 + "\u00e9",
        "' OR 1=1 --",
    ],
)
def test_a_malformed_key_is_401(db, raw):
    assert_refused(_key_client(raw).get(PROTECTED), "malformed_api_key")


def test_a_well_formed_unknown_key_is_401(user, make_key):
    make_key(user)
    unknown = _with_valid_checksum("mlp_" + "B" * crypto.LOOKUP_LENGTH + "_" + "C" * 40)

    assert_refused(_key_client(unknown).get(PROTECTED), "invalid_api_key")


def test_a_known_lookup_with_another_secret_is_401(user, make_key):
    raw = make_key(user)
    lookup = crypto.parse_lookup(raw)
    forged = _with_valid_checksum(f"mlp_{lookup}_" + "Z" * crypto.SECRET_LENGTH)

    assert_refused(_key_client(forged).get(PROTECTED), "invalid_api_key")


def test_a_key_of_a_deactivated_user_is_401(user, make_key):
    raw = make_key(user)
    user.is_active = False
    user.save()

    assert_refused(_key_client(raw).get(PROTECTED), "user_inactive")


def test_without_credentials_the_answer_is_401_with_a_challenge(db):
    response = APIClient().get(PROTECTED)

    assert_refused(response, "not_authenticated")
    assert "X-API-Key" in response["WWW-Authenticate"]
    assert response["WWW-Authenticate"].startswith("Bearer")


def test_a_bad_key_is_not_rescued_by_a_good_token(user, make_key):
    """Two credentials, one bad: refused, never authenticated by the other one."""
    client = bearer(str(AccessToken.for_user(user)))
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {AccessToken.for_user(user)}", HTTP_X_API_KEY="mlp_bad"
    )

    assert_refused(client.get(PROTECTED), "malformed_api_key")


# --- Password guessing ------------------------------------------------------------------


@pytest.fixture
def auth_rate(settings):
    """Set the ``auth`` group's rate for one test."""
    # Per hour in these tests: django-ratelimit starts each key's window at its own offset, so
    # a window of a minute could end in the middle of a test.

    def set_rate(rate: str) -> None:
        settings.PLATFORM = {
            **settings.PLATFORM,
            "RATE_LIMITS": {**DEFAULTS["RATE_LIMITS"], "auth": rate},
        }

    return set_rate


def test_login_brute_force_is_rate_limited_per_client_address(user, auth_rate):
    auth_rate("5/h")
    client = APIClient(REMOTE_ADDR="203.0.113.50")
    guesses = [
        client.post("/api/v1/auth/login", {"username": "alice", "password": f"guess{i}"})
        for i in range(6)
    ]
    right = client.post("/api/v1/auth/token", {"username": "alice", "password": "alice-pass-123"})

    assert [g.status_code for g in guesses] == [401] * 5 + [429]
    assert_error(right, 429, "rate_limited")
    assert "access" not in right.json()


# The password forms outside the API: the admin's (staff only) and the browsable API's.
FORMS = ["/admin/login/", "/api-auth/login/"]
STAFF = {"username": "carol", "password": "carol-pass-123"}


def _guess(n: int) -> dict:
    return {"username": "carol", "password": f"guess-{n}"}


def _signed_in(client: Client) -> bool:
    return "_auth_user_id" in client.session


@pytest.mark.parametrize("url", FORMS)
def test_password_guesses_on_a_login_form_get_429_past_the_limit(staff, auth_rate, url):
    auth_rate("3/h")
    client = Client(REMOTE_ADDR="203.0.113.61")
    shown = [client.get(url) for _ in range(5)]
    guesses = [client.post(url, _guess(n)) for n in range(3)]

    refused = client.post(url, STAFF)
    shown_again = client.get(url)

    assert [r.status_code for r in shown] == [200] * 5  # showing the form is not counted
    assert [g.status_code for g in guesses] == [200] * 3  # the form again, with its error
    assert all("correct username and password" in g.content.decode() for g in guesses)
    body = assert_error(refused, 429, "rate_limited")
    assert body["detail"].startswith(
        "Rate limit of 3 requests per hour for 'auth' exceeded; retry in"
    )
    assert 1 <= int(refused["Retry-After"]) <= 3600
    assert refused["X-RateLimit-Limit"] == "3"
    assert refused["X-RateLimit-Remaining"] == "0"
    assert not _signed_in(client)  # the right password, once limited, signs nobody in
    assert shown_again.status_code == 200


@pytest.mark.parametrize("url", FORMS)
def test_a_limited_address_does_not_lock_out_another(staff, auth_rate, url):
    auth_rate("2/h")
    attacker = Client(REMOTE_ADDR="203.0.113.62")
    for n in range(2):
        attacker.post(url, _guess(n))
    owner = Client(REMOTE_ADDR="198.51.100.62")

    limited = attacker.post(url, _guess(2))
    signed_in = owner.post(url, STAFF)

    assert limited.status_code == 429
    assert signed_in.status_code == 302
    assert _signed_in(owner)


def test_the_forms_and_the_api_login_count_on_one_counter(staff, auth_rate):
    """Guesses spread over every way in still add up to one limit per address."""
    auth_rate("3/h")
    address = "203.0.113.63"
    wrong = _guess(0)

    codes = [
        APIClient(REMOTE_ADDR=address).post("/api/v1/auth/login", wrong).status_code,
        Client(REMOTE_ADDR=address).post("/admin/login/", wrong).status_code,
        Client(REMOTE_ADDR=address).post("/api-auth/login/", wrong).status_code,
        APIClient(REMOTE_ADDR=address).post("/api/v1/auth/token", wrong).status_code,
    ]

    assert codes == [401, 200, 200, 429]


@pytest.mark.parametrize("url", FORMS)
def test_behind_a_trusted_proxy_a_form_counts_the_forwarded_client(staff, auth_rate, settings, url):
    auth_rate("1/h")
    settings.TRUSTED_PROXY_COUNT = 1

    def attempt(forwarded: str) -> int:
        client = Client(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
        return client.post(url, _guess(0)).status_code

    # The client may prepend anything; the proxy appends the address it saw, which counts.
    assert attempt("1.1.1.1, 192.0.2.20") == 200
    assert attempt("8.8.8.8, 192.0.2.20") == 429
    assert attempt("192.0.2.21") == 200  # another client behind the same proxy
