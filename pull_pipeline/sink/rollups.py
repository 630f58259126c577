"""Rollups: per-sensor aggregates per time bucket, for dashboards (`sink.rollups`).

Each rollup `<table>_rollup_<label>` (`sensor_readings_rollup_1h`) has one row per
(source, sensor_tag, bucket) with count, min, max, avg, first and last. Buckets start at
multiples of their width counted from 2000-01-03 00:00 UTC (TimescaleDB's `time_bucket`
origin, a Monday), so both implementations bucket alike:

- On TimescaleDB a rollup is a continuous aggregate. The load refreshes exactly the buckets
  that the windows it replaced touch, right after its transaction commits (a refresh
  cannot run inside a transaction), so a rerun or a restore never leaves a stale bucket.
- On plain PostgreSQL it is a table that the load itself keeps, inside its transaction:
  the touched buckets are deleted and recomputed from the readings.

A window that keeps its previous rows (reject ratio, empty answer) touches no rollup.
Rows that leave the readings (an archive drop, retention) stay in the rollups.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import psycopg
from psycopg import sql

ORIGIN = datetime(2000, 1, 3, tzinfo=UTC)
_LABELS = ((86400 * 7, "w"), (86400, "d"), (3600, "h"), (60, "min"), (1, "s"))


@dataclass(frozen=True)
class Rollup:
    """One rollup of the readings table, `width` wide per bucket."""

    width: timedelta

    @property
    def label(self) -> str:
        """`1h`, `15min`, `1d`: the largest unit that divides the width."""
        seconds = int(self.width.total_seconds())
        for unit, suffix in _LABELS:
            if seconds % unit == 0:
                return f"{seconds // unit}{suffix}"
        raise AssertionError("unreachable: every width is whole seconds")

    def name(self, table: str) -> str:
        return f"{table}_rollup_{self.label}"

    def span(self, start: datetime, end: datetime) -> tuple[datetime, datetime]:
        """The whole buckets covering `[start, end)`."""
        low = ORIGIN + ((start - ORIGIN) // self.width) * self.width
        high = ORIGIN + -((ORIGIN - end) // self.width) * self.width
        return low, high


def _aggregates(time_bucket: sql.Composable, first: str, last: str) -> sql.Composed:
    return sql.SQL(
        "SELECT source, sensor_tag, {} AS bucket, count(*) AS count, min(sensor_value) AS min,"
        " max(sensor_value) AS max, avg(sensor_value) AS avg, {} AS first, {} AS last"
    ).format(time_bucket, sql.SQL(first), sql.SQL(last))


def create(conn: psycopg.Connection, table: sql.Composable, rollup: sql.Composable,
           width: timedelta, timescale: bool) -> None:
    """Create one rollup if it does not exist (inside the schema's DDL transaction)."""
    interval = sql.Literal(width)
    if timescale:
        select = _aggregates(
            sql.SQL("time_bucket({}, ts)").format(interval),
            "first(sensor_value, ts)", "last(sensor_value, ts)")
        conn.execute(sql.SQL(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS {} WITH (timescaledb.continuous,"
            " timescaledb.materialized_only = true) AS {} FROM {}"
            " GROUP BY source, sensor_tag, bucket WITH NO DATA").format(rollup, select, table))
        return
    conn.execute(sql.SQL(
        "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, sensor_tag text NOT NULL,"
        " bucket timestamptz NOT NULL, count bigint NOT NULL, min double precision,"
        " max double precision, avg double precision, first double precision,"
        " last double precision, PRIMARY KEY (source, sensor_tag, bucket))").format(rollup))


def recompute(conn: psycopg.Connection, table: sql.Composable, rollup: sql.Composable,
              width: timedelta, source: str, start: datetime, end: datetime) -> None:
    """Plain PostgreSQL: rebuild the source's buckets in `[start, end)` from the readings."""
    select = _aggregates(
        sql.SQL("date_bin({}, ts, {})").format(sql.Literal(width), sql.Literal(ORIGIN)),
        "(array_agg(sensor_value ORDER BY ts))[1]",
        "(array_agg(sensor_value ORDER BY ts DESC))[1]")
    conn.execute(sql.SQL("DELETE FROM {} WHERE source = %s AND bucket >= %s AND bucket < %s"
                         ).format(rollup), (source, start, end))
    conn.execute(sql.SQL(
        "INSERT INTO {} {} FROM {} WHERE source = %s AND ts >= %s AND ts < %s"
        " GROUP BY source, sensor_tag, bucket").format(rollup, select, table),
        (source, start, end))


def refresh(conn: psycopg.Connection, rollup: str, start: datetime, end: datetime) -> None:
    """TimescaleDB: materialize the buckets in `[start, end)` again (outside a transaction)."""
    conn.execute("CALL refresh_continuous_aggregate(%s::regclass, %s, %s)",
                 (rollup, start, end))
