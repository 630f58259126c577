"""Automatic recovery: the planner alone, then outages end to end on real servers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from pull_pipeline.recovery import (
    LAUNCH_GRACE_SECONDS,
    Cursor,
    Probe,
    Status,
    Window,
    plan_recovery,
)
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.ops_harness import Clock, Ops, expected_rows, sink_rows
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

T0 = datetime(2024, 1, 1, tzinfo=UTC)
M, F, P, L = Status.MISSING, Status.FAILED, Status.IN_PROGRESS, Status.MATERIALIZED


class Probes:
    """A probe that records its calls."""

    def __init__(self, answer: Probe | None = None) -> None:
        self.answer = answer or Probe(ok=True)
        self.calls = 0

    def __call__(self) -> Probe:
        self.calls += 1
        return self.answer


def windows(*statuses: Status, permanent: tuple[int, ...] = ()) -> list[Window]:
    return [Window(f"w{i}", s, permanent=i in permanent) for i, s in enumerate(statuses)]


# --- the planner, without Dagster ------------------------------------------------------------


def test_requests_missing_and_transiently_failed_newest_first_within_cap() -> None:
    probe = Probes()
    plan = plan_recovery(Cursor(), windows(L, M, F, F, P, M, L, permanent=(3,)), cap=2,
                         now=100.0, probe=probe)
    assert plan.request == ["w5", "w2"]  # newest first; w3 failed permanently; w4 running
    assert plan.waiting == 1 and probe.calls == 1
    assert plan.newly_held == ["w3"]
    assert plan.cursor.pending == {"w5": 100.0, "w2": 100.0}
    assert plan.run_key("w5") == "recover:w5:1"


def test_nothing_to_do_means_no_probe() -> None:
    probe = Probes()
    plan = plan_recovery(Cursor(), windows(L, L, P), cap=5, now=0.0, probe=probe)
    assert plan.request == [] and probe.calls == 0


def test_source_still_down_requests_nothing() -> None:
    probe = Probes(Probe(ok=False, message="HTTP 503"))
    plan = plan_recovery(Cursor(), windows(M, F), cap=5, now=0.0, probe=probe)
    assert plan.request == [] and plan.cursor.pending == {}
    assert "HTTP 503" in plan.describe()


def test_in_flight_windows_count_against_the_cap() -> None:
    cursor = Cursor(generation=1, pending={"w0": 0.0, "w1": 0.0})
    plan = plan_recovery(cursor, windows(P, P, M, M, M), cap=3, now=10.0, probe=Probes())
    assert plan.request == ["w4"]
    full = plan_recovery(plan.cursor, windows(P, P, P, M, M), cap=3, now=20.0, probe=Probes())
    assert full.request == [] and full.probe is None


def test_recovered_once_everything_requested_has_loaded() -> None:
    cursor = Cursor(generation=1, pending={"w1": 0.0, "w2": 0.0})
    partly = plan_recovery(cursor, windows(L, L, P), cap=5, now=10.0, probe=Probes())
    assert partly.recovered == [] and partly.cursor.loaded == ["w1"]
    done = plan_recovery(partly.cursor, windows(L, L, L), cap=5, now=20.0, probe=Probes())
    assert sorted(done.recovered) == ["w1", "w2"] and not done.after_outage
    quiet = plan_recovery(done.cursor, windows(L, L, L), cap=5, now=30.0, probe=Probes())
    assert quiet.recovered == []  # said once


def test_a_window_failing_again_is_judged_afresh() -> None:
    cursor = Cursor(generation=1, pending={"w0": 0.0, "w1": 0.0})
    plan = plan_recovery(cursor, windows(F, F, permanent=(1,)), cap=5, now=10.0, probe=Probes())
    assert plan.request == ["w0"]  # transient again: retried with a new run key
    assert plan.run_key("w0") == "recover:w0:2"
    assert plan.newly_held == ["w1"]
    again = plan_recovery(plan.cursor, windows(P, F, permanent=(1,)), cap=5, now=20.0,
                          probe=Probes())
    assert again.newly_held == [] and again.request == []  # held windows: announced once
    done = plan_recovery(again.cursor, windows(L, F, permanent=(1,)), cap=5, now=30.0,
                         probe=Probes())
    assert done.recovered == ["w0"] and done.after_outage  # "is back", not "caught up"


def test_a_request_that_never_launched_is_retried_after_the_grace() -> None:
    cursor = Cursor(generation=1, pending={"w0": 0.0})
    soon = plan_recovery(cursor, windows(M), cap=5, now=LAUNCH_GRACE_SECONDS - 1, probe=Probes())
    assert soon.request == []
    later = plan_recovery(cursor, windows(M), cap=5, now=LAUNCH_GRACE_SECONDS + 1, probe=Probes())
    assert later.request == ["w0"]


def test_a_flapping_source_is_retried_with_growing_pauses_until_a_window_loads() -> None:
    """The probe answers but every requested run fails: no request every minute forever."""
    probe, cursor, now, waits = Probes(), Cursor(), 0.0, []
    plan = plan_recovery(cursor, windows(F), cap=5, now=now, probe=probe)
    for _ in range(9):
        assert plan.request == ["w0"]
        waited = 0.0
        while True:  # the sensor ticks every minute; the requested run fails each time
            now += 60.0
            waited += 60.0
            plan = plan_recovery(plan.cursor, windows(F), cap=5, now=now, probe=probe)
            if plan.request:
                break
            assert "failed again" in plan.describe() and probe.calls == len(waits) + 1
        waits.append(waited)
    assert waits == [60, 120, 180, 300, 540, 1020, 1980, 3660, 3660]  # first retry at once
    assert plan.cursor.failed_rounds == 9
    now += 60.0
    plan = plan_recovery(plan.cursor, windows(L), cap=5, now=now, probe=probe)  # it loaded
    assert plan.cursor.failed_rounds == 0 and plan.recovered == ["w0"]
    plan = plan_recovery(plan.cursor, windows(M), cap=5, now=now + 60.0, probe=probe)
    assert plan.request == ["w0"]  # no pause left over


def test_cursor_round_trips() -> None:
    cursor = Cursor(generation=3, pending={"a": 1.5}, loaded=["b"], held=["c"], outage=True,
                    failed_rounds=2, retry_at=99.5)
    assert Cursor.parse(cursor.dump()) == cursor
    assert Cursor.parse(None) == Cursor()


# --- end to end: schedule, outage, recovery sensor, alerts, sink -----------------------------


def outage_project(tmp_path: Path, api: ReadingsApi, pg_dsn: str, table: str, hook: str,
                   **source: Any):
    config = api.source_config(
        partitions={"cadence": "hourly", "start": "2024-01-01T00:00:00Z", "lag": "5min"},
        expected_interval="1min", **source)
    return make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table},
        "alerts": {"webui_url": "http://dagster.example:3000", "webhooks": [{"url": hook}]},
        "sources": {"plant": config},
    })


def hourly(ops: Ops, hour: int) -> list[bool]:
    """The schedule's tick for the window ending at `hour`, executed as the daemon would."""
    return ops.execute_all(ops.schedule_tick("plant", T0 + timedelta(hours=hour, minutes=5)),
                           "plant")


def gap_checks_passed(instance: dg.DagsterInstance) -> set[str]:
    """The windows whose latest gap check evaluation passed."""
    key = dg.AssetCheckKey(dg.AssetKey(["plant", "readings"]), "gaps")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    latest = {}
    for record in reversed(history):  # oldest first, so the newest wins
        latest[record.partition] = record.status.value
    return {partition for partition, status in latest.items() if status == "SUCCEEDED"}


def test_outage_alerts_then_recovers_every_window_without_gaps_or_duplicates(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    readings_api.readings = sample_readings(duration=timedelta(hours=8))
    project = outage_project(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url)
    clock = Clock(T0)
    with dg.instance_for_test() as instance:
        ops = Ops(project, instance, clock)
        ops.sensor_tick("alert_on_run_failure")  # starts watching from here
        for hour in (1, 2):  # two good windows
            assert hourly(ops, hour) == [True]
        readings_api.down = True  # 503 for every request, six windows long
        for hour in range(3, 9):
            assert hourly(ops, hour) == [False]
            ops.sensor_tick("alert_on_run_failure")
            clock.now = T0 + timedelta(hours=hour, minutes=10)
            tick = ops.sensor_tick("recover_plant")
            assert not tick.run_requests and "not answering" in (tick.skip_message or "")

        failures = [p for p in webhook_receiver.payloads if "failed" in p["text"]]
        assert len(failures) == 1  # the same failure six times: throttled to one alert
        assert "Source: plant" in failures[0]["text"]
        assert "HTTP 503" in failures[0]["text"]
        assert "http://dagster.example:3000/runs/" in failures[0]["text"]

        readings_api.down = False  # the source is back
        clock.now = T0 + timedelta(hours=8, minutes=12)
        tick = ops.sensor_tick("recover_plant")
        requested = [r.partition_key for r in tick.run_requests]
        assert sorted(requested) == [f"2024-01-01-{h:02d}:00" for h in range(2, 8)]
        assert all(r.tags["pull_pipeline/trigger"] == "recovery" for r in tick.run_requests)
        assert ops.execute_all(list(tick.run_requests), "plant") == [True] * 6

        clock.now += timedelta(minutes=1)
        done = ops.sensor_tick("recover_plant")
        assert not done.run_requests
        recovered = [p["text"] for p in webhook_receiver.payloads if "is back" in p["text"]]
        assert len(recovered) == 1 and "plant is back; 6 windows backfilled" in recovered[0]
        clock.now += timedelta(minutes=1)
        assert not ops.sensor_tick("recover_plant").run_requests
        assert len(webhook_receiver.payloads) == 2
        passed = gap_checks_passed(instance)

    assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(readings_api.readings)
    with psycopg.connect(pg_dsn) as conn:
        total, distinct = conn.execute(
            f"SELECT count(*), count(DISTINCT (sensor_tag, ts)) FROM {table_name}").fetchone()
    assert total == distinct == len(readings_api.readings)
    assert passed == {f"2024-01-01-{h:02d}:00" for h in range(8)}  # no gap in any window


def test_refused_connections_then_back_on_the_same_address(
    tmp_path: Path, readings_api_factory: Any, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    readings = sample_readings(duration=timedelta(hours=3))
    api = readings_api_factory(readings)
    port = int(api.origin.rsplit(":", 1)[1])
    project = outage_project(tmp_path, api, pg_dsn, table_name, webhook_receiver.url)
    clock = Clock(T0)
    with dg.instance_for_test() as instance:
        ops = Ops(project, instance, clock)
        assert hourly(ops, 1) == [True]
        api.stop()  # connections refused from now on
        assert hourly(ops, 2) == [False] and hourly(ops, 3) == [False]
        clock.now = T0 + timedelta(hours=3, minutes=10)
        assert not ops.sensor_tick("recover_plant").run_requests
        readings_api_factory(readings, port=port)  # back, same address
        tick = ops.sensor_tick("recover_plant")
        assert sorted(r.partition_key for r in tick.run_requests) == [
            "2024-01-01-01:00", "2024-01-01-02:00"]
        assert ops.execute_all(list(tick.run_requests), "plant") == [True, True]
    assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(readings)


def test_refused_credentials_are_not_retried_in_a_loop(
    tmp_path: Path, readings_api_factory: Any, pg_dsn: str, table_name: str,
    webhook_receiver: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    api = readings_api_factory(auth={"type": "bearer", "token": "the-right-token"})
    monkeypatch.setenv("PLANT_TOKEN", "a-wrong-token-4417")
    project = outage_project(tmp_path, api, pg_dsn, table_name, webhook_receiver.url,
                             auth={"type": "bearer", "token": "${PLANT_TOKEN}"})
    clock = Clock(T0)
    with dg.instance_for_test() as instance:
        ops = Ops(project, instance, clock)
        ops.sensor_tick("alert_on_run_failure")
        assert hourly(ops, 1) == [False]  # 401
        ops.sensor_tick("alert_on_run_failure")
        seen = len(api.requests)
        for minute in range(10, 15):
            clock.now = T0 + timedelta(hours=1, minutes=minute)
            assert not ops.sensor_tick("recover_plant").run_requests
    assert len(api.requests) == seen  # no run, not even a probe: the window needs a person
    failed, held = webhook_receiver.payloads
    assert "refused the credentials" in failed["text"]
    assert "permanent, not retried automatically" in failed["text"]
    assert "plant: 1 window(s) failed permanently" in held["text"]
    assert "refused the credentials" in held["text"]
    assert "a-wrong-token-4417" not in repr(webhook_receiver.payloads)


def test_failure_alert_for_a_run_started_from_the_ui_names_the_source(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    project = outage_project(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url)
    readings_api.fail_always(500)
    with dg.instance_for_test() as instance:
        ops = Ops(project, instance, Clock(T0))
        ops.sensor_tick("alert_on_run_failure")
        ui_job = ops.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey(["plant", "raw"]), dg.AssetKey(["plant", "readings"])})
        result = ui_job.execute_in_process(instance=instance, partition_key="2024-01-01-00:00",
                                           raise_on_error=False)
        assert not result.success and "pull_pipeline/source" not in result.dagster_run.tags
        ops.sensor_tick("alert_on_run_failure")
    (alert,) = webhook_receiver.payloads
    assert alert["text"].startswith("plant: run of __ASSET_JOB failed")
    assert "Partitions: 2024-01-01-00:00" in alert["text"] and "HTTP 500" in alert["text"]
    assert "transient: recovery pulls these windows again" in alert["text"]
