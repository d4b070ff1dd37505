"""Shadow traffic: copies answered off the request path, stored, never returned."""

import uuid

import numpy as np
import pytest
from django.db import connection, transaction
from prometheus_client import REGISTRY

from predictions.models import ModelVersion, Prediction, ShadowPrediction
from predictions.registry import registry
from predictions.services import model_version_save, registry_touch
from predictions.services.shadow import ShadowJob, ShadowRunner, shadow_runner, shadow_store

SETOSA = [5.1, 3.5, 1.4, 0.2]
LABELS = ("setosa", "versicolor", "virginica")


def predict(client, row=SETOSA):
    return client.post("/api/v1/predict", {"input_data": row, "model_version": "v1"}, format="json")


def test_a_shadow_answers_a_copy_that_is_stored_and_never_returned(key_client, shadow_v3):
    response = predict(key_client)
    shadow_runner.join()

    body = response.json()
    assert response.status_code == 200
    assert body["model_version"] == "v1"
    assert "shadow" not in response.content.decode()
    shadow = ShadowPrediction.objects.get(primary_id=body["prediction_id"])
    assert shadow.model_version == shadow_v3
    assert shadow.label == "setosa" and shadow.agrees is True
    assert len(shadow.output) == 3 and shadow.confidence == max(shadow.output)
    assert shadow.processing_time > 0 and shadow.error == ""
    assert Prediction.objects.count() == 1  # the copy is not a prediction of the caller's


def copies(result: str) -> float:
    labels = {"model": "iris", "version": "v3", "result": result}
    return REGISTRY.get_sample_value("mlplatform_shadow_copies_total", labels) or 0.0


def test_copies_that_come_together_are_all_stored_and_counted(key_client, shadow_v3):
    answered = copies("answered")

    ids = {predict(key_client).json()["prediction_id"] for _ in range(20)}
    shadow_runner.join()

    assert {str(s.primary_id) for s in ShadowPrediction.objects.all()} == ids
    assert copies("answered") == answered + 20


def test_copies_beyond_a_full_queue_are_dropped_and_counted(key_client, shadow_v3):
    shadow_v3.shadow_share = 0  # no copies from the requests themselves
    model_version_save(version=shadow_v3)
    ids = [predict(key_client).json()["prediction_id"] for _ in range(6)]
    entry = registry.model("iris").versions["v3"]
    jobs = [
        ShadowJob(id_, entry, np.array([SETOSA], np.float32), "classification", LABELS, "setosa")
        for id_ in ids
    ]
    runner = ShadowRunner(maxsize=2)  # the copies of a slower shadow, or of a burst
    dropped = copies("dropped")

    accepted = [runner.submit(job) for job in jobs]
    runner.join()

    # The thread takes the first copy at once and sleeps; the queue holds two more.
    assert 2 <= accepted.count(True) <= 3
    assert copies("dropped") == dropped + accepted.count(False)
    assert ShadowPrediction.objects.count() == accepted.count(True)


def test_a_copy_stored_again_keeps_the_first_answer(key_client, shadow_v3):
    predict(key_client)
    shadow_runner.join()
    first = ShadowPrediction.objects.get()
    entry = registry.model("iris").versions["v3"]
    again = ShadowJob(
        first.primary_id, entry, np.array([SETOSA], np.float32), "classification", LABELS, "x"
    )

    shadow_store([again])

    assert ShadowPrediction.objects.get().agrees == first.agrees is True


def test_a_failing_shadow_is_recorded_and_never_fails_the_caller(key_client, shadow_v3):
    # Bytes no runtime can load: only possible behind the admin's back, yet it must not hurt.
    ModelVersion.objects.filter(pk=shadow_v3.pk).update(artifact=b"not an artifact")
    registry_touch()

    failed = copies("failed")
    response = predict(key_client)
    shadow_runner.join()

    assert response.status_code == 200
    assert copies("failed") == failed + 1
    shadow = ShadowPrediction.objects.get()
    assert shadow.agrees is None and shadow.output is None and shadow.label is None
    assert "ArtifactError" in shadow.error


def test_a_share_of_zero_sends_no_copies(key_client, shadow_v3):
    shadow_v3.shadow_share = 0
    model_version_save(version=shadow_v3)

    for _ in range(5):
        predict(key_client)
    shadow_runner.join()

    assert ShadowPrediction.objects.count() == 0


def test_a_share_sends_about_that_share_of_requests(key_client, shadow_v3):
    shadow_v3.shadow_share = 0.5
    model_version_save(version=shadow_v3)

    statuses = {predict(key_client).status_code for _ in range(60)}
    shadow_runner.join()

    assert statuses == {200}  # the shadow's writes never fail a caller's
    assert 15 <= ShadowPrediction.objects.count() <= 45


def test_copies_gathered_together_get_the_answers_each_would_get_alone(shadow_v3):
    import uuid

    import numpy as np

    from predictions.registry import registry
    from predictions.services.shadow import ShadowJob, shadow_answers

    entry = registry.model("iris").versions["v3"]
    rows = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [float("inf")] * 4, [5.9, 3.0, 4.2, 1.5]]
    jobs = [
        ShadowJob(
            uuid.uuid4(),
            entry,
            np.array([row], np.float32),
            "classification",
            ("setosa", "versicolor", "virginica"),
            "setosa",
        )
        for row in rows
    ]

    together = shadow_answers(jobs)
    alone = [shadow_answers([job])[0] for job in jobs]

    assert [a.primary_id for a in together] == [j.prediction_id for j in jobs]
    assert [a.label for a in together] == [a.label for a in alone]
    assert together[0].label == "setosa" and together[1].label == "virginica"
    assert together[2].label is None and "not finite" in together[2].error  # only that one
    assert together[3].error == "" and together[3].output == alone[3].output


def test_deleting_a_prediction_deletes_its_shadow_rows(key_client, shadow_v3):
    kept, deleted = (predict(key_client).json()["prediction_id"] for _ in range(2))
    shadow_runner.join()
    assert ShadowPrediction.objects.count() == 2

    Prediction.objects.filter(pk=deleted).delete()

    assert [str(s.primary_id) for s in ShadowPrediction.objects.all()] == [kept]


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's commit settings")
def test_copies_commit_asynchronously_and_leave_the_connection_as_it_was(key_client, shadow_v3):
    shadow_v3.shadow_share = 0  # copies made here only
    model_version_save(version=shadow_v3)
    primary = predict(key_client).json()["prediction_id"]
    entry = registry.model("iris").versions["v3"]
    job = ShadowJob(primary, entry, np.array([SETOSA], np.float32), "classification", LABELS, "")

    def synchronous_commit():
        with connection.cursor() as cursor:
            cursor.execute("SHOW synchronous_commit")
            return cursor.fetchone()[0]

    # The shadow thread stores in autocommit: the statement is its own transaction, which
    # ends with it. An enclosing one shows what the statement set for its transaction.
    with transaction.atomic():
        shadow_store([job])
        during = synchronous_commit()
    after = synchronous_commit()

    assert (during, after) == ("off", "on")  # a request's commits still wait for the disk
    assert ShadowPrediction.objects.get().primary_id == uuid.UUID(primary)
