"""GET /api/v1/stats: the tutorial's summary, from durable data, own traffic (staff: all)."""

import pytest

from predictions.batch.jobs import batch_job_process
from predictions.models import RequestTally
from predictions.stats import Tallies

pytestmark = pytest.mark.usefixtures("demo_models")
SETOSA = [5.1, 3.5, 1.4, 0.2]


def stats(client) -> dict:
    response = client.get("/api/v1/stats")
    assert response.status_code == 200, response.content
    return response.json()


def test_a_new_user_sees_zeros(key_client):
    assert stats(key_client) == {
        "scope": "own",
        "total_predictions": 0,
        "active_batch_jobs": 0,
        "completed_batch_jobs": 0,
        "failed_batch_jobs": 0,
        "request_count": 0,
        "error_count": 0,
        "error_rate": 0.0,
        "average_duration": 0.0,
        "predictions_by_model": {},
    }


def test_stats_count_the_callers_requests_errors_predictions_and_jobs(key_client):
    for _ in range(3):
        key_client.post("/api/v1/predict", {"input_data": SETOSA}, format="json")
    key_client.post("/api/v1/predict", {"input_data": SETOSA, "model": "digits"}, format="json")
    key_client.post("/api/v1/predict", {"input_data": [0.0] * 64, "model": "digits"}, format="json")
    job = key_client.post("/api/v1/predict/batch", {"inputs": [SETOSA] * 4}, format="json")
    queued = stats(key_client)
    batch_job_process(job_id=job.json()["job_id"])

    body = stats(key_client)

    # 3 iris + 1 refused digits (4 features of 64) + 1 digits + 1 batch submit; then one stats
    # request before this one.
    assert queued["request_count"] == 6 and queued["active_batch_jobs"] == 1
    assert body["request_count"] == 7
    assert body["error_count"] == 1
    assert body["error_rate"] == pytest.approx(1 / 7)
    assert 0 < body["average_duration"] < 5
    assert body["total_predictions"] == 4
    assert body["predictions_by_model"] == {"digits": 1, "iris": 3}
    assert body["active_batch_jobs"] == 0 and body["completed_batch_jobs"] == 1


def test_stats_show_only_the_callers_own_traffic_and_staff_see_everyones(
    user, other_user, staff, make_key, client_for
):
    alice, bob, carol = (client_for(make_key(u)) for u in (user, other_user, staff))
    alice.post("/api/v1/predict", {"input_data": SETOSA}, format="json")
    bob.post("/api/v1/predict", {"input_data": SETOSA}, format="json")
    bob.post("/api/v1/predict", {"input_data": SETOSA}, format="json")

    mine, theirs, everyone = stats(alice), stats(bob), stats(carol)

    assert mine["total_predictions"] == 1 and mine["request_count"] == 1
    assert theirs["total_predictions"] == 2 and theirs["request_count"] == 2
    assert everyone["scope"] == "all"
    assert everyone["total_predictions"] == 3
    # alice's and bob's requests plus their stats requests (carol's own is still running)
    assert everyone["request_count"] == 5


def test_stats_need_the_read_scope(user, make_key, client_for):
    response = client_for(make_key(user, scopes=["predict"])).get("/api/v1/stats")

    assert response.status_code == 403


def test_tallies_of_several_processes_add_up_in_one_row(user):
    first, second = Tallies(), Tallies()
    first.record(user_id=user.pk, error=False, seconds=0.5)
    first.record(user_id=user.pk, error=True, seconds=0.25)
    second.record(user_id=user.pk, error=False, seconds=1.0)

    first.flush()
    second.flush()

    [row] = RequestTally.objects.filter(owner=user)
    assert (row.requests, row.errors, row.duration) == (3, 1, 1.75)


def test_tallies_are_written_when_due_and_kept_when_the_database_fails(user, monkeypatch):
    clock = [100.0]
    pending = Tallies()
    pending.timer = lambda: clock[0]
    pending._flushed_at = clock[0]
    pending.record(user_id=user.pk, error=False, seconds=0.1)
    assert not pending.due()

    clock[0] += 5
    monkeypatch.setattr("predictions.stats._add", lambda *args: 1 / 0)
    assert pending.due()
    pending.flush()  # fails: kept
    monkeypatch.undo()
    pending.flush()

    assert RequestTally.objects.get(owner=user).requests == 1


def test_tallies_of_a_deleted_user_are_dropped(user, other_user):
    pending = Tallies()
    pending.record(user_id=user.pk, error=False, seconds=0.1)
    pending.record(user_id=other_user.pk, error=False, seconds=0.1)
    other_user.delete()

    pending.flush()

    assert list(RequestTally.objects.values_list("owner", flat=True)) == [user.pk]
    assert not pending.due()
