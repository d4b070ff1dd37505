"""The migrations describe the models as they are."""

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from django.core.management import call_command

from accounts.models import User


@pytest.mark.django_db
def test_the_models_need_no_migration_that_is_not_written():
    # makemigrations --check exits non-zero (SystemExit) if a model change has no migration.
    call_command("makemigrations", "--check", "--dry-run", verbosity=0)


@pytest.mark.django_db(transaction=True)
def test_batch_blobs_move_to_files_and_back_without_losing_a_job(settings):
    """0008 writes each job's rows and each chunk's outputs to the storage; its reverse reads
    them back into the blob columns."""
    from django.core.files.storage import default_storage
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    before = [("predictions", "0007_batching_and_ordered_ids")]
    after = [("predictions", "0008_batch_files")]
    rows = np.arange(8, dtype=np.float32).reshape(2, 4)
    outputs = np.eye(2, 3, dtype=np.float32)

    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    user = User.objects.create_user("migrated")  # accounts stays migrated
    version = _old_demo_versions(old)[0]
    job = old.get_model("predictions", "BatchJob").objects.create(
        owner_id=user.pk,
        model_version=version,
        total_inputs=2,
        completed_inputs=2,
        chunk_size=2,
        input_format="json",
        status="completed",
        input_data=_npy(rows),
    )
    old.get_model("predictions", "BatchChunk").objects.create(
        job=job, index=0, start=0, stop=2, outputs=_npy(outputs)
    )

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    moved = new.get_model("predictions", "BatchJob").objects.get(pk=job.pk)
    chunk = new.get_model("predictions", "BatchChunk").objects.get(job_id=job.pk)
    assert moved.input_file.name == f"batch/{job.pk}/input.npy"
    assert np.array_equal(np.load(default_storage.open(moved.input_file.name, "rb")), rows)
    stored = default_storage.open(chunk.outputs_file.name, "rb").read()
    assert hashlib.sha256(stored).hexdigest() == chunk.outputs_sha256
    assert np.array_equal(np.load(io.BytesIO(stored)), outputs)

    executor = MigrationExecutor(connection)
    executor.migrate(before)
    back = executor.loader.project_state(before).apps
    restored = back.get_model("predictions", "BatchJob").objects.get(pk=job.pk)
    assert np.array_equal(np.load(io.BytesIO(bytes(restored.input_data))), rows)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _old_demo_versions(apps) -> list:
    """The demo models' versions, written as a schema before 0009 keeps them: bytes in rows."""
    from predictions.demo.seed import TRAFFIC, _trained

    MLModel = apps.get_model("predictions", "MLModel")
    ModelVersion = apps.get_model("predictions", "ModelVersion")
    versions = []
    for demo in _trained():
        model = MLModel.objects.create(
            name=demo.name,
            task=demo.task,
            feature_names=list(demo.feature_names),
            labels=list(demo.labels),
        )
        for trained in demo.versions:
            versions.append(
                ModelVersion.objects.create(
                    model=model,
                    label=trained.label,
                    artifact=trained.artifact,
                    artifact_name=f"{demo.name}-{trained.label}.npz",
                    checksum=hashlib.sha256(trained.artifact).hexdigest(),
                    status="active",
                    traffic_weight=TRAFFIC.get((demo.name, trained.label), 100.0),
                )
            )
    return versions


@pytest.mark.django_db(transaction=True)
def test_artifacts_move_to_files_with_the_same_checksums_and_predictions_and_back():
    """0009 writes each version's bytes to artifacts/<sha256> (one file for identical bytes)
    and drops the column; the checksums stay, and each version predicts as before. Its reverse
    reads the files back into the column."""
    from django.core.files.storage import default_storage
    from django.db import connection
    from django.db.migrations.executor import MigrationExecutor

    from predictions.runtime.predictors import load_predictor

    before = [("predictions", "0008_batch_files")]
    after = [("predictions", "0009_artifact_files")]
    rows = np.random.default_rng(0).uniform(0, 8, size=(5, 64)).astype(np.float32)

    executor = MigrationExecutor(connection)
    executor.migrate(before)
    old = executor.loader.project_state(before).apps
    versions = _old_demo_versions(old)
    twin = versions[0]  # a second version with the same bytes: one file for both
    OldVersion = old.get_model("predictions", "ModelVersion")
    OldVersion.objects.create(
        model_id=twin.model_id, label="twin", artifact=twin.artifact, checksum=twin.checksum
    )
    expected = {}
    for version in OldVersion.objects.select_related("model"):
        n = len(version.model.feature_names)
        outputs = load_predictor("numpy", bytes(version.artifact)).predict(rows[:, :n])
        expected[version.pk] = (version.checksum, bytes(version.artifact), outputs)

    executor = MigrationExecutor(connection)
    executor.migrate(after)
    new = executor.loader.project_state(after).apps
    moved = {v.pk: v for v in new.get_model("predictions", "ModelVersion").objects.all()}
    assert set(moved) == set(expected)
    for pk, (checksum, data, outputs) in expected.items():
        version = moved[pk]
        assert version.checksum == checksum
        assert version.artifact.name == f"artifacts/{checksum}"
        assert default_storage.open(version.artifact.name, "rb").read() == data
        n = len(version.model.feature_names)
        path = Path(default_storage.path(version.artifact.name))
        predicted = load_predictor("numpy", path).predict(rows[:, :n])
        np.testing.assert_array_equal(predicted, outputs)
    files = default_storage.listdir("artifacts")[1]
    assert sorted(files) == sorted({checksum for checksum, _, _ in expected.values()})

    executor = MigrationExecutor(connection)
    executor.migrate(before)
    back = executor.loader.project_state(before).apps
    for version in back.get_model("predictions", "ModelVersion").objects.all():
        assert (version.checksum, bytes(version.artifact)) == expected[version.pk][:2]

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
