"""Where archived windows live: `<archive path>/<source>/<partition key>.parquet`.

The path is `s3://bucket/prefix` (the `archive.s3` block connects) or a local folder. An
object appears at its final key only after it was verified, so "the object exists" means
"archived and verified": a new export is uploaded to `_incomplete/<source>/<key>.parquet`,
downloaded again and checked, then copied to the final key (a copy is atomic, so a killed
export never leaves a partial archive) and the incomplete object is deleted.

The row count, checksum, window and run id are in the Parquet footer and, on S3, also in
the object's user metadata, so that checking an archive is one HEAD request.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from pull_pipeline.archive.checksum import Digest
from pull_pipeline.config.models import S3Config
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.s3 import S3Folder, StorageError, is_s3_url, temp_path

INCOMPLETE = "_incomplete"


class ArchiveError(PullPipelineError):
    """An export or restore could not complete; the message names the windows and why."""


def keys_listed(keys: Sequence[str]) -> str:
    """Window keys for an error message: the first five, then "and N more"."""
    return ", ".join(keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")


@contextmanager
def window_errors(source: str, partition_key: str) -> Iterator[None]:
    """Prefix storage errors with the source and window they happened to."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(f"{source}: window {partition_key}: {exc}", exc.transient) from None


@dataclass(frozen=True)
class Archived:
    """What an archived window's metadata says about it."""

    uri: str
    digest: Digest
    run_id: str


class LocalFolder:
    """A local archive folder with the operations `S3Folder` offers (metadata: the footer)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, name: str = "") -> str:
        return str(self.root / name)

    def head(self, name: str) -> dict[str, str] | None:
        path = self.root / name
        if not path.exists():
            return None
        footer = pq.read_metadata(path).metadata or {}
        return {key.decode(): value.decode() for key, value in footer.items()}

    def upload(self, path: Path, name: str, metadata: Mapping[str, str]) -> None:
        self._place(lambda tmp: shutil.copyfile(path, tmp), name)

    def download(self, name: str, path: Path) -> None:
        shutil.copyfile(self.root / name, path)

    def copy(self, source: str, target: str) -> None:
        self._place(lambda tmp: shutil.copyfile(self.root / source, tmp), target)

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def _place(self, write: Callable[[Path], object], name: str) -> None:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.tmp")
        write(tmp)
        os.replace(tmp, final)


class ArchiveStore:
    """Archived windows of every source under one archive path."""

    def __init__(self, folder: S3Folder | LocalFolder) -> None:
        self.folder = folder

    @classmethod
    def open(cls, path: str, s3: S3Config | None) -> ArchiveStore:
        if is_s3_url(path):
            return cls(S3Folder.from_url(path, s3, where="archive.s3"))
        return cls(LocalFolder(Path(path)))

    @staticmethod
    def key(source: str, partition_key: str) -> str:
        return f"{source}/{partition_key}.parquet"

    def uri(self, source: str, partition_key: str) -> str:
        return self.folder.uri(self.key(source, partition_key))

    def source_uri(self, source: str) -> str:
        """The folder holding a source's archived windows."""
        return self.folder.uri(f"{source}/")

    def head(self, source: str, partition_key: str) -> Archived | None:
        """The archived window's digest, or None if the window was never archived."""
        metadata = self.folder.head(self.key(source, partition_key))
        if metadata is None:
            return None
        if "rows" not in metadata or "checksum" not in metadata:
            raise ArchiveError(
                f"{self.uri(source, partition_key)} has no row count and checksum metadata, so "
                "it was not written by an export; move it away to export the window again")
        return Archived(self.uri(source, partition_key),
                        Digest(int(metadata["rows"]), metadata["checksum"]),
                        metadata.get("run-id", ""))

    def publish(
        self, source: str, partition_key: str, local: Path, metadata: Mapping[str, str],
        verify: Callable[[Path], None],
    ) -> str:
        """Upload, read back and `verify` (raises if wrong), then move to the final key."""
        incomplete = f"{INCOMPLETE}/{self.key(source, partition_key)}"
        self.folder.upload(local, incomplete, metadata)
        with temp_path(".parquet") as copy:
            self.folder.download(incomplete, copy)
            verify(copy)
        self.folder.copy(incomplete, self.key(source, partition_key))
        self.folder.delete(incomplete)
        return self.uri(source, partition_key)

    def discard_incomplete(self, source: str, partition_key: str) -> None:
        """Remove what a killed export may have left behind (a no-op when nothing is there)."""
        self.folder.delete(f"{INCOMPLETE}/{self.key(source, partition_key)}")

    @contextmanager
    def local_copy(self, source: str, partition_key: str) -> Iterator[Path]:
        with temp_path(".parquet") as path:
            self.folder.download(self.key(source, partition_key), path)
            yield path
