"""Export sink windows to the archive, verified, and optionally drop them from the sink.

Per window, in a REPEATABLE READ snapshot: the sink's digest is computed, then

- an archive that matches it is left alone (exporting twice is a no-op);
- an archive of a window that is now empty in the sink (dropped) is never overwritten;
- an archive that differs from non-empty sink rows is a conflict: reported, not touched
  (late rows arrived after the export; restore the window or delete the object on purpose);
- otherwise the window is written to Parquet from the same snapshot, published (uploaded,
  read back, verified against the digest, moved to its final key) and becomes droppable.

A killed export, run again, skips what it had finished and redoes the rest: nothing is
duplicated and nothing is dropped before its archive was verified.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql

from pull_pipeline.archive.checksum import Digest, file_digest, sink_digest
from pull_pipeline.archive.drop import drop_windows
from pull_pipeline.archive.store import ArchiveError, ArchiveStore, keys_listed, window_errors
from pull_pipeline.sink.timescale import TableNames, TimescaleSink
from pull_pipeline.storage import temp_path
from pull_pipeline.windows import Window

log = logging.getLogger("pull_pipeline.archive")
FETCH_ROWS = 100_000
ARCHIVE_SCHEMA = pa.schema([
    pa.field("source", pa.string()),
    pa.field("sensor_tag", pa.string()),
    pa.field("ts", pa.timestamp("us", tz="UTC")),
    pa.field("sensor_value", pa.float64()),
    pa.field("ingested_at", pa.timestamp("us", tz="UTC")),
])
# Outcomes of one window's export: the names of the report's lists.
EXPORTED, ARCHIVED, DROPPED, CONFLICT = "exported", "already_archived", "already_dropped", "conflict"
_SELECT = (
    "SELECT source, sensor_tag, (extract(epoch FROM ts) * 1000000)::bigint, sensor_value,"
    " (extract(epoch FROM ingested_at) * 1000000)::bigint"
    " FROM {} WHERE source = %s AND ts >= %s AND ts < %s ORDER BY sensor_tag, ts"
)


@dataclass(frozen=True)
class ExportPolicy:
    export_after: timedelta
    drop_after_export: bool = False


@dataclass
class ExportReport:
    """What an export run did, window by window, for logs and materialization metadata."""

    windows: int = 0
    exported: list[str] = field(default_factory=list)
    already_archived: list[str] = field(default_factory=list)
    already_dropped: list[str] = field(default_factory=list)
    rows_exported: int = 0
    dropped_windows: list[str] = field(default_factory=list)
    rows_dropped: int = 0
    chunks_dropped: int = 0
    too_recent: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.exported) + len(self.already_archived) + len(self.already_dropped)


def export_windows(
    name: str,
    windows: Sequence[Window],
    sink: TimescaleSink,
    store: ArchiveStore,
    policy: ExportPolicy,
    run_id: str = "",
    now: datetime | None = None,
    progress: Callable[[str], None] = log.info,
) -> ExportReport:
    """Export each window older than `policy.export_after`; raise `ArchiveError` at the end
    if any window was too recent or conflicted (after finishing all the others)."""
    cutoff = (now or datetime.now(UTC)) - policy.export_after
    report = ExportReport(windows=len(windows))
    droppable: list[tuple[Window, Digest]] = []
    with sink.connection() as conn:
        for window in windows:
            if window.end > cutoff:
                report.too_recent.append(window.key)
                continue
            with window_errors(name, window.key):
                outcome, digest, archived = _export_one(conn, sink.names, name, window, store,
                                                        run_id)
            if outcome == CONFLICT:
                report.conflicts.append(f"{window.key} (archive: {archived}; sink: {digest})")
            else:
                getattr(report, outcome).append(window.key)
            if outcome == EXPORTED:
                report.rows_exported += digest.rows
            if outcome in (EXPORTED, ARCHIVED) and digest.rows:
                droppable.append((window, digest))
            progress(f"{name}: {window.key}: {outcome.replace('_', ' ')} ({digest}); "
                     f"{report.done} of {report.windows} windows done")
        if policy.drop_after_export and droppable:
            dropped = drop_windows(conn, sink.names, name, droppable)
            report.dropped_windows, report.rows_dropped = dropped.windows, dropped.rows
            report.chunks_dropped = dropped.chunks
            report.conflicts.extend(f"{key} (changed since it was archived; not dropped)"
                                    for key in dropped.changed)
            progress(f"{name}: dropped {dropped.rows} rows of {len(dropped.windows)} windows "
                     f"from the sink ({dropped.chunks} whole chunks)")
    _raise_problems(name, report, policy, cutoff)
    return report


def _export_one(
    conn: psycopg.Connection, names: TableNames, name: str, window: Window,
    store: ArchiveStore, run_id: str,
) -> tuple[str, Digest, Digest | None]:
    """Export one window unless it is archived already; returns what happened."""
    archived = store.digest(name, window.key)
    with temp_path(".parquet") as local:
        with conn.transaction():
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            digest = sink_digest(conn, names, name, window.start, window.end)
            if archived is not None:
                if archived == digest:
                    store.discard_incomplete(name, window.key)
                    return ARCHIVED, digest, archived
                if digest.rows == 0:
                    return DROPPED, digest, archived
                if archived.rows:
                    return CONFLICT, digest, archived
            metadata = {
                "rows": str(digest.rows), "checksum": digest.checksum, "run-id": run_id,
                "source": name, "partition": window.key,
                "window-start": window.start.isoformat(), "window-end": window.end.isoformat(),
            }
            _write_window(conn, names, name, window, local, metadata)

        def verify(path: Path) -> None:
            found = file_digest(path)
            if found != digest:
                raise ArchiveError(
                    f"{name}: window {window.key}: the uploaded archive holds {found}, the sink "
                    f"{digest}; it was not published and nothing was dropped")

        store.publish(name, window.key, local, metadata, verify)
    return EXPORTED, digest, archived


def _write_window(
    conn: psycopg.Connection, names: TableNames, name: str, window: Window, path: Path,
    metadata: dict[str, str],
) -> None:
    """Stream the window's rows (server-side cursor) into a Parquet file, one row group per
    fetch, with the digest and window in the footer."""
    with pq.ParquetWriter(path, ARCHIVE_SCHEMA, compression="zstd") as writer, conn.cursor(
        name="pp_archive_export"
    ) as cursor:
        cursor.execute(sql.SQL(_SELECT).format(names.table), (name, window.start, window.end))
        while rows := cursor.fetchmany(FETCH_ROWS):
            source, tag, ts, value, ingested = zip(*rows, strict=True)
            writer.write_table(pa.Table.from_arrays([
                pa.array(source, pa.string()), pa.array(tag, pa.string()),
                pa.array(ts, pa.int64()).cast(ARCHIVE_SCHEMA.field("ts").type),
                pa.array(value, pa.float64()),
                pa.array(ingested, pa.int64()).cast(ARCHIVE_SCHEMA.field("ingested_at").type),
            ], schema=ARCHIVE_SCHEMA))
        writer.add_key_value_metadata(metadata)


def _raise_problems(name: str, report: ExportReport, policy: ExportPolicy, cutoff: datetime
                    ) -> None:
    problems = []
    if report.too_recent:
        problems.append(
            f"{len(report.too_recent)} windows are newer than export_after "
            f"({policy.export_after}); they were not exported (only windows ending before "
            f"{cutoff.isoformat()} may be): {keys_listed(report.too_recent)}")
    if report.conflicts:
        problems.append(
            f"{len(report.conflicts)} windows differ from their existing archive, which was "
            "left as it is (restore the window first, or delete its archive object on "
            f"purpose to export it again): {keys_listed(report.conflicts)}")
    if problems:
        raise ArchiveError(f"{name}: {report.done} of {report.windows} windows archived; "
                           + "; ".join(problems))
