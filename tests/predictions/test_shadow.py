"""Shadow traffic: copies answered off the request path, stored, never returned."""

import numpy as np
import pytest
from prometheus_client import REGISTRY

from predictions.catalogue.artifacts import artifact_save
from predictions.catalogue.versions import model_version_save, registry_touch
from predictions.models import ModelVersion, Prediction, ShadowPrediction
from predictions.pipeline import route
from predictions.services.shadow import in_flight, shadows_join, shadows_send

SETOSA = [5.1, 3.5, 1.4, 0.2]


def predict(client, row=SETOSA):
    return client.post("/api/v1/predict", {"input_data": row, "model_version": "v1"}, format="json")


def copies(result: str) -> float:
    labels = {"model": "iris", "version": "v3", "result": result}
    return REGISTRY.get_sample_value("mlplatform_shadow_copies_total", labels) or 0.0


def test_a_shadow_answers_a_copy_that_is_stored_and_never_returned(key_client, shadow_v3):
    response = predict(key_client)
    assert shadows_join()

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


def test_copies_that_come_together_are_all_stored_and_counted(key_client, shadow_v3):
    answered = copies("answered")

    ids = {predict(key_client).json()["prediction_id"] for _ in range(20)}
    assert shadows_join()

    assert {str(s.primary_id) for s in ShadowPrediction.objects.all()} == ids
    assert copies("answered") == answered + 20


def test_copies_beyond_the_limit_under_way_are_dropped_and_counted(
    key_client, shadow_v3, monkeypatch
):
    monkeypatch.setattr(in_flight, "limit", 0)  # as when the shadow has fallen far behind
    dropped = copies("dropped")

    statuses = [predict(key_client).status_code for _ in range(3)]
    assert shadows_join()

    assert statuses == [200, 200, 200]
    assert copies("dropped") == dropped + 3
    assert ShadowPrediction.objects.count() == 0


def test_a_failing_shadow_is_recorded_and_never_fails_the_caller(key_client, shadow_v3):
    # Bytes no runtime can load: only possible behind the admin's back, yet it must not hurt.
    name, sha256 = artifact_save(b"not an artifact")
    ModelVersion.objects.filter(pk=shadow_v3.pk).update(artifact=name, checksum=sha256)
    registry_touch()

    failed = copies("failed")
    response = predict(key_client)
    assert shadows_join()

    assert response.status_code == 200
    assert copies("failed") == failed + 1
    shadow = ShadowPrediction.objects.get()
    assert shadow.agrees is None and shadow.output is None and shadow.label is None
    assert "VersionUnavailable" in shadow.error and "cannot be loaded" in shadow.error


def test_a_share_of_zero_sends_no_copies(key_client, shadow_v3):
    shadow_v3.shadow_share = 0
    model_version_save(version=shadow_v3)

    for _ in range(5):
        predict(key_client)
    assert shadows_join()

    assert ShadowPrediction.objects.count() == 0


def test_a_share_sends_about_that_share_of_requests(key_client, shadow_v3):
    shadow_v3.shadow_share = 0.5
    model_version_save(version=shadow_v3)

    statuses = {predict(key_client).status_code for _ in range(60)}
    assert shadows_join()

    assert statuses == {200}  # the shadow's writes never fail a caller's
    assert 15 <= ShadowPrediction.objects.count() <= 45


def test_copies_answered_together_get_the_answers_each_would_get_alone(key_client, shadow_v3):
    rows = [SETOSA, [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]]
    ids = [
        Prediction.objects.get(pk=predict(key_client, row).json()["prediction_id"]).pk
        for row in rows
    ]
    assert shadows_join()
    alone = {s.primary_id: s for s in ShadowPrediction.objects.all()}
    ShadowPrediction.objects.all().delete()
    # A row that overflows the model, copied with the others (it never passes /predict).
    broken = Prediction.objects.get(pk=ids[0])
    broken.pk = None
    broken.save()

    shadows_send(
        route("iris", "v1", principal="test"),
        [*ids, broken.pk],
        ["setosa"] * 4,
        np.array([*rows, [float("inf")] * 4], np.float32),
    )
    assert shadows_join()

    together = {s.primary_id: s for s in ShadowPrediction.objects.all()}
    assert together[broken.pk].label is None and "not finite" in together[broken.pk].error
    for primary in ids:
        assert together[primary].error == ""
        assert together[primary].label == alone[primary].label
        np.testing.assert_allclose(together[primary].output, alone[primary].output, atol=1e-6)


def test_deleting_a_prediction_deletes_its_shadow_rows(key_client, shadow_v3):
    kept, deleted = (predict(key_client).json()["prediction_id"] for _ in range(2))
    assert shadows_join()
    assert ShadowPrediction.objects.count() == 2

    Prediction.objects.filter(pk=deleted).delete()

    assert [str(s.primary_id) for s in ShadowPrediction.objects.all()] == [kept]


pytestmark = pytest.mark.usefixtures("shadow_v3")
