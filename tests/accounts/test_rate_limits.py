"""Rate limits: groups, principals, overrides, headers, the 429 answer and trusted proxies."""

import asyncio
import time

import pytest
from django.core.management import CommandError, call_command
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.ratelimit import acount, count
from accounts.rates import parse_overrides, parse_rate
from accounts.services import api_key_create, api_key_set_rate_limits
from mlplatform.conf import DEFAULTS
from predictions.models import Prediction

IRIS = {"input_data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def tiers(settings):
    """Set some groups' rates for one test; the others keep their defaults."""

    def set_tiers(**rates: str) -> None:
        settings.PLATFORM = {
            **settings.PLATFORM,
            "RATE_LIMITS": {**DEFAULTS["RATE_LIMITS"], **rates},
        }

    return set_tiers


def _predict(client: APIClient):
    return client.post("/api/v1/predict", IRIS, format="json")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("600/m", (600, 60)), ("100/5m", (100, 300)), (" 3 / h ", (3, 3600)), ("1/d", (1, 86400))],
)
def test_rates_parse(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["", "600", "600/w", "0/m", "-1/m", "m/600", "600/0m", None])
def test_malformed_rates_are_refused(text):
    with pytest.raises(ValueError, match="600/m|at least 1"):
        parse_rate(text)


def test_overrides_parse_and_name_their_problem():
    assert parse_overrides("1200/m") == {"predict": "1200/m"}
    assert parse_overrides("predict=5/s, batch=10/h") == {"predict": "5/s", "batch": "10/h"}
    assert parse_overrides("") == {}
    with pytest.raises(ValueError, match="unknown group 'admin'"):
        parse_overrides("admin=5/m")
    with pytest.raises(ValueError, match="given twice"):
        parse_overrides("5/m, predict=6/m")


def test_predict_admits_the_limit_then_answers_429_with_retry_after(tiers, demo_models, key_client):
    tiers(predict="3/m")

    answers = [_predict(key_client) for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert [a["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
    assert all(a["X-RateLimit-Limit"] == "3" for a in answers)
    reset = int(answers[0]["X-RateLimit-Reset"])
    assert time.time() - 1 <= reset <= time.time() + 61
    refused = answers[-1]
    assert refused.json()["code"] == "rate_limited"
    detail = refused.json()["detail"]
    assert detail.startswith("Rate limit of 3 requests per minute for 'predict' exceeded; retry in")
    assert detail.count("retry") == 1 and "Expected available" not in detail
    assert 1 <= int(refused["Retry-After"]) <= 60


def test_the_event_loop_and_the_views_count_on_one_counter(tiers, user):
    """The lean handlers count with ``acount``, DRF's throttle with ``count``: one key's
    requests add up whichever served them, in memory and in Redis alike."""
    tiers(predict="3/m")
    key = api_key_create(owner=user, name="loop", scopes=["predict"])[0]

    async def alternately():
        counted = []
        for counter in (acount, count, acount, count):
            result = counter("predict", principal=f"key:{key.pk}", user=user, api_key=key)
            counted.append(await result if counter is acount else result)
        return counted

    usages = asyncio.run(alternately())

    assert [u.count for u in usages] == [1, 2, 3, 4]
    assert [u.limited for u in usages] == [False, False, False, True]
    assert len({u.reset_at for u in usages}) == 1
    assert time.time() - 1 <= usages[0].reset_at <= time.time() + 61


def test_a_refused_request_stores_nothing(tiers, demo_models, key_client, user):
    tiers(predict="1/h")
    assert _predict(key_client).status_code == 200

    assert _predict(key_client).status_code == 429

    assert Prediction.objects.filter(owner=user).count() == 1


def test_each_key_has_its_own_counter(tiers, demo_models, user, make_key, client_for):
    tiers(predict="1/h")
    first, second = client_for(make_key(user)), client_for(make_key(user))

    assert _predict(first).status_code == 200
    assert _predict(first).status_code == 429
    assert _predict(second).status_code == 200


def test_a_users_keys_and_tokens_share_the_users_ceiling(
    tiers, settings, demo_models, user, other_user, make_key, client_for
):
    tiers(predict="5/h")
    settings.PLATFORM = {
        **settings.PLATFORM,
        "USER_RATE_LIMITS": {**DEFAULTS["USER_RATE_LIMITS"], "predict": "3/h"},
    }
    first, second = client_for(make_key(user)), client_for(make_key(user))
    token = APIClient()
    token.force_authenticate(user)

    answered = [_predict(c).status_code for c in (first, first, second, token, second)]
    refused = _predict(first)

    assert answered == [200, 200, 200, 429, 429]
    assert refused["X-RateLimit-Limit"] == "3"
    assert "3 requests per hour" in refused.json()["detail"]
    assert _predict(client_for(make_key(other_user))).status_code == 200


def test_groups_are_counted_apart(tiers, demo_models, key_client):
    tiers(predict="1/h", api="2/h")
    assert _predict(key_client).status_code == 200
    assert _predict(key_client).status_code == 429

    listed = key_client.get("/api/v1/models")

    assert listed.status_code == 200
    assert listed["X-RateLimit-Limit"] == "2"


def test_a_jwt_user_is_limited_per_user(tiers, demo_models, user):
    tiers(predict="2/h")
    client = APIClient()
    tokens = client.post(
        "/api/v1/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json"
    ).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    again = APIClient()
    again.force_authenticate(user)

    assert _predict(client).status_code == 200
    assert _predict(again).status_code == 200
    assert _predict(client).status_code == 429


def test_key_override_comes_before_the_owner_and_the_default(
    tiers, demo_models, user, make_key, client_for
):
    tiers(predict="1/h")
    user.rate_limits = "predict=2/h"
    user.save()
    plain = client_for(make_key(user))
    special = client_for(make_key(user, rate_limits="3/h"))

    assert [_predict(plain).status_code for _ in range(3)] == [200, 200, 429]
    assert [_predict(special).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_changing_a_key_override_applies_at_once(tiers, demo_models, user, make_key, client_for):
    tiers(predict="1/h")
    raw = make_key(user)
    client = client_for(raw)
    assert _predict(client).status_code == 200
    assert _predict(client).status_code == 429

    key = ApiKey.objects.get(lookup=raw.split("_")[1])
    api_key_set_rate_limits(key=key, rate_limits="predict=5/h")

    response = _predict(client)
    assert response.status_code == 200
    assert response["X-RateLimit-Limit"] == "5"


def test_a_malformed_override_is_refused_by_the_service(user, make_key):
    from mlplatform.errors import InvalidInput

    with pytest.raises(InvalidInput, match="rate_limits: unknown group 'everything'"):
        make_key(user, rate_limits="everything=5/h")


def test_users_cannot_raise_their_own_limits_through_the_keys_api(user):
    client = APIClient()
    client.force_authenticate(user)

    response = client.post(
        "/api/v1/keys",
        {"name": "greedy", "scopes": ["predict"], "rate_limits": "predict=100000/s"},
        format="json",
    )

    assert response.status_code == 201
    assert ApiKey.objects.get(pk=response.json()["id"]).rate_limits == ""


def test_login_is_limited_per_client_ip_even_with_wrong_passwords(tiers, user):
    tiers(auth="3/h")
    client = APIClient(REMOTE_ADDR="203.0.113.7")
    wrong = {"username": "alice", "password": "guess"}

    answers = [client.post("/api/v1/auth/login", wrong, format="json") for _ in range(3)]
    blocked = client.post(
        "/api/v1/auth/login", {"username": "alice", "password": "alice-pass-123"}, format="json"
    )
    elsewhere = APIClient(REMOTE_ADDR="198.51.100.9").post(
        "/api/v1/auth/login", {"username": "alice", "password": "alice-pass-123"}, format="json"
    )

    assert [a.status_code for a in answers] == [401, 401, 401]
    assert blocked.status_code == 429
    assert blocked.json()["code"] == "rate_limited"
    assert elsewhere.status_code == 200


def test_token_endpoint_shares_the_auth_group(tiers, user):
    tiers(auth="2/h")
    client = APIClient(REMOTE_ADDR="203.0.113.8")
    body = {"username": "alice", "password": "nope"}

    codes = [client.post("/api/v1/auth/token", body, format="json").status_code for _ in range(2)]
    codes.append(client.post("/api/v1/auth/login", body, format="json").status_code)

    assert codes == [401, 401, 429]


def test_forwarded_for_is_ignored_without_a_trusted_proxy(tiers, user):
    tiers(auth="1/h")
    body = {"username": "alice", "password": "nope"}

    def attempt(forged: str) -> int:
        client = APIClient(REMOTE_ADDR="203.0.113.9", HTTP_X_FORWARDED_FOR=forged)
        return client.post("/api/v1/auth/login", body, format="json").status_code

    assert attempt("192.0.2.1") == 401
    assert attempt("192.0.2.2") == 429  # a new forged address does not reset the counter


def test_a_trusted_proxy_names_the_client(tiers, settings, user):
    tiers(auth="1/h")
    settings.TRUSTED_PROXY_COUNT = 1
    body = {"username": "alice", "password": "nope"}

    def attempt(forwarded: str) -> int:
        client = APIClient(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=forwarded)
        return client.post("/api/v1/auth/login", body, format="json").status_code

    # The client may prepend anything; the proxy appends the address it saw, which counts.
    assert attempt("1.1.1.1, 192.0.2.10") == 401
    assert attempt("8.8.8.8, 192.0.2.10") == 429
    assert attempt("192.0.2.11") == 401


def test_batch_submission_has_its_own_group(tiers, demo_models, key_client):
    tiers(batch="1/h")
    body = {"inputs": [[5.1, 3.5, 1.4, 0.2]], "model": "iris"}

    first = key_client.post("/api/v1/predict/batch", body, format="json")
    second = key_client.post("/api/v1/predict/batch", body, format="json")

    assert first.status_code == 202
    assert second.status_code == 429
    assert "'batch'" in second.json()["detail"]
    assert key_client.get(f"/api/v1/predict/batch/{first.json()['job_id']}").status_code == 200


def test_rate_limiting_can_be_switched_off(tiers, settings, demo_models, key_client):
    tiers(predict="1/h")
    settings.RATELIMIT_ENABLE = False

    assert [_predict(key_client).status_code for _ in range(3)] == [200, 200, 200]


def test_createapikey_takes_a_rate(user, capsys):
    call_command("createapikey", "alice", "--scopes", "predict", "--rate", "predict=7/m")
    raw = capsys.readouterr().out.strip()

    assert ApiKey.objects.get(lookup=raw.split("_")[1]).rate_limits == "predict=7/m"
    with pytest.raises(CommandError, match="rate_limits"):
        call_command("createapikey", "alice", "--rate", "lots")


def test_the_admin_edits_a_key_override_and_refuses_a_bad_one(admin_client, user, make_key):
    raw = make_key(user)
    key = ApiKey.objects.get(lookup=raw.split("_")[1])
    url = f"/admin/accounts/apikey/{key.pk}/change/"

    bad = admin_client.post(url, {"rate_limits": "predict=fast"})
    good = admin_client.post(url, {"rate_limits": "predict=50/m, batch=5/h"})

    assert bad.status_code == 200
    assert "is not a rate such as 600/m" in bad.content.decode()
    assert good.status_code == 302
    key.refresh_from_db()
    assert key.rate_limits == "predict=50/m, batch=5/h"
    assert key.hashed_key and key.revoked_at is None
