"""Batch jobs' rows and chunk outputs move from database blobs to files in the storage.

Each job's ``input_data`` and each chunk's ``outputs`` is written to ``batch/<job id>/`` with its
SHA-256, then the blob columns are dropped; the reverse reads the files back into blobs. On a
large installation this rewrites every stored job: run it while no worker is running.
"""

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import migrations, models


def _save(name: str, data: bytes) -> tuple[str, str]:
    return default_storage.save(name, ContentFile(data)), hashlib.sha256(data).hexdigest()


def blobs_to_files(apps, schema_editor):
    BatchJob = apps.get_model("predictions", "BatchJob")
    BatchChunk = apps.get_model("predictions", "BatchChunk")
    for job in BatchJob.objects.only("pk", "input_data").iterator(chunk_size=1):
        job.input_file, job.input_sha256 = _save(f"batch/{job.pk}/input.npy", bytes(job.input_data))
        job.save(update_fields=["input_file", "input_sha256"])
    for chunk in BatchChunk.objects.only("pk", "job_id", "index", "outputs").iterator(chunk_size=1):
        chunk.outputs_file, chunk.outputs_sha256 = _save(
            f"batch/{chunk.job_id}/chunk-{chunk.index:06d}.npy", bytes(chunk.outputs)
        )
        chunk.save(update_fields=["outputs_file", "outputs_sha256"])


def files_to_blobs(apps, schema_editor):
    BatchJob = apps.get_model("predictions", "BatchJob")
    BatchChunk = apps.get_model("predictions", "BatchChunk")
    for job in BatchJob.objects.only("pk", "input_file").iterator(chunk_size=1):
        with default_storage.open(job.input_file.name, "rb") as file:
            job.input_data = file.read()
        job.save(update_fields=["input_data"])
    for chunk in BatchChunk.objects.only("pk", "outputs_file").iterator(chunk_size=1):
        with default_storage.open(chunk.outputs_file.name, "rb") as file:
            chunk.outputs = file.read()
        chunk.save(update_fields=["outputs"])


class Migration(migrations.Migration):
    dependencies = [("predictions", "0007_batching_and_ordered_ids")]

    operations = [
        # A default for the blobs, so that the reverse can add them back to existing rows.
        migrations.AlterField(
            model_name="batchjob", name="input_data", field=models.BinaryField(default=b"")
        ),
        migrations.AlterField(
            model_name="batchchunk",
            name="outputs",
            field=models.BinaryField(
                default=b"", help_text="float32 .npy array, one row of outputs per input."
            ),
        ),
        migrations.AddField(
            model_name="batchjob",
            name="input_file",
            field=models.FileField(
                default="",
                editable=False,
                help_text="The rows: a float32 .npy file in the storage.",
                max_length=255,
                upload_to="",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="batchjob",
            name="input_sha256",
            field=models.CharField(default="", editable=False, max_length=64),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="batchchunk",
            name="outputs_file",
            field=models.FileField(
                default="",
                help_text="float32 .npy array in the storage, one row of outputs per input.",
                max_length=255,
                upload_to="",
            ),
            preserve_default=False,
        ),
        migrations.AddField(
            model_name="batchchunk",
            name="outputs_sha256",
            field=models.CharField(default="", max_length=64),
            preserve_default=False,
        ),
        migrations.RunPython(blobs_to_files, files_to_blobs, elidable=True),
        migrations.RemoveField(model_name="batchjob", name="input_data"),
        migrations.RemoveField(model_name="batchchunk", name="outputs"),
    ]
