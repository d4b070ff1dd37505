"""OWASP API1:2023 Broken Object Level Authorization.

Every object is reached through its owner: another principal's prediction, batch job, results,
download, event stream, feedback or API key answers 404 exactly as an id that does not exist
does (never 403, which would confirm that it exists), and nothing changes.
"""

import uuid

import pytest

from accounts.models import ApiKey
from predictions.models import BatchJob, Feedback, Prediction
from tests.security.conftest import IRIS, assert_error, jwt_client

# (method, path template with the names of bob's objects, body, error code)
READS_AND_WRITES = [
    ("get", "/api/v1/predict/{prediction}", None, "prediction_not_found"),
    ("post", "/api/v1/predictions/{prediction}/feedback", {"actual": "virginica"}, None),
    ("get", "/api/v1/predict/batch/{finished_job}", None, "job_not_found"),
    ("get", "/api/v1/predict/batch/{finished_job}/results", None, "job_not_found"),
    ("get", "/api/v1/predict/batch/{finished_job}/results?format=csv", None, "job_not_found"),
    ("get", "/api/v1/predict/batch/{finished_job}/results?format=npy", None, "job_not_found"),
    ("get", "/api/v1/predict/batch/{finished_job}/results?format=jsonl", None, "job_not_found"),
    ("get", "/api/v1/predict/batch/{finished_job}/events", None, "job_not_found"),
    ("post", "/api/v1/predict/batch/{queued_job}/cancel", None, "job_not_found"),
]


def _unknown(template: str) -> str:
    """The same route with ids that exist nowhere."""
    return template.format(
        prediction=uuid.uuid4(), finished_job=uuid.uuid4(), queued_job=uuid.uuid4()
    )


def _state() -> tuple:
    """Everything an attacker's request could change."""
    return (
        sorted(BatchJob.objects.values_list("id", "status", "cancel_requested")),
        sorted(Feedback.objects.values_list("prediction_id", "actual_label")),
        Prediction.objects.count(),
        sorted(ApiKey.objects.values_list("id", "revoked_at", "name")),
    )


@pytest.mark.parametrize(("method", "template", "body", "code"), READS_AND_WRITES)
def test_another_users_object_answers_404_like_a_missing_one_and_nothing_changes(
    alice, bobs_objects, method, template, body, code
):
    before = _state()

    theirs = getattr(alice, method)(template.format(**bobs_objects), body, format="json")
    missing = getattr(alice, method)(_unknown(template), body, format="json")

    refused = assert_error(theirs, 404, code)
    absent = assert_error(missing, 404)
    assert refused["code"] == absent["code"]
    # Same words apart from the id the caller sent: the answer says nothing about the object.
    assert refused["detail"].split(" ")[:-1] == absent["detail"].split(" ")[:-1]
    assert _state() == before


def test_bobs_objects_are_really_there_for_bob(bob, bobs_objects):
    """The control: the same requests succeed for the owner."""
    assert bob.get(f"/api/v1/predict/{bobs_objects['prediction']}").status_code == 200
    job = bobs_objects["finished_job"]
    assert bob.get(f"/api/v1/predict/batch/{job}/results").json()["count"] == 3
    assert bob.get(f"/api/v1/predict/batch/{job}/results?format=csv").status_code == 200


def test_lists_and_stats_show_only_the_callers_own_objects(alice, bobs_objects):
    own = alice.post("/api/v1/predict", {"input_data": IRIS}, format="json").json()

    predictions = alice.get("/api/v1/predictions").json()
    jobs = alice.get("/api/v1/jobs").json()
    stats = alice.get("/api/v1/stats").json()

    assert [p["prediction_id"] for p in predictions["results"]] == [own["prediction_id"]]
    assert jobs["count"] == 0 and jobs["results"] == []
    assert stats["total_predictions"] == 1


def test_filters_cannot_widen_a_list_to_other_users(alice, bobs_objects, other_user):
    """Query parameters that name an owner are not filters: the list stays the caller's."""
    for query in (f"owner={other_user.pk}", f"user={other_user.pk}", "owner__isnull=false"):
        assert alice.get(f"/api/v1/predictions?{query}").json()["count"] == 0
        assert alice.get(f"/api/v1/jobs?{query}").json()["count"] == 0


def test_another_users_api_key_answers_404_and_stays_active(user, bobs_objects):
    client, _ = jwt_client(user.username)
    key_id = bobs_objects["key"]

    read = client.get(f"/api/v1/keys/{key_id}")
    revoke = client.delete(f"/api/v1/keys/{key_id}")
    missing = client.get("/api/v1/keys/987654")

    assert_error(read, 404, "not_found")
    assert_error(revoke, 404, "not_found")
    assert_error(missing, 404, "not_found")
    assert ApiKey.objects.get(pk=key_id).revoked_at is None
    assert key_id not in [k["id"] for k in client.get("/api/v1/keys").json()["results"]]


def test_feedback_on_another_users_prediction_stores_nothing(alice, bobs_objects):
    prediction = bobs_objects["prediction"]

    response = alice.post(
        f"/api/v1/predictions/{prediction}/feedback", {"actual": "virginica"}, format="json"
    )

    assert_error(response, 404, "prediction_not_found")
    assert Feedback.objects.get(prediction_id=prediction).actual_label == "setosa"


def test_cancel_of_another_users_job_leaves_it_queued(alice, bobs_objects):
    job = bobs_objects["queued_job"]

    assert_error(alice.post(f"/api/v1/predict/batch/{job}/cancel"), 404, "job_not_found")

    stored = BatchJob.objects.get(pk=job)
    assert stored.status == bobs_objects["job_status"] == BatchJob.Status.QUEUED
    assert not stored.cancel_requested


def test_an_api_key_reaches_only_its_owners_objects_even_with_a_forged_user_header(
    alice, bobs_objects, other_user
):
    """Identity comes from the credential alone, never from a header or parameter."""
    response = alice.get(
        f"/api/v1/predict/{bobs_objects['prediction']}",
        HTTP_X_USER_ID=str(other_user.pk),
        HTTP_X_FORWARDED_USER=other_user.username,
    )

    assert_error(response, 404, "prediction_not_found")
