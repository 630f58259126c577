"""The `sink_health` sensor and the `sink_policies` job against a real TimescaleDB.

Policies are forced to run with `CALL run_job` (what `sink_policies` does) rather than by
waiting for TimescaleDB's background scheduler, which on this machine's PG 15.20 / TS 2.28.3
build fails every job (`cannot drop portal "" while it is being set up`). Jobs are paused
after the first load so that a working scheduler elsewhere cannot race the assertions; the
sensor is judged with a clock three days ahead, so every paused job is overdue on any
machine, and a job the scheduler failed is reported as failed.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg

from pull_pipeline.config.loader import Project
from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests import fake_sources
from pull_pipeline_tests.helpers import failure_text, make_project, run_source
from pull_pipeline_tests.test_timescale import timescale_dsn  # noqa: F401 - a fixture

TODAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
OLD_DAY = TODAY - timedelta(days=10)  # older than compress_after, inside retention
TABLE = "readings_health"


def project_on(tmp_path: Path, dsn: str, webhook: str, **sink: Any) -> Project:
    fake_sources.reset(fake_sources.hourly_rows(OLD_DAY, hours=2))
    return make_project(tmp_path, {
        "sink": {"dsn": dsn, "table": TABLE, **sink},
        "alerts": {"webhooks": [{"url": webhook}]},
        "sources": {"plant": {
            "kind": "python", "function": "pull_pipeline_tests.fake_sources:fetch",
            "partitions": {"cadence": "hourly", "start": f"{OLD_DAY:%Y-%m-%dT%H:%M:%SZ}"},
        }},
    })


def evaluate_sensor(defs: dg.Definitions, instance: dg.DagsterInstance) -> Any:
    sensor = defs.resolve_sensor_def("sink_health")
    return sensor.evaluate_tick(dg.build_sensor_context(
        instance=instance, definitions=defs, resources=defs.resources))


def policy_jobs(dsn: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT proc_name, job_id FROM timescaledb_information.jobs "
            "WHERE hypertable_name = %s", (TABLE,)).fetchall()
    return dict(rows)


def compressed_chunks(dsn: str) -> list[bool]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT is_compressed FROM timescaledb_information.chunks "
            "WHERE hypertable_name = %s ORDER BY range_start", (TABLE,)).fetchall()
    return [row[0] for row in rows]


def test_failing_or_overdue_policy_is_alerted_and_repaired_with_run_job(
    tmp_path: Path, timescale_dsn: str, webhook_receiver: Any  # noqa: F811 - the fixture
) -> None:
    project = project_on(tmp_path, timescale_dsn, webhook_receiver.url,
                         compress_after="7 days", retention="365 days")
    instance = dg.DagsterInstance.ephemeral()
    for hour in (0, 1):
        result = run_source(project, "plant", f"{OLD_DAY:%Y-%m-%d}-0{hour}:00", instance=instance)
        assert result.success, failure_text(result)
    jobs = policy_jobs(timescale_dsn)
    assert set(jobs) == {"policy_compression", "policy_retention"}
    with psycopg.connect(timescale_dsn, autocommit=True) as conn:
        for job_id in jobs.values():
            conn.execute("SELECT alter_job(%s, scheduled => false)", (job_id,))
        conn.execute("SELECT decompress_chunk(c, if_compressed => true) "
                     "FROM show_chunks(%s) c", (TABLE,))
    assert compressed_chunks(timescale_dsn) == [False]

    later = datetime.now(UTC) + timedelta(days=3)
    defs = build_definitions(project, clock=lambda: later)
    tick = evaluate_sensor(defs, instance)

    (request,) = tick.run_requests
    assert (request.run_key or "").startswith("sink_policies@")  # the sensor's only job
    webhook_receiver.wait_for(2)
    texts = "\n".join(webhook_receiver.texts())
    compression = jobs["policy_compression"]
    assert f"compression policy (job {compression})" in texts
    assert f"CALL run_job({compression})" in texts
    assert f"retention policy (job {jobs['policy_retention']})" in texts

    run = defs.resolve_job_def("sink_policies").execute_in_process(instance=instance)
    assert run.success
    assert compressed_chunks(timescale_dsn) == [True]  # the compression policy really ran
    with psycopg.connect(timescale_dsn) as conn:
        (rows,) = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone() or (0,)
    assert rows == 2 * 60 * 3  # retention (365 days) dropped nothing


def test_healthy_or_plain_sink_is_skipped_without_an_alert(
    tmp_path: Path, pg_dsn: str, webhook_receiver: Any
) -> None:
    project = project_on(tmp_path, pg_dsn, webhook_receiver.url)
    instance = dg.DagsterInstance.ephemeral()
    result = run_source(project, "plant", f"{OLD_DAY:%Y-%m-%d}-00:00", instance=instance)
    assert result.success, failure_text(result)
    tick = evaluate_sensor(build_definitions(project), instance)
    assert not tick.run_requests
    assert "0 policy job(s)" in (tick.skip_message or "")
    assert webhook_receiver.payloads == []


def test_unreachable_sink_is_a_skip_not_a_crash(tmp_path: Path, webhook_receiver: Any) -> None:
    project = project_on(tmp_path, "postgresql://nobody@127.0.0.1:9/none", webhook_receiver.url)
    tick = evaluate_sensor(build_definitions(project), dg.DagsterInstance.ephemeral())
    assert not tick.run_requests
    assert "sink not reachable" in (tick.skip_message or "")

