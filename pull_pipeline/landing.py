"""The landing store: every window exactly as received, as Parquet, for replays.

A key scheme over a `Folder` (a local folder or `s3://bucket/prefix`): each window is the
object `<source>/<partition key>.parquet`. A window is written while its pages stream in (one
Parquet row group per page) and appears atomically when complete, so a crashed fetch never
leaves a half window behind that a replay could mistake for the whole. The row and page
counts and the writing run's id are in the Parquet footer and, on S3, also in the object's
user metadata (`x-amz-meta-rows`, `-pages`, `-run-id`), readable with a HEAD.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pull_pipeline.errors import PullPipelineError
from pull_pipeline.storage import LocalFolder, ObjectMissing
from pull_pipeline.storage.local import remove_orphans
from pull_pipeline.storage.windows import WindowFiles

__all__ = ["LandingMissing", "LandingStore", "LocalLanding", "WindowWriter", "remove_orphans"]

ROWS_KEY = b"pull_pipeline.rows"
RUN_KEY = b"pull_pipeline.run_id"
PAGES_KEY = b"pull_pipeline.pages"
# Rows per batch read back for mapping, validation and the load: smaller batches lower the
# memory peak for a little per-batch overhead, and much smaller ones save little more
# (the measurements are in the README, Performance).
READ_BATCH_ROWS = 100_000


class LandingMissing(PullPipelineError):
    """A window was never landed (or was removed): replay and readings cannot build it."""


class WindowWriter:
    """Append raw batches of one window to a local Parquet file, one row group per batch."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.schema = schema
        self.rows = 0
        self.pages = 0
        # Only the tag column (the first of the raw schema) repeats enough for a dictionary:
        # for times and values it is wasted work (writing and reading back are slower, and the
        # file is bigger; see README, Performance).
        self._writer = pq.ParquetWriter(
            path, schema, compression="zstd", use_dictionary=schema.names[:1])

    def write(self, batch: pa.Table) -> None:
        self.pages += 1
        if batch.num_rows:
            self._writer.write_table(batch.cast(self.schema))
            self.rows += batch.num_rows

    def close(self, run_id: str) -> None:
        self._writer.add_key_value_metadata(
            {ROWS_KEY: str(self.rows).encode(), RUN_KEY: run_id.encode(),
             PAGES_KEY: str(self.pages).encode()}
        )
        self._writer.close()


class LandingStore(WindowFiles):
    """Raw windows of every source under one landing path."""

    WHERE = "landing.s3"

    @contextmanager
    def writer(
        self, source: str, partition_key: str, schema: pa.Schema, run_id: str
    ) -> Iterator[WindowWriter]:
        """Write one window; it becomes visible only if the block exits without error."""
        with self.folder.write(self.key(source, partition_key)) as pending:
            writer = WindowWriter(pending.path, schema)
            yield writer
            writer.close(run_id)
            pending.metadata.update(
                {"rows": str(writer.rows), "pages": str(writer.pages), "run-id": run_id})

    @contextmanager
    def local_copy(self, source: str, partition_key: str) -> Iterator[Path]:
        """A local path to the window's Parquet file (downloaded first from S3)."""
        try:
            with self.folder.open(self.key(source, partition_key)) as path:
                yield path
        except ObjectMissing:
            raise self._missing(source, partition_key) from None

    def read(self, source: str, partition_key: str) -> Iterator[tuple[pa.Table, bool]]:
        """Stream the window back in bounded batches (row groups are never all in memory),
        each with whether it is the window's last."""
        with self.local_copy(source, partition_key) as path:
            parquet = pq.ParquetFile(path)
            left = parquet.metadata.num_rows
            for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS):
                left -= batch.num_rows
                yield pa.Table.from_batches([batch]), left <= 0

    def pages(self, source: str, partition_key: str) -> int:
        """How many pages/chunks the fetch of this window took (on S3: from a HEAD)."""
        info = self.folder.info(self.key(source, partition_key))
        if info is None:
            raise self._missing(source, partition_key)
        if info.metadata is not None:
            return int(info.metadata.get("pages", 0))
        with self.local_copy(source, partition_key) as path:
            footer = pq.read_metadata(path).metadata or {}
        return int(footer.get(PAGES_KEY, b"0"))

    def _missing(self, source: str, partition_key: str) -> LandingMissing:
        return LandingMissing(
            f"{source}: window {partition_key} was never landed at "
            f"{self.uri(source, partition_key)}; materialize {source}/raw for it first")


class LocalLanding(LandingStore):
    """The landing store in a folder on this machine (the default: `.pull_pipeline/landing`)."""

    def __init__(self, root: str | Path) -> None:
        super().__init__(LocalFolder(root))
