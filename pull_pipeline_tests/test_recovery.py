"""Automatic recovery: the planner alone, then outages end to end on real servers."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
from dagster._core.storage.asset_check_execution_record import (
    AssetCheckExecutionResolvedStatus,
)

from pull_pipeline.recovery import (
    LAUNCH_GRACE_SECONDS,
    Caps,
    Cursor,
    Probe,
    Status,
    WindowState,
    expiry_margin,
    plan_recovery,
)
from pull_pipeline_tests.daemon_harness import Clock, Daemon, expected_rows, sink_rows
from pull_pipeline_tests.helpers import make_project
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


def windows(*statuses: Status, permanent: tuple[int, ...] = ()) -> list[WindowState]:
    return [WindowState(f"w{i}", s, permanent=i in permanent) for i, s in enumerate(statuses)]


def one_each(cap: int) -> Caps:
    """A run per window, `cap` in flight: the rules that do not depend on ranges."""
    return Caps(windows_per_run=1, runs_in_flight=cap, windows_in_flight=cap)


def requested(generation: int, *keys: str, at: float = 0.0) -> Cursor:
    """A cursor with `keys` pending, each in a run of its own."""
    return Cursor(generation=generation, pending=dict.fromkeys(keys, at),
                  runs={f"recover:{key}:{generation}": [key] for key in keys})


# --- the planner, without Dagster ------------------------------------------------------------


def test_requests_missing_and_transiently_failed_newest_first_within_cap() -> None:
    probe = Probes()
    plan = plan_recovery(Cursor(), windows(L, M, F, F, P, M, L, permanent=(3,)), caps=one_each(2),
                         now=100.0, probe=probe)
    assert plan.request == ["w5", "w2"]  # newest first; w3 failed permanently; w4 running
    assert plan.waiting == 1 and probe.calls == 1
    assert plan.newly_held == ["w3"]
    assert plan.cursor.pending == {"w5": 100.0, "w2": 100.0}
    assert plan.run_key(["w5"]) == "recover:w5:1"


def test_nothing_to_do_means_no_probe() -> None:
    probe = Probes()
    plan = plan_recovery(Cursor(), windows(L, L, P), caps=one_each(5), now=0.0, probe=probe)
    assert plan.request == [] and probe.calls == 0


def test_source_still_down_requests_nothing() -> None:
    probe = Probes(Probe(ok=False, message="HTTP 503"))
    plan = plan_recovery(Cursor(), windows(M, F), caps=one_each(5), now=0.0, probe=probe)
    assert plan.request == [] and plan.cursor.pending == {}
    assert "HTTP 503" in plan.describe()


def test_in_flight_windows_count_against_the_cap() -> None:
    cursor = requested(1, "w0", "w1")
    plan = plan_recovery(cursor, windows(P, P, M, M, M), caps=one_each(3), now=10.0, probe=Probes())
    assert plan.request == ["w4"]
    full = plan_recovery(plan.cursor, windows(P, P, P, M, M), caps=one_each(3), now=20.0, probe=Probes())
    assert full.request == [] and full.probe is None


def test_recovered_once_everything_requested_has_loaded() -> None:
    cursor = requested(1, "w1", "w2")
    partly = plan_recovery(cursor, windows(L, L, P), caps=one_each(5), now=10.0, probe=Probes())
    assert partly.recovered == [] and partly.cursor.loaded == ["w1"]
    done = plan_recovery(partly.cursor, windows(L, L, L), caps=one_each(5), now=20.0, probe=Probes())
    assert sorted(done.recovered) == ["w1", "w2"] and not done.after_outage
    quiet = plan_recovery(done.cursor, windows(L, L, L), caps=one_each(5), now=30.0, probe=Probes())
    assert quiet.recovered == []  # said once


def test_a_window_failing_again_is_judged_afresh() -> None:
    cursor = requested(1, "w0", "w1")
    plan = plan_recovery(cursor, windows(F, F, permanent=(1,)), caps=one_each(5), now=10.0, probe=Probes())
    assert plan.request == ["w0"]  # transient again: retried with a new run key
    assert plan.run_key(["w0"]) == "recover:w0:2"
    assert plan.newly_held == ["w1"]
    again = plan_recovery(plan.cursor, windows(P, F, permanent=(1,)), caps=one_each(5), now=20.0,
                          probe=Probes())
    assert again.newly_held == [] and again.request == []  # held windows: announced once
    done = plan_recovery(again.cursor, windows(L, F, permanent=(1,)), caps=one_each(5), now=30.0,
                         probe=Probes())
    assert done.recovered == ["w0"] and done.after_outage  # "is back", not "caught up"


def test_a_request_that_never_launched_is_retried_after_the_grace() -> None:
    cursor = requested(1, "w0")
    soon = plan_recovery(cursor, windows(M), caps=one_each(5), now=LAUNCH_GRACE_SECONDS - 1, probe=Probes())
    assert soon.request == []
    later = plan_recovery(cursor, windows(M), caps=one_each(5), now=LAUNCH_GRACE_SECONDS + 1, probe=Probes())
    assert later.request == ["w0"]


def test_a_flapping_source_is_retried_with_growing_pauses_until_a_window_loads() -> None:
    """The probe answers but every requested run fails: no request every minute forever."""
    probe, cursor, now = Probes(), Cursor(), 0.0
    waits: list[float] = []
    plan = plan_recovery(cursor, windows(F), caps=one_each(5), now=now, probe=probe)
    for _ in range(9):
        assert plan.request == ["w0"]
        waited = 0.0
        while True:  # the sensor ticks every minute; the requested run fails each time
            now += 60.0
            waited += 60.0
            plan = plan_recovery(plan.cursor, windows(F), caps=one_each(5), now=now, probe=probe)
            if plan.request:
                break
            assert "failed again" in plan.describe() and probe.calls == len(waits) + 1
        waits.append(waited)
    assert waits == [60, 120, 180, 300, 540, 1020, 1980, 3660, 3660]  # first retry at once
    assert plan.cursor.failed_rounds == 9
    now += 60.0
    plan = plan_recovery(plan.cursor, windows(L), caps=one_each(5), now=now, probe=probe)  # it loaded
    assert plan.cursor.failed_rounds == 0 and plan.recovered == ["w0"]
    plan = plan_recovery(plan.cursor, windows(M), caps=one_each(5), now=now + 60.0, probe=probe)
    assert plan.request == ["w0"]  # no pause left over


def test_unbroken_stretches_become_ranged_runs_cut_from_the_newest_end() -> None:
    caps = Caps(windows_per_run=3, runs_in_flight=2, windows_in_flight=100)
    states = windows(M, M, M, M, M, L, F, F, P, M, F, permanent=(10,))
    plan = plan_recovery(Cursor(), states, caps, now=0.0, probe=Probes())
    # stretches w0-w4 and w6-w7 (w5 loaded, w8 loading, w9 alone, w10 held); newest first
    assert plan.ranges == [["w9"], ["w6", "w7"]]
    assert plan.waiting == 5 and "in 2 run(s)" in plan.describe()
    assert plan.run_key(["w6", "w7"]) == "recover:w6...w7:1"
    assert sorted(plan.cursor.runs) == ["recover:w6...w7:1", "recover:w9:1"]
    # w9 loads, w6-w7 still loading: one run free, so the newest piece of w0-w4 goes next
    states = windows(M, M, M, M, M, L, P, P, P, L, F, permanent=(10,))
    plan = plan_recovery(plan.cursor, states, caps, now=60.0, probe=Probes())
    assert plan.ranges == [["w2", "w3", "w4"]]
    assert list(plan.cursor.runs) == ["recover:w6...w7:1", "recover:w2...w4:2"]


def test_windows_in_flight_cap_a_range_from_its_newest_end() -> None:
    caps = Caps(windows_per_run=10, runs_in_flight=5, windows_in_flight=4)
    plan = plan_recovery(Cursor(), windows(M, M, M, M, M, M), caps, now=0.0, probe=Probes())
    assert plan.ranges == [["w2", "w3", "w4", "w5"]] and plan.waiting == 2
    full = plan_recovery(plan.cursor, windows(M, M, P, P, P, P), caps, now=9.0, probe=Probes())
    assert full.ranges == [] and full.probe is None  # nothing asked of the source


def test_a_week_of_hourly_windows_catches_up_in_four_runs() -> None:
    caps = Caps(windows_per_run=48, runs_in_flight=2, windows_in_flight=96)
    states = [WindowState(f"h{i:03d}", M) for i in range(168)]
    cursor, runs, now = Cursor(), [], 0.0
    while True:
        plan = plan_recovery(cursor, states, caps, now=now, probe=Probes())
        runs.extend(plan.ranges)
        loaded = set(plan.request)  # every run requested this tick loads by the next one
        states = [WindowState(w.key, L if w.key in loaded else w.status) for w in states]
        cursor, now = plan.cursor, now + 60.0
        if plan.recovered:
            break
    assert [len(keys) for keys in runs] == [48, 48, 48, 24]
    assert sorted(key for keys in runs for key in keys) == [w.key for w in states]
    assert len(plan.recovered) == 168 and not plan.after_outage


def test_windows_leaving_the_horizon_unloaded_are_announced_once() -> None:
    states = [WindowState("w0", F, permanent=True, expiring=True),
              WindowState("w1", M, expiring=True), WindowState("w2", L, expiring=True),
              WindowState("w3", M)]
    down = Probes(Probe(ok=False, message="HTTP 503"))
    plan = plan_recovery(Cursor(), states, one_each(5), now=0.0, probe=down)
    assert plan.newly_expiring == ["w0", "w1"]
    again = plan_recovery(plan.cursor, states, one_each(5), now=60.0, probe=down)
    assert again.newly_expiring == []
    up = plan_recovery(Cursor(), states, one_each(1), now=0.0, probe=Probes())
    assert up.ranges == [["w1"]]  # the expiring window goes before the newer w3
    assert up.newly_expiring == ["w0"]  # held: nothing will retry it
    assert expiry_margin(timedelta(days=7)) == timedelta(days=1)
    assert expiry_margin(timedelta(hours=8)) == timedelta(hours=2)


def test_a_cursor_from_before_ranges_counts_each_pending_window_as_a_run() -> None:
    old = '{"generation": 2, "pending": {"w0": 5.0, "w1": 5.0}, "loaded": [], "held": []}'
    cursor = Cursor.parse(old)
    assert cursor.runs == {"recover:w0": ["w0"], "recover:w1": ["w1"]}
    plan = plan_recovery(cursor, windows(L, P, M), one_each(2), now=9.0, probe=Probes())
    assert plan.ranges == [["w2"]] and plan.cursor.loaded == ["w0"]


def test_cursor_round_trips() -> None:
    cursor = Cursor(generation=3, pending={"a": 1.5}, runs={"recover:a:3": ["a"]}, loaded=["b"],
                    held=["c"], expiring=["d"], outage=True, failed_rounds=2, retry_at=99.5)
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


def hourly(ops: Daemon, hour: int) -> list[bool]:
    """The schedule's tick for the window ending at `hour`, executed as the daemon would."""
    return ops.execute_all(ops.schedule_tick("plant", T0 + timedelta(hours=hour, minutes=5)),
                           "plant")


def gap_checks_passed(instance: dg.DagsterInstance) -> set[str]:
    """The windows whose latest gap check evaluation passed."""
    key = dg.AssetCheckKey(dg.AssetKey(["plant", "readings"]), "gaps")
    history = instance.event_log_storage.get_asset_check_execution_history(key, limit=100)
    latest: dict[str, str] = {}
    for record in reversed(history):  # oldest first, so the newest wins
        assert record.partition is not None  # the check is partitioned
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
        ops = Daemon(project, instance, clock)
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
        (request,) = tick.run_requests  # one ranged run for the six windows
        assert request.partition_key_range == dg.PartitionKeyRange(
            "2024-01-01-02:00", "2024-01-01-07:00")
        assert request.tags["pull_pipeline/trigger"] == "recovery"
        assert ops.execute_all([request], "plant") == [True]

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
        row = conn.execute(
            f"SELECT count(*), count(DISTINCT (sensor_tag, ts)) FROM {table_name}").fetchone()
    assert row is not None
    total, distinct = row
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
        ops = Daemon(project, instance, clock)
        assert hourly(ops, 1) == [True]
        api.stop()  # connections refused from now on
        assert hourly(ops, 2) == [False] and hourly(ops, 3) == [False]
        clock.now = T0 + timedelta(hours=3, minutes=10)
        assert not ops.sensor_tick("recover_plant").run_requests
        readings_api_factory(readings, port=port)  # back, same address
        (request,) = ops.sensor_tick("recover_plant").run_requests
        assert request.partition_key_range == dg.PartitionKeyRange(
            "2024-01-01-01:00", "2024-01-01-02:00")
        assert ops.execute_all([request], "plant") == [True]
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
        ops = Daemon(project, instance, clock)
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
        ops = Daemon(project, instance, Clock(T0))
        ops.sensor_tick("alert_on_run_failure")
        ui_job = ops.defs.resolve_implicit_global_asset_job_def().get_subset(
            asset_selection={dg.AssetKey(["plant", "raw"]), dg.AssetKey(["plant", "readings"])})
        result = ui_job.execute_in_process(instance=instance, partition_key="2024-01-01-00:00",
                                           raise_on_error=False)
        assert not result.success
        ops.sensor_tick("alert_on_run_failure")
    (alert,) = webhook_receiver.payloads
    assert alert["text"].startswith("plant: run of __ASSET_JOB failed")
    assert "Partitions: 2024-01-01-00:00" in alert["text"] and "HTTP 500" in alert["text"]
    assert "transient: recovery pulls these windows again" in alert["text"]


def test_a_week_missing_catches_up_in_a_handful_of_ranged_runs_with_checks_per_window(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    """A first start with 168 hourly windows to pull: four runs, every window exact."""
    readings_api.readings = sample_readings(duration=timedelta(hours=168))
    project = outage_project(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url,
                             recovery={"horizon": "8 days"})
    clock = Clock(T0 + timedelta(hours=168, minutes=10))
    runs: list[dg.RunRequest] = []
    started = time.perf_counter()
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, clock)
        for _ in range(10):
            tick = ops.sensor_tick("recover_plant")
            assert ops.execute_all(list(tick.run_requests), "plant") == [True] * len(
                tick.run_requests)
            runs.extend(tick.run_requests)
            clock.now += timedelta(minutes=1)
            if "caught up" in (tick.skip_message or ""):
                break
        seconds = time.perf_counter() - started
        passed = checks_passed(instance, "gaps")
        valid = checks_passed(instance, "valid_rows")
    print(f"168 windows: {len(runs)} runs, {seconds:.1f} s")
    # the oldest day first (it is about to leave the horizon), then newest first
    assert [r.partition_key_range for r in runs] == [
        dg.PartitionKeyRange(f"2024-01-0{d}-00:00", f"2024-01-0{e}-23:00")
        for d, e in ((1, 1), (6, 7), (4, 5), (2, 3))]
    keys = {f"2024-01-0{1 + h // 24}-{h % 24:02d}:00" for h in range(168)}
    assert passed == keys and valid == keys  # a result per window, none "skipped"
    assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(readings_api.readings)
    (caught_up,) = webhook_receiver.payloads
    assert "plant caught up; 168 missing windows backfilled" in caught_up["text"]


def checks_passed(instance: dg.DagsterInstance, check: str) -> set[str]:
    """Windows whose check status, as the UI's partition bar resolves it, is succeeded."""
    key = dg.AssetCheckKey(dg.AssetKey(["plant", "readings"]), check)
    partitions_def = dg.HourlyPartitionsDefinition(start_date="2024-01-01-00:00")
    state = instance.event_log_storage.get_asset_check_state([(key, partitions_def)])[key]
    succeeded = state.subsets[AssetCheckExecutionResolvedStatus.SUCCEEDED]
    return set(succeeded.subset_value.get_partition_keys())


def test_windows_about_to_leave_the_horizon_unloaded_alert_once(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    webhook_receiver: Any,
) -> None:
    readings_api.down = True
    project = outage_project(tmp_path, readings_api, pg_dsn, table_name, webhook_receiver.url,
                             recovery={"horizon": "8h"})
    clock = Clock(T0 + timedelta(hours=8, minutes=10))
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, clock)
        for _ in range(3):
            assert not ops.sensor_tick("recover_plant").run_requests
            clock.now += timedelta(minutes=1)
    (alert,) = webhook_receiver.payloads  # the source is down, and the oldest 2h are expiring
    assert "plant: 2 window(s) about to leave the recovery horizon unloaded" in alert["text"]
    assert "Partitions: 2024-01-01-01:00, 2024-01-01-02:00" in alert["text"]  # 00:00 is past
    assert "recovery.horizon (8 hours)" in alert["text"]
