"""Rollups (`sink.rollups`) stay equal to aggregates of the readings after every load.

Runs on whatever the test server is: plain PostgreSQL (rollup tables kept by the load) or
TimescaleDB (continuous aggregates refreshed by the load), so `make test` covers both.
"""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from pull_pipeline.sink.rollups import ORIGIN
from pull_pipeline.sink.timescale import TimescaleSink, Window

T0 = datetime(2024, 3, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


def window(hour: int) -> Window:
    start = T0 + hour * HOUR
    return Window(start.strftime("%Y-%m-%d-%H:00"), start, start + HOUR)


def readings(hour: int, offset: float = 0.0) -> pd.DataFrame:
    """Two sensors, a reading every 10 minutes of the hour, values shifted by `offset`."""
    start = T0 + hour * HOUR
    times = [start + timedelta(minutes=m) for m in range(0, 60, 10)]
    return pd.DataFrame({
        "sensor_tag": pd.array(["a"] * 6 + ["b"] * 6, dtype=pd.StringDtype("pyarrow")),
        "ts": pd.to_datetime(times * 2, utc=True),
        "sensor_value": [hour * 10 + i + offset for i in range(6)] + [-1.0 * i for i in range(6)],
    })


def load(sink: TimescaleSink, hour: int, offset: float = 0.0, keep: bool = False) -> None:
    with sink.load("plant", [window(hour)]) as one:
        one.stage(readings(hour, offset))
        if keep:
            one.keep_previous_rows()


def expected(dsn: str, table: str, width: timedelta) -> dict[tuple, tuple]:
    """count, min, max, avg, first, last per (sensor, bucket), computed in Python."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT sensor_tag, ts, sensor_value FROM {table} "
                            "WHERE source = 'plant' ORDER BY ts").fetchall()
    groups: dict[tuple, list[float]] = defaultdict(list)
    for tag, ts, value in rows:
        groups[(tag, ORIGIN + ((ts - ORIGIN) // width) * width)].append(value)
    return {key: (len(v), min(v), max(v), sum(v) / len(v), v[0], v[-1])
            for key, v in groups.items()}


def rollup(dsn: str, name: str) -> dict[tuple, tuple]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT sensor_tag, bucket, count, min, max, avg, first, last "
                            f"FROM {name} WHERE source = 'plant'").fetchall()
    return {(tag, bucket): tuple(rest) for tag, bucket, *rest in rows}


def assert_equal(got: dict[tuple, tuple], want: dict[tuple, tuple]) -> None:
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert all(math.isclose(a, b, rel_tol=1e-12) for a, b in zip(got[key], values,
                                                                        strict=True)), key


@pytest.fixture
def sink(pg_dsn: str, table_name: str) -> TimescaleSink:
    return TimescaleSink(dsn=pg_dsn, table=table_name, rollups=[timedelta(hours=1), timedelta(days=1)])


def test_rollups_equal_the_readings_after_loads_and_reruns(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    for hour in range(3):
        load(sink, hour)
    for width, label in ((HOUR, "1h"), (timedelta(days=1), "1d")):
        assert_equal(rollup(pg_dsn, f"{table_name}_rollup_{label}"),
                     expected(pg_dsn, table_name, width))
    before = rollup(pg_dsn, f"{table_name}_rollup_1d")

    load(sink, 1, offset=100.0)  # a rerun with changed values
    hourly = rollup(pg_dsn, f"{table_name}_rollup_1h")
    assert hourly[("a", T0 + HOUR)][1] == 110.0  # min of the rerun hour moved
    assert_equal(hourly, expected(pg_dsn, table_name, HOUR))
    daily = rollup(pg_dsn, f"{table_name}_rollup_1d")
    assert daily != before
    assert_equal(daily, expected(pg_dsn, table_name, timedelta(days=1)))


def test_a_window_that_keeps_its_rows_leaves_the_rollups_untouched(
    sink: TimescaleSink, pg_dsn: str, table_name: str
) -> None:
    load(sink, 0)
    before = rollup(pg_dsn, f"{table_name}_rollup_1h")
    load(sink, 0, offset=50.0, keep=True)  # as a window over max_reject_ratio does
    assert rollup(pg_dsn, f"{table_name}_rollup_1h") == before
    with sink.load("plant", [window(0)]):  # an empty answer keeps the rows too
        pass
    assert rollup(pg_dsn, f"{table_name}_rollup_1h") == before


def test_a_plain_table_becomes_a_hypertable_with_its_rows(
    pg_dsn: str, table_name: str, sink_has_timescale: bool
) -> None:
    if not sink_has_timescale:
        pytest.skip("needs TimescaleDB on the test server (the TimescaleDB pass of make test)")
    with psycopg.connect(pg_dsn) as conn:  # what the embedded plain PostgreSQL left behind
        conn.execute(
            f"CREATE TABLE {table_name} (source text NOT NULL, sensor_tag text NOT NULL,"
            " ts timestamptz NOT NULL, sensor_value double precision NOT NULL,"
            " ingested_at timestamptz NOT NULL DEFAULT now(),"
            " PRIMARY KEY (source, sensor_tag, ts))")
        conn.execute(f"INSERT INTO {table_name} (source, sensor_tag, ts, sensor_value) "
                     "SELECT 'old', 't', %s + g * interval '1 minute', g "
                     "FROM generate_series(0, 2999) AS g", (T0 - timedelta(days=3),))
    sink = TimescaleSink(dsn=pg_dsn, table=table_name, rollups=[timedelta(hours=1)])
    load(sink, 0)
    with psycopg.connect(pg_dsn) as conn:
        hypertable = conn.execute(
            "SELECT num_chunks FROM timescaledb_information.hypertables "
            "WHERE hypertable_name = %s", (table_name,)).fetchone()
        old = conn.execute(f"SELECT count(*), sum(sensor_value) FROM {table_name} "
                           "WHERE source = 'old'").fetchone()
        aggregated = conn.execute(f"SELECT sum(count) FROM {table_name}_rollup_1h "
                                  "WHERE source = 'old'").fetchone()
    assert hypertable is not None and hypertable[0] >= 3
    assert old == (3000, sum(range(3000)))
    assert aggregated == (3000,)  # the new continuous aggregate holds the migrated history
