"""What every folder offers (`Folder`), and the errors and temporary files they share.

Landing, the archive and file sources are key schemes over a `Folder`: they decide the
names, the folder decides where bytes live. Names are `/`-separated and relative to the
folder; names with a part starting with '.' (partial writes, dotfiles) are never listed.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pull_pipeline.errors import PullPipelineError


class StorageError(PullPipelineError):
    """A folder refused a request or could not be reached; `transient`: a retry may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StorageError):
    """There is no object of that name."""


@dataclass(frozen=True)
class ObjectInfo:
    """One object: its name in the folder, size, a version tag and its metadata.

    `metadata` is None where the folder keeps no metadata beside the bytes (a local
    folder), so that a key scheme knows to read it from the file itself instead.
    """

    name: str
    size: int
    etag: str
    metadata: Mapping[str, str] | None = None


@dataclass
class Pending:
    """An object being written: fill `path`, add `metadata`; it appears when the block exits."""

    path: Path
    metadata: dict[str, str] = field(default_factory=dict)


class Folder(Protocol):
    """A local folder or an S3 prefix, with the operations landing, archive and files need."""

    def uri(self, name: str = "") -> str:
        """A human-readable location for metadata and messages."""
        ...

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object whose name starts with `under`, in name order."""
        ...

    def info(self, name: str) -> ObjectInfo | None:
        """The object, or None if there is none."""
        ...

    def open(self, name: str) -> AbstractContextManager[Path]:
        """A local path to read the object from; raises `ObjectMissing`."""
        ...

    def write(self, name: str) -> AbstractContextManager[Pending]:
        """Write an object atomically: it appears only if the block exits without error."""
        ...

    def put(self, path: Path, name: str, metadata: Mapping[str, str]) -> None:
        """Publish a local file as the object, atomically."""
        ...

    def copy(self, source: str, target: str) -> None:
        """Copy an object within the folder, atomically, with its metadata."""
        ...

    def delete(self, name: str) -> None:
        """Remove the object; nothing happens if there is none."""
        ...

    def probe(self) -> None:
        """Raise a transient `StorageError` if the folder cannot be read now."""
        ...


def hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))


@contextmanager
def temp_path(suffix: str = "") -> Iterator[Path]:
    """A temporary file path, removed afterwards (the suffix keeps compression detectable)."""
    fd, name = tempfile.mkstemp(prefix="pull_pipeline_", suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        if os.path.exists(name):
            os.unlink(name)
