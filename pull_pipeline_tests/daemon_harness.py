"""Drive schedules, sensors and runs of a project the way the daemon would, in-process.

`Daemon` builds the project's production definitions (`build_definitions`) with a
controllable clock, evaluates schedule ticks and sensor ticks with Dagster's own contexts
(keeping each sensor's cursor between ticks and recording the asset events a sensor
returns, as the sensor daemon does), and executes run requests in-process against one
instance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import dagster as dg
import psycopg

from pull_pipeline.config.loader import Project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs.naming import SourceNames


class Clock:
    """A settable UTC clock for sensors (schedules get their tick time from the context)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Daemon:
    def __init__(self, project: Project, instance: dg.DagsterInstance, clock: Clock) -> None:
        self.project = project
        self.instance = instance
        self.clock = clock
        self.defs = build_definitions(project, clock)
        self.cursors: dict[str, str | None] = {}

    def schedule_tick(self, source: str, at: datetime) -> list[dg.RunRequest]:
        schedule = self.defs.resolve_schedule_def(SourceNames(source).pull_schedule)
        context = dg.build_schedule_context(
            instance=self.instance, scheduled_execution_time=at,
            repository_def=self.defs.get_repository_def())
        data = schedule.evaluate_tick(context)
        return list(data.run_requests or [])

    def sensor_tick(self, name: str) -> Any:
        """Evaluate a sensor once, carry its cursor and record its asset events."""
        sensor = self.defs.resolve_sensor_def(name)
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursors.get(name), definitions=self.defs)
        data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        for event in data.asset_events:
            self.instance.report_runless_asset_event(event)
        return data

    def execute(self, request: dg.RunRequest, source: str) -> dg.ExecuteInProcessResult:
        job = self.defs.resolve_job_def(SourceNames(source).pull_job)
        return job.execute_in_process(
            instance=self.instance, partition_key=request.partition_key,
            tags=dict(request.tags), raise_on_error=False)

    def execute_all(self, requests: list[dg.RunRequest], source: str) -> list[bool]:
        return [self.execute(request, source).success for request in requests]


def sink_rows(dsn: str, table: str, source: str) -> list[tuple[str, float, float]]:
    """(sensor_tag, epoch seconds, value) of every row of `source`, ordered."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            f"SELECT sensor_tag, extract(epoch FROM ts)::float8, sensor_value FROM {table} "
            "WHERE source = %s ORDER BY sensor_tag, ts", (source,)).fetchall()
    return [(tag, float(ts), float(value)) for tag, ts, value in rows]


def expected_rows(readings: list[dict[str, Any]]) -> list[tuple[str, float, float]]:
    return sorted((r["sensor_tag"], float(r["relative_time"]), float(r["sensor_value"]))
                  for r in readings)
