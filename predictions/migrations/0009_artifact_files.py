"""Model versions' artifacts move from a database column to files in the storage.

Each version's bytes are written to ``artifacts/<sha256>`` (once for identical bytes), after
checking that they hash to the version's checksum, which stays as it is; then the column is
dropped. The reverse reads the files back into the column. Run it while no worker is running.
"""

import hashlib

from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import migrations, models


def blobs_to_files(apps, schema_editor):
    ModelVersion = apps.get_model("predictions", "ModelVersion")
    versions = ModelVersion.objects.only("pk", "artifact", "checksum")
    for version in versions.iterator(chunk_size=1):
        data = bytes(version.artifact)
        if hashlib.sha256(data).hexdigest() != version.checksum:
            raise RuntimeError(
                f"Model version {version.pk}: its artifact does not hash to its checksum "
                f"{version.checksum}; fix or delete the version, then migrate again."
            )
        name = f"artifacts/{version.checksum}"
        if not default_storage.exists(name):
            name = default_storage.save(name, ContentFile(data))
        version.artifact_file = name
        version.save(update_fields=["artifact_file"])


def files_to_blobs(apps, schema_editor):
    ModelVersion = apps.get_model("predictions", "ModelVersion")
    for version in ModelVersion.objects.only("pk", "artifact_file").iterator(chunk_size=1):
        with default_storage.open(version.artifact_file.name, "rb") as file:
            version.artifact = file.read()
        version.save(update_fields=["artifact"])


class Migration(migrations.Migration):
    dependencies = [("predictions", "0008_batch_files")]

    operations = [
        # A default for the column, so that the reverse can add it back to existing rows.
        migrations.AlterField(
            model_name="modelversion",
            name="artifact",
            field=models.BinaryField(default=b"", editable=False),
        ),
        migrations.AddField(
            model_name="modelversion",
            name="artifact_file",
            field=models.FileField(blank=True, default="", editable=False, max_length=255),
            preserve_default=False,
        ),
        migrations.RunPython(blobs_to_files, files_to_blobs, elidable=True),
        migrations.RemoveField(model_name="modelversion", name="artifact"),
        migrations.RenameField(
            model_name="modelversion", old_name="artifact_file", new_name="artifact"
        ),
        migrations.AlterField(
            model_name="modelversion",
            name="artifact",
            field=models.FileField(
                blank=True,
                editable=False,
                help_text="The artifact's file in the storage, named by its SHA-256 "
                "(artifact_files.py).",
                max_length=255,
                upload_to="",
            ),
        ),
    ]
