"""Model versions' artifacts as files in Django's default storage, one file per distinct content.

A file is named by its SHA-256 (``artifacts/<sha256>``): versions with identical bytes share
one file, and the name says what the bytes must hash to. The storage is ``STORAGES["default"]``
(a directory, ``MEDIA_ROOT``, by default; any django-storages backend such as S3 by setting),
which every web and worker process must share. An upload is hashed and copied a block at a time
from the temporary file Django wrote it to; nothing holds a whole artifact in memory but the
runtime that loads it. A file goes when the last version naming it is deleted (or given another
artifact), after the deletion commits.
"""

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.core.files import File
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from mlplatform.conf import platform_setting
from mlplatform.errors import InvalidInput, PayloadTooLarge
from predictions.models import ModelVersion
from predictions.runtime.errors import ArtifactError
from predictions.runtime.sources import Source, source_size

BLOCK_BYTES = 1 << 20
DIRECTORY = "artifacts"
# What a process copies to a temporary file before loading it, when the storage is not a local
# directory: artifacts larger than this never sit in memory as one bytes object.
IN_MEMORY_BYTES = 8 << 20

# What an artifact can be handed over as: bytes (training, tests), a path (the command line),
# or a file object (an upload: Django keeps large ones in a temporary file).
Upload = bytes | bytearray | memoryview | os.PathLike | File


def storage_name(sha256: str) -> str:
    return f"{DIRECTORY}/{sha256}"


def _hash(file) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    while block := file.read(BLOCK_BYTES):
        digest.update(block)
        size += len(block)
    return digest.hexdigest(), size


@dataclass(frozen=True, slots=True)
class StagedArtifact:
    """An artifact on its way in: its bytes or local file for the runtime, size and SHA-256."""

    source: Source
    sha256: str
    size: int


def _checked_size(size: int) -> None:
    limit = platform_setting("MAX_ARTIFACT_BYTES")
    if size > limit:
        raise PayloadTooLarge(f"artifact: the file is {size} bytes; the limit is {limit}.")
    if not size:
        raise InvalidInput("artifact: the file is empty.")


@contextlib.contextmanager
def artifact_staged(upload: Upload) -> Iterator[StagedArtifact]:
    """Size-check and hash an artifact a block at a time; a file object Django did not write
    to a temporary file of its own is copied to one while the block lasts.

    ``PayloadTooLarge`` past ``MAX_ARTIFACT_BYTES``, ``InvalidInput`` for an empty file.
    """
    if isinstance(upload, bytes | bytearray | memoryview):
        data = bytes(upload)
        _checked_size(len(data))
        yield StagedArtifact(data, hashlib.sha256(data).hexdigest(), len(data))
        return
    if isinstance(upload, os.PathLike):
        path = Path(upload)
        _checked_size(path.stat().st_size)
        with path.open("rb") as file:
            sha256, size = _hash(file)
        yield StagedArtifact(path, sha256, size)
        return
    if upload.size is not None:
        _checked_size(upload.size)
    if hasattr(upload, "temporary_file_path"):
        path = Path(upload.temporary_file_path())
        with path.open("rb") as file:
            sha256, size = _hash(file)
        yield StagedArtifact(path, sha256, size)
        return
    upload.seek(0)
    if upload.size is not None and upload.size <= IN_MEMORY_BYTES:
        data = upload.read()  # an in-memory upload: Django keeps only small ones in memory
        yield StagedArtifact(data, hashlib.sha256(data).hexdigest(), len(data))
        return
    with tempfile.NamedTemporaryFile(prefix="artifact-") as copy:
        digest, size = hashlib.sha256(), 0
        for block in upload.chunks(BLOCK_BYTES):
            digest.update(block)
            copy.write(block)
            size += len(block)
        copy.flush()
        _checked_size(size)
        yield StagedArtifact(Path(copy.name), digest.hexdigest(), size)


def artifact_store(staged: StagedArtifact) -> str:
    """Put a staged artifact in the storage (unless a file with its SHA-256 is there); its name.

    The storage copies the file a block at a time. A concurrent upload of the same bytes may
    get a name of its own (the storage never overwrites), which is as good.
    """
    name = storage_name(staged.sha256)
    if default_storage.exists(name):
        return name
    if isinstance(staged.source, os.PathLike):
        with open(staged.source, "rb") as file:
            return default_storage.save(name, File(file, name=name))
    return default_storage.save(name, ContentFile(bytes(staged.source), name=name))


def _checked(file, name: str, sha256: str) -> None:
    digest, _ = _hash(file)
    if digest != sha256:
        raise ArtifactError(f"the stored file {name} does not hold the artifact's bytes")


def _local_path(name: str) -> Path | None:
    """The file's path on this host, if the storage keeps it in a directory here."""
    try:
        path = Path(default_storage.path(name))
    except NotImplementedError:  # object stores (S3...): no local path
        return None
    # Some storages give a path without keeping the file there (InMemoryStorage).
    return path if path.is_file() else None


@contextlib.contextmanager
def artifact_local(name: str, sha256: str) -> Iterator[Source]:
    """A stored artifact as the runtime loads it, checked against its SHA-256.

    A file of a local directory is handed over by path; from other storages a small file comes
    as bytes and a large one as a temporary copy, removed when the block ends. ArtifactError if
    the file is missing or its bytes differ.
    """
    if not name:
        raise ArtifactError("the version has no artifact file")
    path = _local_path(name)
    if path is not None:
        with path.open("rb") as file:
            _checked(file, name, sha256)
        yield path
        return
    try:
        stored = default_storage.open(name, "rb")
    except FileNotFoundError:
        raise ArtifactError(f"the artifact file {name} is missing from the storage") from None
    with stored, tempfile.NamedTemporaryFile(prefix="artifact-") as copy:
        shutil.copyfileobj(stored, copy, BLOCK_BYTES)
        copy.flush()
        copy.seek(0)
        _checked(copy, name, sha256)
        if source_size(Path(copy.name)) <= IN_MEMORY_BYTES:
            copy.seek(0)
            yield copy.read()
        else:
            yield Path(copy.name)


def artifact_bytes(version: ModelVersion) -> bytes:
    """A version's artifact as bytes (small ones: ensembles, the demo models)."""
    with artifact_local(version.artifact.name, version.checksum) as source:
        return Path(source).read_bytes() if isinstance(source, os.PathLike) else bytes(source)


def artifact_release(name: str) -> None:
    """Delete a stored artifact that no version names any more."""
    if name and not ModelVersion.objects.filter(artifact=name).exists():
        default_storage.delete(name)


def release_on_commit(name: str) -> None:
    if name:
        transaction.on_commit(lambda: artifact_release(name))


@receiver(post_delete, sender=ModelVersion)
def _file_released_with_its_last_version(sender, instance, **kwargs) -> None:
    release_on_commit(instance.artifact.name)


def artifact_save(data: bytes) -> tuple[str, str]:
    """Store bytes as an artifact file; (its name in the storage, its SHA-256)."""
    with artifact_staged(data) as staged:
        return artifact_store(staged), staged.sha256
