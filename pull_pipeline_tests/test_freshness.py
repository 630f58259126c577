"""Freshness: judged on the newest due window, so an old backfill cannot hide a stale source."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg

from pull_pipeline.config.models import FreshnessConfig
from pull_pipeline.freshness import State, judge
from pull_pipeline_tests.daemon_harness import Clock, Daemon
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
CONFIG = FreshnessConfig(warn_after=timedelta(minutes=30), fail_after=timedelta(hours=2))
READINGS = dg.AssetKey(["plant", "readings"])


def hourly(until: datetime) -> tuple[str, datetime] | None:
    """The newest complete hourly window at `until`, from T0 on."""
    if until < T0 + HOUR:
        return None
    end = until.replace(minute=0, second=0, microsecond=0)
    return (end - HOUR).strftime("%Y-%m-%d-%H:%M"), end


def at(hour: float) -> datetime:
    return T0 + timedelta(hours=hour)


def test_not_due_before_the_first_deadline() -> None:
    verdict = judge("plant", CONFIG, at(1.25), hourly, lambda key: None)
    assert verdict.state is State.NOT_DUE and verdict.passed


def test_stale_when_the_newest_due_window_is_missing_even_if_older_ones_landed() -> None:
    landed = {"2024-01-01-00:00": at(1), "2024-01-01-01:00": at(9)}  # 01:00 backfilled late
    verdict = judge("plant", CONFIG, at(5.5), hourly, landed.get)
    assert verdict.state is State.STALE and not verdict.passed
    assert verdict.window is not None and verdict.window.key == "2024-01-01-02:00"
    assert verdict.window.deadline == at(5)
    assert "2024-01-01-02:00" in verdict.description


def test_warn_when_only_the_newer_warn_window_is_missing() -> None:
    landed = {f"2024-01-01-0{h}:00": at(h + 1) for h in range(4)}
    verdict = judge("plant", CONFIG, at(5.5), hourly, landed.get)
    assert verdict.state is State.WARN and verdict.window.key == "2024-01-01-04:00"  # type: ignore[union-attr]


def test_fresh_when_the_newest_due_window_landed_even_late() -> None:
    landed = {f"2024-01-01-0{h}:00": at(9) for h in range(5)}
    verdict = judge("plant", CONFIG, at(5.5), hourly, landed.get)
    assert verdict.state is State.FRESH and verdict.landed_at == at(9)


def project_for(tmp_path: Path, api: ReadingsApi, pg_dsn: str, table: str, hook: str):
    source = api.source_config(freshness={"warn_after": "30min", "fail_after": "2h"})
    return make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table},
        "alerts": {"webui_url": "http://dagster.example:3000", "webhooks": [{"url": hook}]},
        "sources": {"plant": source},
    })


def latest_freshness(instance: dg.DagsterInstance) -> Any:
    key = dg.AssetCheckKey(READINGS, "freshness")
    return instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)


def test_stale_source_fails_and_alerts_despite_an_old_backfill(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    readings_api.readings = sample_readings(duration=timedelta(hours=5))
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url)
    clock = Clock(at(5.5))
    with dg.instance_for_test() as instance:
        daemon = Daemon(project, instance, clock)
        job = daemon.defs.resolve_job_def("pull_plant")
        # only an old window is loaded: a backfill of 2024-01-01-00:00, just now
        assert job.execute_in_process(instance=instance, partition_key="2024-01-01-00:00").success
        latest = instance.get_latest_materialization_event(READINGS)
        assert latest is not None  # what Dagster's built-in freshness would count as fresh

        tick = daemon.sensor_tick("freshness_plant")
        record = latest_freshness(instance)
        assert record.status.value == "FAILED"
        evaluation = record.event.dagster_event.event_specific_data
        assert evaluation.severity == dg.AssetCheckSeverity.ERROR
        assert evaluation.metadata["window"].value == "2024-01-01-02:00"
        (alert,) = webhook_receiver.payloads
        assert "plant is stale" in alert["text"] and "2024-01-01-02:00" in alert["text"]
        assert "http://dagster.example:3000/assets/plant/readings" in alert["text"]

        daemon.sensor_tick("freshness_plant")  # unchanged: nothing new recorded, no new alert
        assert latest_freshness(instance).id == record.id
        assert len(webhook_receiver.payloads) == 1

        for key in ("2024-01-01-02:00", "2024-01-01-03:00"):
            assert job.execute_in_process(instance=instance, partition_key=key).success
        daemon.sensor_tick("freshness_plant")
        warn = latest_freshness(instance).event.dagster_event.event_specific_data
        assert not warn.passed and warn.severity == dg.AssetCheckSeverity.WARN  # 04:00 missing
        assert job.execute_in_process(instance=instance, partition_key="2024-01-01-04:00").success
        daemon.sensor_tick("freshness_plant")
        assert latest_freshness(instance).status.value == "SUCCEEDED"
        assert len(webhook_receiver.payloads) == 1  # WARN and fresh do not page anyone
    assert tick.cursor == "stale:2024-01-01-02:00"


def test_freshness_check_runs_on_demand_from_the_ui(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url)
    with dg.instance_for_test() as instance:
        daemon = Daemon(project, instance, Clock(at(5.5)))
        check_job = daemon.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_check_selection={dg.AssetCheckKey(READINGS, "freshness")}, asset_selection=set())
        result = check_job.execute_in_process(instance=instance, raise_on_error=False)
        (evaluation,) = result.get_asset_check_evaluations()
    assert not evaluation.passed and evaluation.metadata["state"].value == "stale"


def test_a_failed_ui_run_of_an_old_window_does_not_leave_freshness_failed(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    """The UI's Materialize on `readings` includes the freshness check; when that run fails,
    the check shows "execution failed". Its sensor puts the verdict back at the next tick."""
    readings_api.readings = sample_readings(duration=timedelta(hours=5))
    project = project_for(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url)
    with dg.instance_for_test() as instance:
        daemon = Daemon(project, instance, Clock(at(5.5)))
        job = daemon.defs.resolve_job_def("pull_plant")
        for hour in range(5):
            key = f"2024-01-01-0{hour}:00"
            assert job.execute_in_process(instance=instance, partition_key=key).success
        daemon.sensor_tick("freshness_plant")
        assert latest_freshness(instance).status.value == "SUCCEEDED"

        readings_api.stop()  # the source is down: a manual rerun of an old window fails
        ui_run = daemon.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey(["plant", "raw"]), READINGS},
            asset_check_selection={dg.AssetCheckKey(READINGS, "freshness"),
                                   dg.AssetCheckKey(READINGS, "valid_rows"),
                                   dg.AssetCheckKey(dg.AssetKey(["plant", "raw"]), "has_rows")})
        failed = ui_run.execute_in_process(instance=instance, partition_key="2024-01-01-00:00",
                                           raise_on_error=False)
        assert not failed.success
        assert latest_freshness(instance).run_id == failed.run_id  # what the UI would show

        daemon.sensor_tick("freshness_plant")
        record = latest_freshness(instance)
    assert record.run_id == "" and record.status.value == "SUCCEEDED"
    assert webhook_receiver.payloads == []  # fresh all along: nobody was paged
