"""Compressed history stays writable: window reruns into compressed TimescaleDB chunks.

A rerun deletes the window's rows and COPYs the new ones. In a compressed chunk the delete
decompresses every compressed batch (up to 1000 rows of one sensor) that the window cuts,
and TimescaleDB caps the rows one statement may decompress
(`timescaledb.max_tuples_decompressed_per_dml_transaction`, 100,000 by default): a day of
many sensors passes that easily. The sink lifts the cap for its load transactions only.

Runs against $PULL_PIPELINE_TIMESCALE_DSN, else the test server; skips with the reason
when TimescaleDB is absent (see test_timescale.py). TimescaleDB's background scheduler
does not run jobs on the PG 15.20 / TS 2.28.3 build of our machines, so recompression is
called explicitly with `CALL run_job(...)`, as the compression policy would do it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psycopg
import pytest

from pull_pipeline.sink.timescale import TimescaleSink, Window
from pull_pipeline_tests.test_timescale import timescale_dsn  # noqa: F401 - a fixture

DAY0 = datetime(2024, 3, 1, tzinfo=UTC)
DAY = timedelta(days=1)
SENSORS = 60
POINTS = 2_500  # a day per sensor: 150,000 rows a day, over the 100,000 default cap
STEP_US = 86_400_000_000 // POINTS  # 34.56 s: each sensor's 1000-row batches end at 09:36, 19:12
DEFAULT_CAP = 100_000


def at(hours: float) -> datetime:
    return DAY0 + timedelta(hours=hours)


WINDOWS = {
    # an hourly partition cutting one batch per sensor (09:36): 60 x 2 batches decompressed
    "hour_inside_a_chunk": (Window("2024-03-01-09:00", at(9), at(10)), True),
    # a daily partition: exactly one chunk
    "whole_daily_chunk": (Window("2024-03-01", DAY0, DAY0 + DAY), False),
    # a window over midnight, e.g. a daily partition in another time zone, or a ranged
    # backfill: it cuts batches in both chunks
    "across_two_chunks": (Window("2024-03-01T12:00/2024-03-02T12:00", at(12), at(36)), True),
}


def readings(start: datetime, end: datetime, bump: float = 0.0) -> pd.DataFrame:
    """The grid's rows with `start <= ts < end`: every sensor every 34.56 s from DAY0.

    Values are whole numbers plus `bump` (a multiple of 0.5), so every sum is exact."""
    first = -(-int((start - DAY0) / timedelta(microseconds=1)) // STEP_US)
    last = -(-int((end - DAY0) / timedelta(microseconds=1)) // STEP_US)
    points = np.arange(first, last, dtype=np.int64)
    offsets = np.tile(points * STEP_US, SENSORS)
    sensors = np.repeat(np.arange(SENSORS), len(points))
    return pd.DataFrame({
        "sensor_tag": np.repeat(np.array([f"s{i:02d}" for i in range(SENSORS)], dtype=object),
                                len(points)),
        "ts": pd.to_datetime(int(DAY0.timestamp() * 1_000_000) + offsets, unit="us", utc=True),
        "sensor_value": sensors * 1_000_000.0 + np.tile(points, SENSORS) + bump,
    })


def summary(frame: pd.DataFrame) -> list[tuple]:
    """Per sensor: rows, sum/min/max of the value, min/max/sum of the time (µs from DAY0)."""
    us = (frame["ts"] - pd.Timestamp(DAY0)).to_numpy().astype("timedelta64[us]").astype(np.int64)
    grouped = frame.assign(us=us).groupby("sensor_tag")
    values, times = grouped["sensor_value"], grouped["us"]
    return list(zip(
        grouped.size().index, grouped.size().astype(int), values.sum(), values.min(),
        values.max(), times.min().astype(int), times.max().astype(int), times.sum().astype(int),
        strict=True))


_US = "%s((extract(epoch FROM ts - %%s) * 1000000)::bigint)"  # µs from DAY0, exact


def table_summary(dsn: str, table: str) -> list[tuple]:
    """`summary` of the table's rows, computed by the server."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT sensor_tag, count(*), sum(sensor_value), min(sensor_value), "
            f"max(sensor_value), {_US % 'min'}, {_US % 'max'}, {_US % 'sum'} FROM {table} "
            "WHERE source = 'src' GROUP BY sensor_tag ORDER BY sensor_tag", (DAY0,) * 3,
        ).fetchall()
    return [(tag, n, s, lo, hi, int(a), int(b), int(c)) for tag, n, s, lo, hi, a, b, c in rows]


def replaced(frame: pd.DataFrame, window: Window, new: pd.DataFrame) -> pd.DataFrame:
    """What the table must hold after `window` was rerun with `new`."""
    outside = (frame["ts"] < pd.Timestamp(window.start)) | (frame["ts"] >= pd.Timestamp(window.end))
    return pd.concat([frame[outside], new], ignore_index=True)


def chunk_states(dsn: str, table: str) -> dict[str, list[str]]:
    """Each chunk's status flags by its start day, e.g. {"2024-03-01": ["COMPRESSED"]}."""
    with psycopg.connect(dsn) as conn:
        return {start.date().isoformat(): sorted(flags) for start, flags in conn.execute(
            "SELECT range_start, _timescaledb_functions.chunk_status_text("
            "format('%%I.%%I', chunk_schema, chunk_name)::regclass) "
            "FROM timescaledb_information.chunks WHERE hypertable_name = %s", (table,))}


def compression_job(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT job_id FROM timescaledb_information.jobs WHERE hypertable_name = %s "
            "AND proc_name = 'policy_compression'", (table,)).fetchone()
    assert row, f"no compression policy on {table}"
    job_id: int = row[0]
    return job_id


@pytest.fixture
def compressed(timescale_dsn: str) -> tuple[TimescaleSink, pd.DataFrame]:  # noqa: F811
    """Two days of 150,000 rows each, loaded by the sink and compressed (1-day chunks)."""
    table = f"readings_{uuid.uuid4().hex[:8]}"
    sink = TimescaleSink(dsn=timescale_dsn, table=table, chunk_interval=timedelta(days=1),
                         compress_after=timedelta(days=7))
    with sink.session():  # creates the hypertable and its compression policy
        pass
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        # Not left to the scheduler: where it works it could recompress between two asserts.
        conn.execute("SELECT alter_job(%s, scheduled => false)",
                     (compression_job(timescale_dsn, table),))
    days = [Window(d.date().isoformat(), d, d + DAY) for d in (DAY0, DAY0 + DAY)]
    for day in days:
        with sink.load("src", [day]) as load:
            load.stage(readings(day.start, day.end))
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        conn.execute(f"SELECT compress_chunk(c) FROM show_chunks('{table}') c")
    assert chunk_states(timescale_dsn, table) == {
        "2024-03-01": ["COMPRESSED"], "2024-03-02": ["COMPRESSED"]}
    return sink, readings(DAY0, DAY0 + 2 * DAY)


@pytest.mark.parametrize("case", list(WINDOWS))
def test_a_rerun_into_compressed_chunks_replaces_its_window(
    compressed: tuple[TimescaleSink, pd.DataFrame], timescale_dsn: str, case: str  # noqa: F811
) -> None:
    sink, expected = compressed
    table = sink.table
    window, over_cap = WINDOWS[case]
    assert table_summary(timescale_dsn, table) == summary(expected)
    if over_cap:  # the case the sink's setting is for: a bare DELETE hits the default cap
        with psycopg.connect(timescale_dsn) as conn, pytest.raises(
                psycopg.errors.ConfigurationLimitExceeded, match="decompression limit exceeded"):
            conn.execute(
                f"SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = {DEFAULT_CAP}")
            conn.execute(f"DELETE FROM {table} WHERE source = 'src' AND ts >= %s AND ts < %s",
                         (window.start, window.end))

    new = readings(window.start, window.end, bump=0.5)  # every value changes
    with sink.load("src", [window]) as load:
        load.stage(new.iloc[: len(new) // 2])
        load.stage(new.iloc[len(new) // 2:])
    expected_after = replaced(expected, window, new)
    assert load.result.previous == len(new) and load.result.loaded == len(new)
    assert len(expected_after) == len(expected)
    assert table_summary(timescale_dsn, table) == summary(expected_after)

    # Afterwards the touched chunks are partially compressed: the rewritten rows (and the
    # rest of each decompressed batch) sit uncompressed beside the compressed batches, and
    # untouched chunks stay as they were. The compression policy's job recompresses them.
    touched = {d.date().isoformat() for d in (window.start, window.end - timedelta(microseconds=1))}
    states = chunk_states(timescale_dsn, table)
    for day, flags in states.items():
        assert flags == (["COMPRESSED", "PARTIAL"] if day in touched else ["COMPRESSED"]), states
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        conn.execute("CALL run_job(%s)", (compression_job(timescale_dsn, table),))
    assert chunk_states(timescale_dsn, table) == {
        "2024-03-01": ["COMPRESSED"], "2024-03-02": ["COMPRESSED"]}
    assert table_summary(timescale_dsn, table) == summary(expected_after)

    # and the recompressed chunk takes the next rerun as well
    again = readings(window.start, window.end, bump=1.0)
    with sink.load("src", [window]) as load:
        load.stage(again)
    assert table_summary(timescale_dsn, table) == summary(replaced(expected, window, again))


def test_a_rerun_over_the_reject_ratio_leaves_the_compressed_chunk_as_it_was(
    compressed: tuple[TimescaleSink, pd.DataFrame], timescale_dsn: str  # noqa: F811
) -> None:
    sink, expected = compressed
    window, _ = WINDOWS["hour_inside_a_chunk"]
    with sink.load("src", [window]) as load:
        load.stage(readings(window.start, window.end, bump=0.5))
        load.quarantine(pd.DataFrame({"raw_row": ["{}"], "reason": ["test"]}), window)
        load.keep_previous_rows()
    assert load.result.loaded == 0 and load.result.rejected == 1
    assert table_summary(timescale_dsn, sink.table) == summary(expected)
    assert chunk_states(timescale_dsn, sink.table) == {
        "2024-03-01": ["COMPRESSED"], "2024-03-02": ["COMPRESSED"]}
