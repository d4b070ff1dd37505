"""A batch job's files in Django's default storage: its input rows and each chunk's outputs.

Rows and outputs are float32 ``.npy`` files, written once and checksummed (SHA-256, kept in the
job's and the chunk's rows), under ``batch/<job id>/``; the database rows that progress updates
touch stay small. The storage is ``STORAGES["default"]``: a directory (``MEDIA_ROOT``, under
``var/``) by default, any django-storages backend (S3...) by setting, which every web and worker
process must share. A job's files go when the job is deleted (``batch_jobs_prune`` deletes ended
jobs after ``BATCH_RETENTION_DAYS``).
"""

import hashlib
import io

import numpy as np
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from mlplatform.errors import PlatformError
from predictions.models import BatchChunk, BatchJob

BLOCK_BYTES = 1 << 20


class CorruptFile(PlatformError):
    """A stored file no longer has the bytes it was written with."""

    status_code = 500
    code = "corrupt_file"


class _Reader(io.RawIOBase):
    """A file over a memoryview: storages copy it a block at a time, never the whole."""

    def __init__(self, data: memoryview) -> None:
        self.data, self.position, self.size = data, 0, len(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = min(max(base + offset, 0), self.size)
        return self.position

    def tell(self) -> int:
        return self.position

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.size - self.position)
        buffer[:n] = self.data[self.position : self.position + n]
        self.position += n
        return n


def _sha256(data: memoryview) -> str:
    digest = hashlib.sha256()
    for start in range(0, len(data), BLOCK_BYTES):
        digest.update(data[start : start + BLOCK_BYTES])
    return digest.hexdigest()


def file_save(name: str, data: memoryview | bytes) -> tuple[str, str]:
    """Write ``data`` to the storage as ``name``; (the name it got, its SHA-256)."""
    data = memoryview(data).cast("B")
    stored = default_storage.save(name, File(_Reader(data), name=name))
    return stored, _sha256(data)


def npy_bytes(array: np.ndarray) -> memoryview:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return buffer.getbuffer()


def array_load(name: str, sha256: str) -> np.ndarray:
    """The array stored as ``name``, checked against its SHA-256 (CorruptFile if it differs).

    A file of the local file system is mapped into memory: only the pages read are loaded.
    """
    try:
        path = default_storage.path(name)
    except NotImplementedError:
        with default_storage.open(name, "rb") as file:
            data = file.read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise CorruptFile(f"{name} does not hold the bytes it was written with.") from None
        return np.load(io.BytesIO(data), allow_pickle=False)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(BLOCK_BYTES):
            digest.update(block)
    if digest.hexdigest() != sha256:
        raise CorruptFile(f"{name} does not hold the bytes it was written with.")
    return np.load(path, mmap_mode="r", allow_pickle=False)


def file_delete(name: str) -> None:
    if name:
        default_storage.delete(name)


def input_name(job_id) -> str:
    return f"batch/{job_id}/input.npy"


def chunk_name(job_id, index: int) -> str:
    return f"batch/{job_id}/chunk-{index:06d}.npy"


@receiver(post_delete, sender=BatchJob)
@receiver(post_delete, sender=BatchChunk)
def _files_deleted_with_their_row(sender, instance, **kwargs) -> None:
    name = instance.input_file.name if sender is BatchJob else instance.outputs_file.name
    transaction.on_commit(lambda: file_delete(name))
