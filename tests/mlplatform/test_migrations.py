"""The migrations describe the models as they are."""

import hashlib
import io

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
    # Through the models as they were at 0007 (today's have columns that 0007 lacks).
    model = old.get_model("predictions", "MLModel").objects.create(
        name="migrated", feature_names=["a", "b", "c", "d"], labels=["x", "y", "z"]
    )
    version = old.get_model("predictions", "ModelVersion").objects.create(
        model=model, label="v1", artifact=b"", checksum="0" * 64
    )
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


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()
