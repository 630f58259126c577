"""Missing stretches per sensor in one window of the sink, found by SQL.

A sensor is expected in a window if it has a reading in the window or in the window of the
same length just before it (so a sensor that went silent for a whole window is caught).
The window's bounds count as readings: a stretch from the start to a sensor's first reading,
between two readings, or from its last reading to the end is a gap when it is longer than
`TOLERANCE` times the expected interval (one missing reading is caught, jitter is not).
The work stays in the database: nothing proportional to the window's rows is fetched.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg
from psycopg import sql

from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window

TOLERANCE = 1.5
MAX_REPORTED = 500


@dataclass(frozen=True)
class Gap:
    """No reading of `sensor_tag` strictly between `after` and `before`."""

    sensor_tag: str
    after: datetime
    before: datetime

    @property
    def length(self) -> timedelta:
        return self.before - self.after


@dataclass(frozen=True)
class GapReport:
    sensors: int
    gaps: list[Gap]
    total_gaps: int


_QUERY = """
WITH expected AS (
    SELECT DISTINCT sensor_tag FROM {table}
    WHERE source = %(source)s AND ts >= %(before)s AND ts < %(end)s
), points AS (
    SELECT sensor_tag, ts FROM {table}
    WHERE source = %(source)s AND ts >= %(start)s AND ts < %(end)s
    UNION ALL SELECT sensor_tag, %(start)s FROM expected
    UNION ALL SELECT sensor_tag, %(end)s FROM expected
), spans AS (
    SELECT sensor_tag, lag(ts) OVER (PARTITION BY sensor_tag ORDER BY ts) AS after, ts AS before
    FROM points
), gaps AS (
    SELECT sensor_tag, after, before FROM spans WHERE before - after > %(threshold)s
)
SELECT (SELECT count(*) FROM expected), (SELECT count(*) FROM gaps), sensor_tag, after, before
FROM (SELECT 1) AS one LEFT JOIN LATERAL (
    SELECT * FROM gaps ORDER BY sensor_tag, after LIMIT %(limit)s
) AS shown ON TRUE
"""


def find_gaps(
    sink: TimescaleSink, source: str, window: Window, interval: timedelta,
    conn: psycopg.Connection | None = None,
) -> GapReport:
    """Missing stretches per sensor in `window` of `source` (at most `MAX_REPORTED` listed).

    Pass `conn` to check many windows over one connection (a ranged run's check)."""
    if conn is None:
        with sink.connection() as opened:
            return find_gaps(sink, source, window, interval, opened)
    params = {
        "source": source,
        "start": window.start,
        "end": window.end,
        "before": window.start - (window.end - window.start),
        "threshold": interval * TOLERANCE,
        "limit": MAX_REPORTED,
    }
    rows = conn.execute(sql.SQL(_QUERY).format(table=sink.names.table), params).fetchall()
    sensors, total = (rows[0][0], rows[0][1]) if rows else (0, 0)
    gaps = [Gap(tag, after, before) for _, _, tag, after, before in rows if tag is not None]
    return GapReport(sensors=sensors, gaps=gaps, total_gaps=total)
