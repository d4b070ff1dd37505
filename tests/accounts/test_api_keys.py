"""API keys: the keys API, authentication by X-API-Key, scopes, revocation and expiry."""

from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.utils import timezone
from rest_framework.test import APIClient

from accounts import crypto, keycache
from accounts.authentication import ApiKeyAuthentication
from accounts.keycache import verified_keys
from accounts.models import ApiKey, User
from tests.concurrency import Clock, HeldRead

IRIS = {"input_data": [5.1, 3.5, 1.4, 0.2]}


@pytest.fixture
def jwt_client(user) -> APIClient:
    client = APIClient()
    tokens = client.post(
        "/api/v1/auth/token", {"username": "alice", "password": "alice-pass-123"}, format="json"
    ).json()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    return client


def test_create_returns_the_secret_once_and_stores_only_its_hash(jwt_client, user):
    response = jwt_client.post(
        "/api/v1/keys", {"name": "laptop", "scopes": ["predict", "read"]}, format="json"
    )

    assert response.status_code == 201
    body = response.json()
    raw = body["key"]
    assert raw.startswith(body["prefix"] + "_")
    assert body["scopes"] == ["predict", "read"]
    assert response["Cache-Control"] == "no-store"
    stored = ApiKey.objects.get(pk=body["id"])
    assert stored.hashed_key == crypto.hash_key(raw)
    assert raw not in str(list(ApiKey.objects.values()))
    listed = jwt_client.get("/api/v1/keys").json()["results"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and "hashed_key" not in listed[0]
    assert jwt_client.get(f"/api/v1/keys/{body['id']}").json()["prefix"] == body["prefix"]


def test_a_user_holds_at_most_max_active_api_keys(jwt_client, user, make_key, settings):
    settings.PLATFORM = {**settings.PLATFORM, "MAX_ACTIVE_API_KEYS": 2}
    make_key(user)
    expired = ApiKey.objects.get(lookup=make_key(user).split("_")[1])
    expired.expires_at = timezone.now() - timedelta(days=1)  # expired keys do not count
    expired.save()

    second = jwt_client.post("/api/v1/keys", {"name": "b", "scopes": ["predict"]}, format="json")
    third = jwt_client.post("/api/v1/keys", {"name": "c", "scopes": ["predict"]}, format="json")
    jwt_client.delete(f"/api/v1/keys/{second.json()['id']}")
    again = jwt_client.post("/api/v1/keys", {"name": "d", "scopes": ["predict"]}, format="json")

    assert second.status_code == 201
    assert third.status_code == 409
    assert third.json()["code"] == "too_many_api_keys"
    assert "holds 2 active API keys" in third.json()["detail"]
    assert again.status_code == 201


def test_a_key_cannot_carry_a_scope_its_owner_lacks(db, client_for):
    plain = User.objects.create_user("dave", password="dave-pass-123")
    client = APIClient()
    client.force_authenticate(plain)

    response = client.post("/api/v1/keys", {"name": "k", "scopes": ["batch"]}, format="json")

    assert response.status_code == 403
    assert "'batch'" in response.json()["detail"]
    assert ApiKey.objects.count() == 0


def test_unknown_scopes_and_empty_scopes_are_refused(jwt_client):
    unknown = jwt_client.post("/api/v1/keys", {"name": "k", "scopes": ["admin"]}, format="json")
    empty = jwt_client.post("/api/v1/keys", {"name": "k", "scopes": []}, format="json")

    assert unknown.status_code == 400 and "scopes" in unknown.json()["detail"]
    assert empty.status_code == 400 and "scopes" in empty.json()["detail"]


def test_mass_assigned_owner_and_hash_are_ignored(jwt_client, user, other_user):
    response = jwt_client.post(
        "/api/v1/keys",
        {"name": "k", "scopes": ["read"], "owner": other_user.pk, "hashed_key": "x" * 64},
        format="json",
    )

    key = ApiKey.objects.get(pk=response.json()["id"])
    assert key.owner == user and key.hashed_key != "x" * 64


def test_an_api_key_cannot_manage_api_keys(key_client):
    response = key_client.post("/api/v1/keys", {"name": "k", "scopes": ["read"]}, format="json")

    assert response.status_code == 403
    assert response.json()["code"] == "user_credentials_required"


def test_another_users_key_answers_404_and_stays_active(jwt_client, other_user, make_key):
    make_key(other_user)
    theirs = ApiKey.objects.get(owner=other_user)

    assert jwt_client.get(f"/api/v1/keys/{theirs.pk}").status_code == 404
    assert jwt_client.delete(f"/api/v1/keys/{theirs.pk}").status_code == 404
    theirs.refresh_from_db()
    assert theirs.revoked_at is None


@pytest.mark.usefixtures("demo_models")
def test_if_key_is_revoked_then_401(jwt_client, user, make_key, client_for):
    raw = make_key(user)
    key = ApiKey.objects.get(lookup=crypto.parse_lookup(raw))

    assert jwt_client.delete(f"/api/v1/keys/{key.pk}").status_code == 204
    response = client_for(raw).post("/api/v1/predict", IRIS, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "revoked_api_key"
    assert "X-API-Key" in response["WWW-Authenticate"]
    assert jwt_client.delete(f"/api/v1/keys/{key.pk}").status_code == 204  # stays revoked
    key.refresh_from_db()
    assert key.revoked_at is not None


@pytest.mark.usefixtures("demo_models")
def test_if_key_is_expired_then_401(user, make_key, client_for):
    raw = make_key(user, expires_at=timezone.now() + timedelta(seconds=30))
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))

    response = client_for(raw).post("/api/v1/predict", IRIS, format="json")

    assert response.status_code == 401
    assert response.json()["code"] == "expired_api_key"


def test_if_key_is_malformed_then_401_without_asking_the_database(
    db, client_for, django_assert_num_queries
):
    raw = crypto.generate_key().raw
    broken = raw[:-1] + ("A" if raw[-1] != "A" else "B")

    with django_assert_num_queries(0):
        response = client_for(broken).get("/api/v1/models")

    assert response.status_code == 401
    assert response.json()["code"] == "malformed_api_key"


def test_if_key_is_well_formed_but_unknown_then_401(db, client_for):
    response = client_for(crypto.generate_key().raw).get("/api/v1/models")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


def test_without_credentials_the_api_answers_401_with_a_challenge(db):
    response = APIClient().get("/api/v1/models")

    assert response.status_code == 401
    assert response["WWW-Authenticate"].startswith("Bearer")
    assert response.json() == {
        "detail": "Authentication credentials were not provided.",
        "code": "not_authenticated",
        "request_id": response["X-Request-ID"],
    }


@pytest.mark.usefixtures("demo_models")
def test_a_key_acts_with_its_scopes_and_its_owners_permissions(user, make_key, client_for):
    read_only = client_for(make_key(user, scopes=["read"]))

    refused = read_only.post("/api/v1/predict", IRIS, format="json")

    assert refused.status_code == 403
    assert refused.json()["code"] == "missing_scope"
    assert "'predict'" in refused.json()["detail"]
    assert read_only.get("/api/v1/predictions").status_code == 200


@pytest.mark.usefixtures("demo_models")
def test_a_key_loses_a_scope_when_its_owner_loses_the_permission(user, make_key, client_for):
    client = client_for(make_key(user, scopes=["predict"]))
    user.groups.clear()

    response = client.post("/api/v1/predict", IRIS, format="json")

    assert response.status_code == 403
    assert "User 'alice' lacks the 'predict' scope" in response.json()["detail"]


def test_last_used_at_is_written_at_most_once_a_minute(user, make_key, client_for, monkeypatch):
    raw = make_key(user)
    client = client_for(raw)
    start = timezone.now()
    clock = {"now": start}
    monkeypatch.setattr(ApiKeyAuthentication, "now", staticmethod(lambda: clock["now"]))

    client.get("/api/v1/models")
    first = ApiKey.objects.get().last_used_at
    clock["now"] = start + timedelta(seconds=30)
    client.get("/api/v1/models")
    unchanged = ApiKey.objects.get().last_used_at
    clock["now"] = start + timedelta(seconds=61)
    client.get("/api/v1/models")
    moved = ApiKey.objects.get().last_used_at

    assert first == start
    assert unchanged == start
    assert moved == start + timedelta(seconds=61)


@pytest.mark.usefixtures("demo_models")
def test_a_key_revoked_by_another_process_is_refused_within_the_cache_time(
    user, make_key, client_for, monkeypatch
):
    clock = Clock()
    monkeypatch.setattr(verified_keys, "timer", clock)
    client = client_for(make_key(user))
    assert client.get("/api/v1/models").status_code == 200

    # Another process revokes it: the rows change, this process's memory does not.
    ApiKey.objects.update(revoked_at=timezone.now())
    clock.now += 0.5
    within = client.get("/api/v1/models")
    clock.now += 0.6
    after = client.get("/api/v1/models")

    assert within.status_code == 200
    assert after.status_code == 401
    assert after.json()["code"] == "revoked_api_key"


def test_a_cached_key_still_needs_its_exact_secret(user, make_key, client_for):
    raw = make_key(user)
    assert client_for(raw).get("/api/v1/models").status_code == 200
    lookup = crypto.parse_lookup(raw)
    body = f"mlp_{lookup}_" + "A" * crypto.SECRET_LENGTH
    forged = body + crypto.checksum(body)

    response = client_for(forged).get("/api/v1/models")

    assert response.status_code == 401
    assert response.json()["code"] == "invalid_api_key"


@pytest.fixture
def cached_key(user, make_key, monkeypatch):
    """A key loaded into the cache at a fake clock's time, the clock and the load counter."""
    clock = Clock()
    monkeypatch.setattr(verified_keys, "timer", clock)
    lookup = crypto.parse_lookup(make_key(user))
    held = HeldRead(monkeypatch, keycache, "api_key_by_lookup")
    assert verified_keys.get(lookup) is not None
    return lookup, clock, held


@pytest.mark.django_db(transaction=True)
def test_on_the_event_loop_a_key_is_reloaded_while_an_entry_younger_than_the_limit_serves(
    cached_key,
):
    # The event loop never waits for the database: a busy key's entry keeps serving while a
    # thread reloads it, once, when it passes the cache time.
    lookup, clock, held = cached_key
    clock.now += 1.2  # out of the cache time (1 s), within 1.5 of it

    async def ask():
        meanwhile = [verified_keys.fresh(lookup) for _ in range(5)]
        await verified_keys._reloads[lookup]
        return meanwhile

    meanwhile = async_to_sync(ask)()

    assert all(key is not None and key.lookup == lookup for key in meanwhile)
    assert held.calls == 2  # the first load and the one reload
    clock.now += 0.1
    assert verified_keys.fresh(lookup) is not None  # fresh again, without a reload
    assert held.calls == 2


@pytest.mark.django_db(transaction=True)
def test_on_the_event_loop_an_entry_older_than_the_limit_is_not_used(cached_key):
    # Another process revoked the key two cache times ago: nobody may be let in on the old
    # entry; the request goes to the DRF view, which reloads the key.
    lookup, clock, held = cached_key
    ApiKey.objects.update(revoked_at=timezone.now())
    clock.now += 2

    async def ask():
        stale = verified_keys.fresh(lookup)
        await verified_keys._reloads[lookup]
        return stale, verified_keys.fresh(lookup)

    stale, reloaded = async_to_sync(ask)()

    assert stale is None
    assert reloaded.revoked_at is not None
