"""Evaluate every sensor and schedule of the code location once: `python -m benchmarks.ticks OUT`.

Run by `benchmarks.fleet` in a child process (config from $PULL_PIPELINE_CONFIG), so that a
tick that never ends is killed by the parent's timeout instead of hanging the benchmark.
Each result is appended to OUT as one JSON line as soon as it is known, and a "start" line
precedes every evaluation: a killed child still tells what it finished and where it was.
The ticks run in-process against an ephemeral instance (no run history), as Dagster's
`build_sensor_context` / `build_schedule_context` give them to a test: the daemon's own
overhead (its loop, the gRPC call to the code server) is not in these figures.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import IO, Any

import dagster as dg
from dagster._core.definitions.schedule_definition import ScheduleExecutionData
from dagster._core.definitions.sensor_definition import SensorExecutionData


def main(out: Path) -> int:
    from pull_pipeline.config.loader import load_project
    from pull_pipeline.definitions import build_definitions

    with out.open("a") as lines:
        started, cpu = time.perf_counter(), time.process_time()
        defs = build_definitions(load_project())
        repo = defs.get_repository_def()
        emit(lines, event="built", seconds=time.perf_counter() - started,
             cpu_seconds=time.process_time() - cpu, sensors=len(repo.sensor_defs),
             schedules=len(repo.schedule_defs), jobs=len(repo.get_all_jobs()))
        resources = repo.get_top_level_resources()
        with dg.DagsterInstance.ephemeral() as instance:

            def sensor_tick(s: dg.SensorDefinition) -> SensorExecutionData:
                return s.evaluate_tick(
                    dg.build_sensor_context(instance=instance, repository_def=repo,
                                            sensor_name=s.name, resources=resources))

            def schedule_tick(s: dg.ScheduleDefinition, now: datetime) -> ScheduleExecutionData:
                return s.evaluate_tick(
                    dg.build_schedule_context(instance=instance, scheduled_execution_time=now,
                                              repository_def=repo, resources=resources))

            for sensor in repo.sensor_defs:
                tick(lines, "sensor", sensor.name, partial(sensor_tick, sensor))
            now = datetime.now(UTC)
            for schedule in repo.schedule_defs:
                tick(lines, "schedule", schedule.name, partial(schedule_tick, schedule, now))
    return 0


def tick(lines: IO[str], kind: str, name: str, evaluate: Callable[[], Any]) -> None:
    """Time one evaluation; an exception is recorded, not raised (the next tick still runs)."""
    emit(lines, event="start", kind=kind, name=name)
    started, cpu = time.perf_counter(), time.process_time()
    error = None
    requests = 0
    try:
        result = evaluate()
        requests = len(result.run_requests or [])
    except Exception as exc:  # noqa: BLE001 - reported with the figures
        error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc) else ''}"
    emit(lines, event="tick", kind=kind, name=name, seconds=time.perf_counter() - started,
         cpu_seconds=time.process_time() - cpu, run_requests=requests, error=error)


def summarize_ticks(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Counts, total and slowest per kind, and errors, from the lines `main` wrote.

    `unfinished` names the tick that was running when the process ended (killed)."""
    built = next((r for r in records if r["event"] == "built"), {})
    done = [r for r in records if r["event"] == "tick"]
    started = [r for r in records if r["event"] == "start"]
    errors = [r for r in done if r["error"]]
    result: dict[str, Any] = {
        "build_seconds": built.get("seconds"), "build_cpu_seconds": built.get("cpu_seconds"),
        "jobs": built.get("jobs"), "errors": len(errors),
        "first_error": f"{errors[0]['name']}: {errors[0]['error']}" if errors else None,
        "unfinished": started[-1]["name"] if len(started) > len(done) else None,
    }
    for kind in ("sensor", "schedule"):
        ticks = [r for r in done if r["kind"] == kind]
        slowest = max(ticks, key=lambda r: r["seconds"], default=None)
        result[f"{kind}s"] = {
            "count": built.get(f"{kind}s", 0), "evaluated": len(ticks),
            "total_seconds": sum(r["seconds"] for r in ticks),
            "total_cpu_seconds": sum(r["cpu_seconds"] for r in ticks),
            "max_seconds": slowest["seconds"] if slowest else 0.0,
            "slowest": slowest["name"] if slowest else None,
            "run_requests": sum(r["run_requests"] for r in ticks),
        }
    return result


def emit(lines: IO[str], **record: Any) -> None:
    lines.write(json.dumps(record) + "\n")
    lines.flush()


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
