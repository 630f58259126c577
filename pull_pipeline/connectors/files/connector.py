"""`kind: files`: CSV / Parquet / JSON / JSON lines from a local folder or an S3 folder.

Two ways to decide which rows belong to a window:

- by file name (`pattern:`): a file belongs to the window that contains the time in its
  name, and is landed whole, as received; rows outside the window are rejected later by
  validation like for any source (so the name's resolution should match the cadence);
- by content (no pattern): every file under the path is read and only the rows whose
  timestamp falls in the window are kept. Rows whose time cannot be read belong to no
  window; they are skipped with a warning. Within one run (a ranged backfill) each file's
  time span is remembered, so later windows skip files that cannot hold their rows.

A window with no file (or, by content, no row) succeeds with 0 rows and a warning in the log.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import pandas as pd
import pyarrow as pa

from pull_pipeline.canonical import times
from pull_pipeline.config.models import FilesSource
from pull_pipeline.connectors.base import Connector
from pull_pipeline.connectors.files.folders import open_files
from pull_pipeline.connectors.files.formats import read_file
from pull_pipeline.connectors.files.pattern import FilePattern
from pull_pipeline.errors import PermanentSourceError, TransientSourceError
from pull_pipeline.storage import ObjectInfo, StorageError

log = logging.getLogger("pull_pipeline.files")
Span = tuple[pd.Timestamp, pd.Timestamp] | None  # a file's first and last time; None: no rows


class FilesConnector(Connector):
    """Read the files of one window, file by file, chunk by chunk."""

    def __init__(self, name: str, config: FilesSource) -> None:
        super().__init__(name)
        self.config = config
        self.pattern = FilePattern(config.pattern) if config.pattern else None
        self.files = open_files(name, config)
        self._spans: dict[tuple[str, str], Span] = {}

    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        rows = files = 0
        with self._storage_errors():
            for info in self._candidates(start, end):
                files += 1
                with self.files.local(info, keep=self.pattern is None) as path:
                    where = f"{self.name}: {self.files.uri(info.name)}"
                    batches = read_file(path, where, self.config)
                    if self.pattern is None:
                        batches = self._in_window(batches, info, start, end)
                    for batch in batches:
                        rows += batch.num_rows
                        yield batch
        if rows == 0:
            log.warning("%s: window [%s, %s) has no rows (%d files read under %s)", self.name,
                        start.isoformat(), end.isoformat(), files, self.config.path)

    def probe(self) -> None:
        with self._storage_errors():
            self.files.probe()

    def close(self) -> None:
        self.files.close()

    def _candidates(self, start: datetime, end: datetime) -> list[ObjectInfo]:
        if self.pattern is None:
            return [info for info in self.files.list() if self._may_hold(info, start, end)]
        timed = []
        for info in self.files.list(self.pattern.prefix):
            when = self.pattern.time_of(info.name)
            if when is not None and start <= when < end:
                timed.append((when, info.name, info))
        return [info for _, _, info in sorted(timed)]

    def _may_hold(self, info: ObjectInfo, start: datetime, end: datetime) -> bool:
        """Whether a file may hold rows of the window: unread in this run, or its span overlaps."""
        key = (info.name, info.etag)
        if key not in self._spans:
            return True
        span = self._spans[key]
        return span is not None and span[0] < end and span[1] >= start

    def _in_window(
        self, batches: Iterator[pa.Table], info: ObjectInfo, start: datetime, end: datetime
    ) -> Iterator[pa.Table]:
        """Keep the rows timed inside the window; remember the file's span once fully read."""
        low = high = None
        unreadable = 0
        first, after = pd.Timestamp(start), pd.Timestamp(end)
        for batch in batches:
            ts = times(batch.column(self.config.fields.relative_time), self.config)
            unreadable += int(ts.isna().sum())
            if ts.notna().any():
                low = ts.min() if low is None else min(low, ts.min())
                high = ts.max() if high is None else max(high, ts.max())
            inside = ((ts >= first) & (ts < after)).to_numpy()
            if inside.any():
                yield batch.filter(pa.array(inside))
        key = (info.name, info.etag)
        if key not in self._spans and unreadable:
            log.warning("%s: %s: %d rows have no readable time in %r; they belong to no "
                        "window and were skipped (check time_unit)", self.name,
                        self.files.uri(info.name), unreadable, self.config.fields.relative_time)
        self._spans[key] = None if low is None or high is None else (low, high)

    @contextmanager
    def _storage_errors(self) -> Iterator[None]:
        try:
            yield
        except StorageError as exc:
            kind = TransientSourceError if exc.transient else PermanentSourceError
            raise kind(f"{self.name}: {exc}") from None

