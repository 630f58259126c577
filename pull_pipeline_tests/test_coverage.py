"""The coverage grid: rendering alone, the sink's count, and on a real materialization."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from pull_pipeline.coverage import EMPTY, FULL, MAX_SENSORS_SHOWN, PARTIAL, Coverage, render
from pull_pipeline.sink.coverage import count_coverage
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window
from pull_pipeline_tests.daemon_harness import Clock, Daemon
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import ReadingsApi
from pull_pipeline_tests.test_gaps import SECOND, readings_with_holes

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = Window("2024-01-01-00:00", T0, T0 + timedelta(hours=1))


def test_worst_sensors_first_and_a_count_of_the_rest() -> None:
    counts = {f"ok_{i:02d}": [60] * 24 for i in range(25)}
    counts["quiet"] = [0] * 24
    counts["holey"] = [60] * 10 + [30, 0, 0] + [60] * 11
    grid = render(Coverage(T0, T0 + timedelta(days=1), 24, counts), timedelta(minutes=1))
    lines = grid.markdown.splitlines()
    assert lines[0].startswith("27 sensor(s), 25 full, 2 with holes; 24 slots of 1 h")
    assert f"worst {MAX_SENSORS_SHOWN} shown, 7 more" in lines[0]
    assert lines[3] == "quiet  " + EMPTY * 24
    assert lines[4] == "holey  " + FULL * 10 + PARTIAL + EMPTY * 2 + FULL * 11
    assert lines[5] == "ok_00  " + FULL * 24
    assert (grid.sensors, grid.full, grid.with_holes) == (27, 25, 2)


def test_without_expected_interval_each_sensor_is_judged_by_its_own_best_slot() -> None:
    grid = render(Coverage(T0, T0 + timedelta(hours=1), 4, {"slow": [1, 1, 0, 1],
                                                             "fast": [600, 580, 200, 600]}))
    assert "slow  " + FULL * 2 + EMPTY + FULL in grid.markdown
    assert "fast  " + FULL * 2 + PARTIAL + FULL in grid.markdown


@pytest.fixture
def sink(pg_dsn: str, table_name: str) -> TimescaleSink:
    return TimescaleSink(dsn=pg_dsn, table=table_name)


def test_the_sink_counts_per_sensor_and_slot_and_lists_sensors_gone_silent(
    sink: TimescaleSink,
) -> None:
    with sink.connection() as conn:  # a sensor that reports only in the hour before
        conn.execute(
            f"INSERT INTO {sink.table} (source, sensor_tag, ts, sensor_value) "
            "SELECT 'plant', tag, %s::timestamptz + n * interval '1 minute', n "
            "FROM generate_series(-60, 59) AS n, unnest(array['a', 'b']) AS tag "
            "WHERE tag = 'a' OR n < 0", (T0,))
        conn.execute(f"INSERT INTO {sink.table} (source, sensor_tag, ts, sensor_value) "
                     "VALUES ('other', 'a', %s, 1)", (T0,))
        conn.commit()
    coverage = count_coverage(sink, "plant", HOUR, slots=4)
    assert coverage.counts == {"a": [15, 15, 15, 15], "b": [0, 0, 0, 0]}


def test_each_readings_materialization_shows_its_grid(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
) -> None:
    readings_api.readings = readings_with_holes()  # flow silent in 01:00, pressure 01:10-01:20
    source = readings_api.source_config(expected_interval="1min")
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": source}})
    with dg.instance_for_test() as instance:
        job = Daemon(project, instance, Clock(T0)).defs.resolve_job_def("pull_plant")
        for key in ("2024-01-01-00:00", SECOND):
            assert job.execute_in_process(instance=instance, partition_key=key).success
        event = instance.get_latest_materialization_event(dg.AssetKey(["plant", "readings"]))
    assert event is not None and event.asset_materialization is not None
    metadata = event.asset_materialization.metadata
    coverage = metadata["coverage"]
    assert isinstance(coverage, dg.MarkdownMetadataValue)
    grid = coverage.value
    assert "flow_sensor_01".ljust(21) + "  " + EMPTY * 24 in grid  # silent all hour
    assert "pressure_sensor_01     " + FULL * 4 + EMPTY * 4 + FULL * 16 in grid
    assert grid.startswith("3 sensor(s), 1 full, 2 with holes; 24 slots of 150 s")
    assert metadata["sensors_with_holes"].value == 2
