"""Windows older than `sink.retention` are neither pulled nor loaded: the retention policy
would drop them again right after. The step succeeds and names what it skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg

from pull_pipeline.windows import Window, beyond_retention
from pull_pipeline_tests import fake_sources
from pull_pipeline_tests.helpers import (
    failure_text,
    make_project,
    materialization_metadata,
    run_source,
)

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
DAY0 = NOW.replace(hour=0) - timedelta(days=3)  # three days ago, midnight UTC


def test_windows_that_end_before_the_horizon_are_beyond_retention() -> None:
    day = timedelta(days=1)
    windows = [Window(str(d), DAY0 + d * day, DAY0 + (d + 1) * day) for d in range(3)]
    assert beyond_retention(windows, None, NOW) == []
    horizon_inside_day_1 = NOW - (DAY0 + day + timedelta(hours=1))
    assert beyond_retention(windows, horizon_inside_day_1, NOW) == windows[:1]


def test_a_range_across_the_retention_horizon_loads_only_what_the_sink_keeps(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    fake_sources.reset(fake_sources.hourly_rows(DAY0, hours=6))
    # The horizon (now - retention) falls at 03:30 three days ago, measured from the clock
    # now, not from when the module was imported: the half hour either side absorbs the time
    # the test takes, and a clock passing the hour between import and run moves nothing.
    horizon = DAY0 + timedelta(hours=3, minutes=30)
    retention = int((datetime.now(UTC) - horizon).total_seconds())
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name, "retention": f"{retention}s"},
        "sources": {"plant": {
            "kind": "python", "function": "pull_pipeline_tests.fake_sources:fetch",
            "partitions": {"cadence": "hourly", "start": f"{DAY0:%Y-%m-%dT%H:%M:%SZ}"}}},
    })
    first, last = f"{DAY0:%Y-%m-%d}-00:00", f"{DAY0:%Y-%m-%d}-05:00"
    result = run_source(project, "plant", tags={
        "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last})
    assert result.success, failure_text(result)
    # hours 00-02 end before now - retention (03:30 three days ago): skipped
    assert [call[0].hour for call in fake_sources.CALLS] == [3, 4, 5]
    with psycopg.connect(pg_dsn) as conn:
        hours = conn.execute(
            f"SELECT DISTINCT extract(hour FROM ts AT TIME ZONE 'UTC')::int FROM {table_name} "
            "ORDER BY 1").fetchall()
    assert [h for (h,) in hours] == [3, 4, 5]
    metadata = materialization_metadata(result, "plant")
    assert metadata["windows_beyond_retention"] == 3
    assert f"{DAY0:%Y-%m-%d}-00:00" in metadata["beyond_retention"]

    fake_sources.CALLS.clear()
    old = run_source(project, "plant", first)  # a rerun of an expired window does nothing
    assert old.success, failure_text(old)
    assert fake_sources.CALLS == []
    assert materialization_metadata(old, "plant")["windows_beyond_retention"] == 1
