"""Gap checks: missing stretches per sensor against `expected_interval`, WARN unless blocking."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd

from pull_pipeline.defs.alerting import run_failure
from pull_pipeline.sink.gaps import find_gaps
from pull_pipeline.sink.timescale import TimescaleSink, Window
from pull_pipeline_tests.daemon_harness import Clock, Daemon
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
SECOND = "2024-01-01-01:00"


def readings_with_holes() -> list[dict[str, Any]]:
    """Two clean hours, except in the second: flow goes silent, pressure misses 01:10-01:20."""
    rows = sample_readings(duration=timedelta(hours=2))
    hole = (T0 + timedelta(hours=1, minutes=10)).timestamp(), (T0 + timedelta(hours=1,
                                                                             minutes=20)).timestamp()
    second = (T0 + timedelta(hours=1)).timestamp()
    return [
        r for r in rows
        if not (r["sensor_tag"] == "flow_sensor_01" and r["relative_time"] >= second)
        and not (r["sensor_tag"] == "pressure_sensor_01" and hole[0] <= r["relative_time"] < hole[1])
    ]


def project_for(tmp_path: Path, api: ReadingsApi, pg_dsn: str, table: str, blocking: bool):
    source = api.source_config(expected_interval="1min", gaps_blocking=blocking)
    return make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table},
                                   "sources": {"plant": source}})


def gap_evaluation(result: dg.ExecuteInProcessResult) -> Any:
    (evaluation,) = [e for e in result.get_asset_check_evaluations() if e.check_name == "gaps"]
    return evaluation


def test_gaps_are_listed_per_sensor_and_warn_by_default(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str
) -> None:
    readings_api.readings = readings_with_holes()
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, blocking=False)
    with dg.instance_for_test() as instance:
        job = Daemon(project, instance, Clock(T0)).defs.resolve_job_def("pull_plant")
        clean = job.execute_in_process(instance=instance, partition_key="2024-01-01-00:00")
        holes = job.execute_in_process(instance=instance, partition_key=SECOND)
    assert clean.success and gap_evaluation(clean).passed
    assert holes.success  # a WARN check does not stop the run
    evaluation = gap_evaluation(holes)
    assert not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.partition == SECOND
    metadata = {k: v.value for k, v in evaluation.metadata.items()}
    assert metadata["missing_stretches"] == 2 and metadata["sensors_with_gaps"] == 2
    assert metadata["sensors_expected"] == 3
    assert set(metadata["gaps"]) == {"flow_sensor_01", "pressure_sensor_01"}
    (pressure,) = metadata["gaps"]["pressure_sensor_01"]
    assert pressure.startswith("2024-01-01T01:09:00+00:00 → 2024-01-01T01:20:00+00:00")
    assert "flow_sensor_01" in metadata["gaps_by_sensor"]


def test_blocking_gap_check_fails_the_run_as_a_permanent_failure(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str
) -> None:
    readings_api.readings = readings_with_holes()
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, blocking=True)
    with dg.instance_for_test() as instance:
        job = Daemon(project, instance, Clock(T0)).defs.resolve_job_def("pull_plant")
        job.execute_in_process(instance=instance, partition_key="2024-01-01-00:00")
        result = job.execute_in_process(instance=instance, partition_key=SECOND,
                                        raise_on_error=False)
    assert not result.success
    assert gap_evaluation(result).severity == dg.AssetCheckSeverity.ERROR
    failure = run_failure([e for e in result.all_events if e.is_step_failure])
    assert not failure.transient  # recovery holds it for a person instead of looping
    assert "gaps" in failure.error


def test_find_gaps_at_the_window_edges(pg_dsn: str, table_name: str) -> None:
    sink = TimescaleSink(dsn=pg_dsn, table=table_name)
    window = Window("w", T0 + timedelta(hours=1), T0 + timedelta(hours=2))
    previous = Window("p", T0, T0 + timedelta(hours=1))

    def load(w: Window, minutes: range, tag: str = "a") -> None:
        with sink.load("edges", [w]) as batch:
            batch.stage(pd.DataFrame({
                "sensor_tag": [tag] * len(minutes),
                "ts": pd.to_datetime([w.start + timedelta(minutes=m) for m in minutes]),
                "sensor_value": [1.0] * len(minutes)}))

    load(previous, range(60))
    load(window, range(5, 50))  # starts 5 minutes late, stops 10 minutes early
    report = find_gaps(sink, "edges", window, timedelta(minutes=1))
    assert report.sensors == 1 and report.total_gaps == 2
    assert [(g.after, g.before) for g in report.gaps] == [
        (window.start, window.start + timedelta(minutes=5)),
        (window.start + timedelta(minutes=49), window.end)]
    assert find_gaps(sink, "edges", previous, timedelta(minutes=1)).total_gaps == 0
