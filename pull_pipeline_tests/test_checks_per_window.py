"""Checks tell the truth per window: a ranged run records every window; a failed manual run
of an old window leaves freshness (judged by its sensor) and the other windows alone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus as Resolved,
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from pull_pipeline_tests.daemon_harness import Clock, Daemon
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
READINGS = dg.AssetKey(["plant", "readings"])
RAW = dg.AssetKey(["plant", "raw"])
HOURS = [f"2024-01-01-{h:02d}:00" for h in range(4)]
PARTITIONS = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")


def check_status(instance: dg.DagsterInstance, check: str) -> dict[str, set[str]]:
    """Windows per resolved status of `check`, as the UI's partition bar shows them."""
    key = dg.AssetCheckKey(RAW if check == "has_rows" else READINGS, check)
    state = instance.event_log_storage.get_asset_check_state([(key, PARTITIONS)])[key]
    return {status.value: set(subset.subset_value.get_partition_keys())
            for status, subset in state.subsets.items() if not subset.is_empty}


def latest_freshness(instance: dg.DagsterInstance) -> Any:
    key = dg.AssetCheckKey(READINGS, "freshness")
    return instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]


def test_a_ranged_run_records_every_window_and_a_failed_old_window_flips_nothing_else(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
) -> None:
    readings_api.readings = sample_readings(duration=timedelta(hours=4))
    source = readings_api.source_config(expected_interval="1min",
                                        freshness={"fail_after": "2h"})
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": source}})
    with dg.instance_for_test() as instance:
        daemon = Daemon(project, instance, Clock(T0 + timedelta(hours=4, minutes=30)))
        job = daemon.defs.resolve_job_def("pull_plant")
        ranged = job.execute_in_process(instance=instance, tags={
            ASSET_PARTITION_RANGE_START_TAG: HOURS[0], ASSET_PARTITION_RANGE_END_TAG: HOURS[-1]})
        assert ranged.success
        evaluations = ranged.get_asset_check_evaluations()
        assert sorted((e.check_name, e.partition) for e in evaluations) == sorted(
            (check, hour) for check in ("gaps", "has_rows", "valid_rows") for hour in HOURS)
        for check in ("gaps", "has_rows", "valid_rows"):  # none "skipped", each with a verdict
            assert check_status(instance, check) == {Resolved.SUCCEEDED.value: set(HOURS)}

        daemon.sensor_tick("freshness_plant")
        fresh = latest_freshness(instance)
        assert fresh.status.value == "SUCCEEDED"

        readings_api.fail_always(500)  # a manual rerun of the oldest window fails
        assert not job.execute_in_process(instance=instance, partition_key=HOURS[0],
                                          raise_on_error=False).success
        assert latest_freshness(instance).id == fresh.id  # not "Execution failed"
        daemon.sensor_tick("freshness_plant")
        assert latest_freshness(instance).status.value == "SUCCEEDED"
        for check in ("gaps", "valid_rows"):  # the other windows keep their verdicts
            assert set(HOURS[1:]) <= check_status(instance, check)[Resolved.SUCCEEDED.value]
        assert HOURS[0] not in check_status(instance, "gaps").get(Resolved.FAILED.value, set())
