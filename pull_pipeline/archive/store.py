"""Where archived windows live: `<archive path>/<source>/<partition key>.parquet`.

A key scheme over a `Folder`: `s3://bucket/prefix` (the `archive.s3` block connects) or a
local folder. An object appears at its final key only after it was verified, so "the object
exists" means "archived and verified": a new export is put at
`_incomplete/<source>/<key>.parquet`, read back and checked, then copied to the final key (a
copy is atomic, so a killed export never leaves a partial archive) and the incomplete object
is deleted.

The row count, checksum, window and run id are in the Parquet footer and, on S3, also in
the object's user metadata, so that checking an archive is one HEAD request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from pull_pipeline.archive.checksum import Digest
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.storage import StorageError
from pull_pipeline.storage.windows import WindowFiles

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


class ArchiveStore(WindowFiles):
    """Archived windows of every source under one archive path."""

    WHERE = "archive.s3"

    def source_uri(self, source: str) -> str:
        """The folder holding a source's archived windows."""
        return self.folder.uri(f"{source}/")

    def digest(self, source: str, partition_key: str) -> Digest | None:
        """The archived window's digest, or None if the window was never archived."""
        key = self.key(source, partition_key)
        info = self.folder.info(key)
        if info is None:
            return None
        metadata = info.metadata
        if metadata is None:  # a local folder: the footer holds it
            with self.folder.open(key) as path:
                footer = pq.read_metadata(path).metadata or {}
            metadata = {name.decode(): value.decode() for name, value in footer.items()}
        if "rows" not in metadata or "checksum" not in metadata:
            raise ArchiveError(
                f"{self.uri(source, partition_key)} has no row count and checksum metadata, so "
                "it was not written by an export; move it away to export the window again")
        return Digest(int(metadata["rows"]), metadata["checksum"])

    def publish(
        self, source: str, partition_key: str, local: Path, metadata: Mapping[str, str],
        verify: Callable[[Path], None],
    ) -> str:
        """Put, read back and `verify` (raises if wrong), then move to the final key."""
        incomplete = f"{INCOMPLETE}/{self.key(source, partition_key)}"
        self.folder.put(local, incomplete, metadata)
        with self.folder.open(incomplete) as copy:
            verify(copy)
        self.folder.copy(incomplete, self.key(source, partition_key))
        self.folder.delete(incomplete)
        return self.uri(source, partition_key)

    def discard_incomplete(self, source: str, partition_key: str) -> None:
        """Remove what a killed export may have left behind (a no-op when nothing is there)."""
        self.folder.delete(f"{INCOMPLETE}/{self.key(source, partition_key)}")

    def local_copy(self, source: str, partition_key: str) -> AbstractContextManager[Path]:
        """A local path to the archived window (downloaded first from S3)."""
        return self.folder.open(self.key(source, partition_key))
