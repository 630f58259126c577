"""The Timescale path: hypertable, chunk interval, compression and retention policies.

Runs against $PULL_PIPELINE_TIMESCALE_DSN (an admin DSN on a server with the extension
preloaded), else the test server; skips with the reason when TimescaleDB is absent.
`make test` runs the whole suite a second time with both DSNs on TimescaleDB, so every
sink behaviour is also tested on a hypertable; the last test here checks that it is.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pandas as pd
import psycopg
import pytest

from pull_pipeline.sink.timescale import TimescaleSink, Window
from pull_pipeline_tests.conftest import ADMIN_DSN, timescale_unavailable

TIMESCALE_ADMIN_DSN = os.environ.get("PULL_PIPELINE_TIMESCALE_DSN", ADMIN_DSN)


@pytest.fixture(scope="module")
def timescale_dsn() -> Iterator[str]:
    reason = timescale_unavailable(TIMESCALE_ADMIN_DSN)
    if reason:
        pytest.skip(f"{reason} (set PULL_PIPELINE_TIMESCALE_DSN to a TimescaleDB server)")
    name = f"pp_ts_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(TIMESCALE_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    yield TIMESCALE_ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(TIMESCALE_ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_hypertable_with_policies(timescale_dsn: str) -> None:
    sink = TimescaleSink(
        dsn=timescale_dsn, table="metrics.sensor_readings", chunk_interval=timedelta(hours=12),
        compress_after=timedelta(days=7), retention=timedelta(days=365),
    )
    # Inside the retention and compression horizons, so the policies leave these rows alone.
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    window = Window(start.strftime("%Y-%m-%d"), start, start + timedelta(days=1))
    batch = pd.DataFrame({
        "sensor_tag": ["a", "b"], "ts": pd.to_datetime([start, start], utc=True),
        "sensor_value": [1.0, 2.0]})
    for _ in range(2):  # a second run must find everything in place
        with sink.load("src", [window]) as load:
            load.stage(batch)
    with psycopg.connect(timescale_dsn) as conn:
        hypertable = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables "
            "WHERE hypertable_schema = 'metrics' AND hypertable_name = 'sensor_readings'"
        ).fetchone()
        interval = conn.execute(
            "SELECT time_interval FROM timescaledb_information.dimensions "
            "WHERE hypertable_name = 'sensor_readings' AND column_name = 'ts'").fetchone()
        jobs = {row[0] for row in conn.execute(
            "SELECT proc_name FROM timescaledb_information.jobs "
            "WHERE hypertable_name = 'sensor_readings'")}
        count = conn.execute("SELECT count(*) FROM metrics.sensor_readings").fetchone()
    assert hypertable == (True,)
    assert interval == (timedelta(hours=12),)
    assert {"policy_compression", "policy_retention"} <= jobs
    assert count == (2,)


def test_the_suite_sink_is_a_hypertable_exactly_when_the_server_has_timescaledb(
    pg_dsn: str, table_name: str, sink_has_timescale: bool
) -> None:
    """What the TimescaleDB pass of `make test` relies on: the sink tables of every other test
    (on `pg_dsn`) are hypertables there, and plain tables (with their (source, ts) index) elsewhere."""
    sink = TimescaleSink(dsn=pg_dsn, table=table_name)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    with sink.load("src", [Window("2024-01-01", start, start + timedelta(days=1))]) as load:
        load.stage(pd.DataFrame({"sensor_tag": ["a"], "ts": pd.to_datetime([start], utc=True),
                                 "sensor_value": [1.0]}))
    with psycopg.connect(pg_dsn) as conn:
        hypertable = sink_has_timescale and conn.execute(
            "SELECT 1 FROM timescaledb_information.hypertables WHERE hypertable_name = %s",
            (table_name,)).fetchone() is not None
        index = conn.execute("SELECT to_regclass(%s)", (f"{table_name}_source_ts_idx",)).fetchone()
    assert hypertable == sink_has_timescale
    assert (index != (None,)) == (not sink_has_timescale)
