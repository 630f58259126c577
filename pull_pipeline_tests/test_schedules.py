"""Schedules: one per source, ticking after `lag`, newest window plus `lookback`, stable keys."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from pull_pipeline.definitions import build_definitions
from pull_pipeline.errors import ConfigError
from pull_pipeline.scheduling import complete_windows, newest_windows, shift_cron
from pull_pipeline.windows import Window
from pull_pipeline_tests.daemon_harness import Clock, Daemon, expected_rows, sink_rows
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import sample_readings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)


class Hours:
    """A plain `scheduling.Calendar`: hourly windows from T0, keyed by their start hour."""

    start = T0

    def keys_between(self, since: datetime, until: datetime) -> list[str]:
        first = T0 + (since - T0) // HOUR * HOUR
        return [f"{first + n * HOUR:%H}" for n in range(-(-(until - first) // HOUR))]

    def end_of(self, key: str) -> datetime:
        return T0 + (int(key) + 1) * HOUR

    def window_before(self, moment: datetime) -> Window | None:
        end = T0 + (moment - T0) // HOUR * HOUR
        return Window(f"{end - HOUR:%H}", end - HOUR, end)


def test_due_windows_are_decided_on_plain_datetimes() -> None:
    assert complete_windows(Hours(), T0 - 5 * HOUR, T0 + 3 * HOUR + HOUR / 2) == ["00", "01", "02"]
    assert complete_windows(Hours(), T0 + 3 * HOUR, T0 + 3 * HOUR) == []
    assert newest_windows(Hours(), T0 + 3 * HOUR + HOUR / 2, 2) == ["02", "01"]
    assert newest_windows(Hours(), T0 + HOUR, 5) == ["00"]  # nothing before the first window


def project_for(tmp_path: Path, api: Any, pg_dsn: str, table: str, **source: Any):
    config = api.source_config(partitions={"cadence": "hourly", "start": "2024-01-01T00:00:00Z",
                                           "lag": "5min"}, **source)
    return make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table},
                                   "sources": {"plant": config}})


@pytest.mark.parametrize(
    ("cron", "lag", "shifted"),
    [
        ("0 * * * *", timedelta(minutes=5), "5 * * * *"),
        ("*/15 * * * *", timedelta(minutes=5), "5,20,35,50 * * * *"),
        ("0 0 * * *", timedelta(hours=2, minutes=30), "30 2 * * *"),
        ("0 */6 * * *", timedelta(hours=7), "0 1,7,13,19 * * *"),
        ("0 0 * * 1", timedelta(hours=25), "0 1 * * 2"),
        ("0 0 1 * *", timedelta(days=1), "0 0 2 * *"),
        ("0 * * * *", timedelta(seconds=20), "1 * * * *"),  # rounded up: never early
        ("0 * * * *", timedelta(0), "0 * * * *"),
    ],
)
def test_cron_shifted_by_lag(cron: str, lag: timedelta, shifted: str) -> None:
    assert shift_cron(cron, lag) == shifted


def test_unshiftable_lag_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="cannot be added to the cadence"):
        shift_cron("0 0 28 * *", timedelta(days=2))


def test_operations_of_every_source_are_in_the_definitions(
    tmp_path: Path, readings_api: Any, pg_dsn: str, table_name: str
) -> None:
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {
            "plant": readings_api.source_config(expected_interval="1min",
                                                freshness={"fail_after": "2h"}),
            "quiet": readings_api.source_config(paused=True),
        },
    })
    ops = build_definitions(project)
    schedules = {s.name: s for s in ops.schedules or []}
    sensors = {s.name: s for s in ops.sensors or []}
    assert sorted(job.name for job in ops.jobs or [] if job.name.startswith("pull_")) == [
        "pull_plant", "pull_quiet"]
    assert sorted(schedules) == ["pull_plant_schedule", "pull_quiet_schedule"]
    assert sorted(sensors) == ["alert_on_run_failure", "apply_pool_limits", "freshness_plant",
                               "recover_plant", "recover_quiet", "sink_health"]
    assert schedules["pull_plant_schedule"].default_status == dg.DefaultScheduleStatus.RUNNING
    assert schedules["pull_quiet_schedule"].default_status == dg.DefaultScheduleStatus.STOPPED
    assert sensors["recover_plant"].default_status == dg.DefaultSensorStatus.RUNNING
    assert sensors["recover_quiet"].default_status == dg.DefaultSensorStatus.STOPPED
    assert sensors["alert_on_run_failure"].default_status == dg.DefaultSensorStatus.RUNNING

    repo = build_definitions(project).get_repository_def()
    assert {"pull_plant", "pull_quiet"} <= {job.name for job in repo.get_all_jobs()}
    assert set(schedules) <= {s.name for s in repo.schedule_defs}
    assert set(sensors) <= {s.name for s in repo.sensor_defs}
    checks = {f"{k.asset_key.to_user_string()}:{k.name}" for k in repo.asset_graph.asset_check_keys}
    assert {"plant/readings:valid_rows", "plant/readings:gaps", "plant/readings:freshness",
            "quiet/readings:valid_rows"} <= checks
    assert "quiet/readings:gaps" not in checks  # no expected_interval, no gap check
    job = repo.get_job("pull_plant")
    assert job.partitions_def is not None
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {
        "plant/raw", "plant/readings"}
    assert {k.name for k in job.asset_layer.asset_graph.asset_check_keys} == {
        "valid_rows", "gaps", "has_rows"}


def test_tick_requests_newest_window_and_lookback_with_stable_run_keys(
    tmp_path: Path, readings_api: Any, pg_dsn: str, table_name: str
) -> None:
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, lookback=2)
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, Clock(T0))
        schedule = ops.defs.resolve_schedule_def("pull_plant_schedule")
        assert schedule.cron_schedule == "5 * * * *"
        tick = datetime(2024, 1, 1, 5, 5, tzinfo=UTC)
        first = ops.schedule_tick("plant", tick)
        again = ops.schedule_tick("plant", tick)
        later = ops.schedule_tick("plant", tick + timedelta(hours=1))
    assert [r.partition_key for r in first] == [
        "2024-01-01-04:00", "2024-01-01-03:00", "2024-01-01-02:00"]
    assert [r.run_key for r in first] == [r.run_key for r in again]  # evaluated twice: same keys
    assert len({r.run_key for r in first}) == 3
    assert [r.partition_key for r in later][1:] == ["2024-01-01-04:00", "2024-01-01-03:00"]
    assert not {r.run_key for r in later} & {r.run_key for r in first}  # re-pulls do launch
    assert first[0].tags["pull_pipeline/source"] == "plant"
    assert first[0].tags["dagster/max_retries"] == "2"
    assert first[0].tags["dagster/retry_on_asset_or_op_failure"] == "false"


def test_first_ticks_request_only_windows_that_exist(
    tmp_path: Path, readings_api: Any, pg_dsn: str, table_name: str
) -> None:
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, lookback=3)
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, Clock(T0))
        assert [r.partition_key for r in ops.schedule_tick("plant", T0 + timedelta(minutes=5))] \
            == []
        keys = [r.partition_key for r in ops.schedule_tick("plant", T0 + timedelta(hours=2, minutes=5))]
    assert keys == ["2024-01-01-01:00", "2024-01-01-00:00"]


def test_paused_source_schedule_skips_even_when_started(
    tmp_path: Path, readings_api: Any, pg_dsn: str, table_name: str
) -> None:
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, paused=True)
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, Clock(T0))
        schedule = ops.defs.resolve_schedule_def("pull_plant_schedule")
        data = schedule.evaluate_tick(dg.build_schedule_context(
            instance=instance, scheduled_execution_time=T0 + timedelta(hours=3, minutes=5),
            repository_def=ops.defs.get_repository_def()))
    assert schedule.default_status == dg.DefaultScheduleStatus.STOPPED
    assert not data.run_requests and "paused" in (data.skip_message or "")


def test_late_rows_are_in_the_sink_after_the_next_tick_with_lookback(
    tmp_path: Path, readings_api: Any, pg_dsn: str, table_name: str
) -> None:
    readings_api.readings = sample_readings(duration=timedelta(hours=2))
    on_time = [r for r in readings_api.readings if r["relative_time"] % 600 != 0]
    late = [r for r in readings_api.readings if r["relative_time"] % 600 == 0]
    readings_api.readings = list(on_time)
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, lookback=2)
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, Clock(T0))
        first = ops.schedule_tick("plant", datetime(2024, 1, 1, 1, 5, tzinfo=UTC))
        assert ops.execute_all(first, "plant") == [True]
        assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(
            [r for r in on_time if r["relative_time"] < T0.timestamp() + 3600])
        readings_api.readings = on_time + late  # the source publishes late rows for 00:00
        second = ops.schedule_tick("plant", datetime(2024, 1, 1, 2, 5, tzinfo=UTC))
        assert [r.partition_key for r in second] == ["2024-01-01-01:00", "2024-01-01-00:00"]
        assert ops.execute_all(second, "plant") == [True, True]
    assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(on_time + late)
