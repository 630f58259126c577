"""Drop archived windows from the sink, only while they still equal their verified archive.

One transaction holds the readings table in SHARE mode (loads wait, reads go on), checks
each window's digest against its archive again, and removes the windows that match:
TimescaleDB chunks lying wholly inside a run of dropped windows and holding no other
source's rows go with `drop_chunks` (cheap, no dead tuples); everything else with DELETE.
A window that changed since its export is left in place and reported.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import psycopg
from psycopg import sql

from pull_pipeline.archive.checksum import Digest, sink_digest
from pull_pipeline.sink.timescale import TableNames
from pull_pipeline.windows import Window


@dataclass
class DropResult:
    windows: list[str] = field(default_factory=list)
    rows: int = 0
    chunks: int = 0
    changed: list[str] = field(default_factory=list)


def drop_windows(
    conn: psycopg.Connection, names: TableNames, source: str,
    archived: Sequence[tuple[Window, Digest]],
) -> DropResult:
    """Remove `source`'s rows of each window whose sink digest still equals its archive's."""
    result = DropResult()
    with conn.transaction():
        conn.execute(sql.SQL("LOCK TABLE {} IN SHARE MODE").format(names.table))
        unchanged = []
        for window, digest in archived:
            if sink_digest(conn, names, source, window.start, window.end) == digest:
                unchanged.append(window)
                result.windows.append(window.key)
                result.rows += digest.rows
            else:
                result.changed.append(window.key)
        if _is_hypertable(conn, names):
            for start, end in _runs(unchanged):
                result.chunks += _drop_whole_chunks(conn, names, source, start, end)
        for window in unchanged:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE source = %s AND ts >= %s AND ts < %s").format(
                    names.table), (source, window.start, window.end))
    return result


def _runs(windows: Sequence[Window]) -> list[tuple[datetime, datetime]]:
    """Contiguous stretches of windows, as (start, end)."""
    runs: list[tuple[datetime, datetime]] = []
    for window in sorted(windows, key=lambda w: w.start):
        if runs and runs[-1][1] == window.start:
            runs[-1] = (runs[-1][0], window.end)
        else:
            runs.append((window.start, window.end))
    return runs


def _is_hypertable(conn: psycopg.Connection, names: TableNames) -> bool:
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return False
    return conn.execute(
        "SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = coalesce(%s, current_schema()) AND hypertable_name = %s",
        (names.schema, names.name)).fetchone() is not None


def _drop_whole_chunks(
    conn: psycopg.Connection, names: TableNames, source: str, start: datetime, end: datetime
) -> int:
    """drop_chunks for each chunk inside [start, end) that holds only `source`'s rows."""
    chunks = conn.execute(
        "SELECT range_start, range_end FROM timescaledb_information.chunks"
        " WHERE hypertable_schema = coalesce(%s, current_schema()) AND hypertable_name = %s"
        " AND range_start >= %s AND range_end <= %s ORDER BY range_start",
        (names.schema, names.name, start, end)).fetchall()
    dropped = 0
    for low, high in chunks:
        others = conn.execute(
            sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE ts >= %s AND ts < %s"
                    " AND source <> %s)").format(names.table), (low, high, source)).fetchone()
        if others and not others[0]:
            conn.execute("SELECT drop_chunks(%s::regclass, older_than => %s::timestamptz,"
                         " newer_than => %s::timestamptz)",
                         (names.regclass, high, low))
            dropped += 1
    return dropped
