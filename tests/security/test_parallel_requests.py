"""Limits that hold when requests arrive at the same time: sent in parallel to a real server.

Each check that counts and then writes (unfinished jobs, refresh-token rotation, idempotency
keys) must let exactly as many requests through as it would one at a time.
"""

import secrets
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from mlplatform.conf import DEFAULTS
from tests.servers import Server, start_server

IRIS = [5.1, 3.5, 1.4, 0.2]
PARALLEL = 24


@pytest.fixture(scope="module")
def web(instance, _servers_stopped) -> Iterator[Server]:
    """A server without a background worker: submitted jobs stay unfinished."""
    limit = str(DEFAULTS["MAX_ACTIVE_API_KEYS"])  # the shared instance raises it
    env = {"WEB_THREADS": str(PARALLEL), "MLPLATFORM_MAX_ACTIVE_API_KEYS": limit}
    server = start_server(instance, "parallel", args=["--no-worker"], env=env)
    _servers_stopped.append(server)
    yield server
    server.stop_soon()


@pytest.fixture(scope="module")
def _racers(instance) -> list[tuple[str, str]]:
    """Users made ahead for ``racer``: one ``manage.py shell`` makes several (its start costs
    more than the users)."""
    return []


@pytest.fixture
def racer(instance, _racers) -> tuple[str, str]:
    """A fresh user of the API users' group (nothing of theirs exists yet): name, password."""
    if not _racers:
        made = [(f"racer_{secrets.token_hex(4)}", secrets.token_urlsafe(12)) for _ in range(8)]
        instance.manage(
            "shell",
            "-c",
            "from accounts.models import User; from predictions.demo.seed import api_users_group\n"
            f"for name, password in {made!r}:\n"
            "    u = User.objects.create_user(name, password=password)\n"
            "    u.groups.add(api_users_group())",
        )
        _racers.extend(made)
    return _racers.pop()


def all_at_once(send, n: int = PARALLEL) -> list[requests.Response]:
    """``send()`` from ``n`` threads released together."""
    start = threading.Barrier(n)

    def one(_):
        start.wait()
        return send()

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(one, range(n)))


def tokens(web, name: str, password: str) -> dict:
    response = requests.post(
        web.url("/api/v1/auth/token"), json={"username": name, "password": password}, timeout=10
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_simultaneous_jobs_of_one_user_stop_at_the_unfinished_jobs_limit(web, racer):
    access = tokens(web, *racer)["access"]
    headers = {"Authorization": f"Bearer {access}"}

    answers = all_at_once(
        lambda: requests.post(
            web.url("/api/v1/predict/batch"),
            json={"inputs": [IRIS] * 3},
            headers=headers,
            timeout=30,
        )
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [202] * 5 + [429] * (PARALLEL - 5), [a.text[:200] for a in answers]
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["code"] == "too_many_active_jobs"
    listed = requests.get(web.url("/api/v1/jobs"), headers=headers, timeout=10).json()
    assert listed["count"] == 5


def test_simultaneous_refreshes_of_one_token_give_one_new_pair(web, racer):
    refresh = tokens(web, *racer)["refresh"]

    answers = all_at_once(
        lambda: requests.post(
            web.url("/api/v1/auth/token/refresh"), json={"refresh": refresh}, timeout=30
        )
    )

    assert sorted(a.status_code for a in answers) == [200] + [401] * (PARALLEL - 1)
    refused = {a.json()["code"] for a in answers if a.status_code == 401}
    assert refused == {"token_not_valid"}


def test_simultaneous_requests_with_one_idempotency_key_predict_once(web, racer):
    access = tokens(web, *racer)["access"]
    headers = {"Authorization": f"Bearer {access}", "Idempotency-Key": secrets.token_hex(8)}

    answers = all_at_once(
        lambda: requests.post(
            web.url("/api/v1/predict"), json={"input_data": IRIS}, headers=headers, timeout=30
        )
    )

    assert {a.status_code for a in answers} <= {200, 409}, [a.text[:200] for a in answers]
    ids = {a.json()["prediction_id"] for a in answers if a.status_code == 200}
    assert len(ids) == 1
    stored = requests.get(
        web.url("/api/v1/predictions"), headers={"Authorization": f"Bearer {access}"}, timeout=10
    ).json()
    assert [p["prediction_id"] for p in stored["results"]] == list(ids)


def test_simultaneous_key_creations_stop_at_the_active_keys_limit(web, racer):
    access = tokens(web, *racer)["access"]
    headers = {"Authorization": f"Bearer {access}"}
    limit = DEFAULTS["MAX_ACTIVE_API_KEYS"]

    answers = all_at_once(
        lambda: requests.post(
            web.url("/api/v1/keys"),
            json={"name": "parallel", "scopes": ["predict"]},
            headers=headers,
            timeout=30,
        ),
        n=limit + 5,
    )

    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] * limit + [409] * 5, [a.text[:200] for a in answers]
    listed = requests.get(web.url("/api/v1/keys"), headers=headers, timeout=10).json()
    assert listed["count"] == limit


def test_simultaneous_requests_over_many_keys_stop_at_the_users_ceiling(serve, racer):
    server = serve(
        "ceiling", args=["--no-worker"], env={"MLPLATFORM_USER_RATE_LIMITS": "predict=10/h"}
    )
    access = tokens(server, *racer)["access"]
    keys = [
        requests.post(
            server.url("/api/v1/keys"),
            json={"name": f"k{i}", "scopes": ["predict"]},
            headers={"Authorization": f"Bearer {access}"},
            timeout=10,
        ).json()["key"]
        for i in range(4)
    ]
    senders = iter(range(PARALLEL))

    def predict():
        key = keys[next(senders) % len(keys)]
        return requests.post(
            server.url("/api/v1/predict"),
            json={"input_data": IRIS},
            headers={"X-API-Key": key},
            timeout=30,
        )

    answers = all_at_once(predict)

    assert sorted(a.status_code for a in answers) == [200] * 10 + [429] * (PARALLEL - 10)
