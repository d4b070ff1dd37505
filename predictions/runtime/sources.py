"""An artifact as the runtime reads it: bytes in memory, or a file on the local disk.

Large artifacts stay on disk until a loader reads them (onnxruntime and ``zipfile`` open a path
themselves); small ones, and what training produces, are plain bytes.
"""

import os
from pathlib import Path

from predictions.runtime.errors import ArtifactError

Source = bytes | bytearray | memoryview | os.PathLike


def is_path(source: Source) -> bool:
    return isinstance(source, os.PathLike)


def source_size(source: Source) -> int:
    return Path(source).stat().st_size if is_path(source) else len(source)


def source_head(source: Source, n: int) -> bytes:
    """The first ``n`` bytes of an artifact."""
    if is_path(source):
        with open(source, "rb") as file:
            return file.read(n)
    return bytes(source[:n])


def source_bytes(source: Source, *, limit: int, what: str) -> bytes:
    """The whole of a small artifact (``ArtifactError`` past ``limit`` bytes)."""
    if (size := source_size(source)) > limit:
        raise ArtifactError(f"{what} is {size} bytes; the limit is {limit}")
    return Path(source).read_bytes() if is_path(source) else bytes(source)
