"""The real daemon against a generated fleet: `python -m benchmarks.daemon --sources 500`
(also `make bench-daemon SOURCES=500`).

Starts `dagster-daemon run` with the shipped dagster.yaml (threaded sensors and schedules)
on N generated REST sources (`benchmarks.fleet_config`, one loopback server that answers
every window with an empty page), lets it run `--minutes`, then reads every sensor's ticks
from the instance: how many, the largest gap between two, the slowest tick. The first
minute after the first tick is left out (the daemon's code server has just loaded). The
runs the sensors request stay queued (`max_concurrent_runs: 0`), so the figures are the
ticks' alone on this machine; a fleet's runs are measured by `benchmarks.fleet`.
Exits 1 when a per-minute sensor ticked less than once every two minutes, or never.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml

from benchmarks import fleet_config
from benchmarks.database import scratch_database
from benchmarks.materialize import PROJECT_ROOT, prepare_instance
from benchmarks.run import API_KEY, DEFAULT_DSN, PAGE_SIZE, say
from benchmarks.server import PagesServer

# Sensor name prefixes and how often each kind is meant to tick (minimum_interval_seconds).
INTERVALS = {"recover_": 60, "freshness_": 60, "config_": 60, "apply_pool_limits": 60,
             "alert_on_run_failure": 30, "archive_": 900, "sink_health": 300}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=500, help="generated sources")
    parser.add_argument("--minutes", type=float, default=6, help="how long the daemon runs")
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN)
    parser.add_argument("--database", default="pp_bench_daemon")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and the instance here")
    return parser.parse_args(argv)


def interval_of(sensor: str) -> int | None:
    return next((seconds for prefix, seconds in INTERVALS.items() if sensor.startswith(prefix)),
                None)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pp_bench_daemon_")))
        workdir.mkdir(parents=True, exist_ok=True)
        dsn = stack.enter_context(scratch_database(args.sink_dsn, args.database, False))
        url = stack.enter_context(PagesServer({}, PAGE_SIZE, API_KEY)).url
        config = fleet_config.write(workdir / "sources.yaml", dsn, workdir,
                                    fleet_config.fleet_sources(args.sources, url, args.history_days))
        home = workdir / "dagster_home"
        prepare_instance(home)
        settings = yaml.safe_load((home / "dagster.yaml").read_text())
        settings["concurrency"]["runs"]["max_concurrent_runs"] = 0  # ticks only: runs stay queued
        (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        workspace = workdir / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [{"python_module": {
            "module_name": "pull_pipeline.definitions", "working_directory": str(PROJECT_ROOT),
            "location_name": "pull_pipeline"}}]}))
        env = {**os.environ, "DAGSTER_HOME": str(home), "PULL_PIPELINE_CONFIG": str(config),
               "PULL_PIPELINE_HOME": str(workdir / "state"), "BENCH_API_KEY": API_KEY}
        log = workdir / "daemon.log"
        say(f"{args.sources} sources: dagster-daemon for {args.minutes:g} minutes, log {log}")
        started = time.time()
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
            try:
                time.sleep(args.minutes * 60)
            finally:
                os.killpg(daemon.pid, signal.SIGTERM)
                try:
                    daemon.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    os.killpg(daemon.pid, signal.SIGKILL)
        report = summarize(home, started, args)
    text = render(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


def summarize(home: Path, started: float, args: argparse.Namespace) -> dict[str, Any]:
    """Every sensor's ticks after the first minute, by kind."""
    import dagster as dg
    from dagster._core.definitions.run_request import InstigatorType

    with dg.DagsterInstance.from_config(str(home)) as instance:
        states = [*instance.all_instigator_state(instigator_type=InstigatorType.SENSOR),
                  *instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)]
        ticks = {state.instigator_name: instance.get_ticks(state.instigator_origin_id,
                                                           state.selector_id, limit=10_000)
                 for state in states}
        queued = len(instance.get_run_ids(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])))
    stamps = [tick.timestamp for history in ticks.values() for tick in history]
    first = min(stamps, default=started)
    steady_from, until = first + 60, started + args.minutes * 60
    kinds: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, history in ticks.items():
        interval = interval_of(name)
        kind = next((p.rstrip("_") for p in INTERVALS if name.startswith(p)),
                    "schedule" if name.endswith("_schedule") else "other")
        times = sorted(t.timestamp for t in history if t.timestamp >= steady_from)
        durations = [t.end_timestamp - t.timestamp for t in history if t.end_timestamp]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        item = kinds.setdefault(kind, {"interval_s": interval, "sensors": 0, "never": 0,
                                       "ticks": [], "max_gap_s": 0.0, "max_tick_s": 0.0})
        item["sensors"] += 1
        item["never"] += not history
        item["ticks"].append(len(times))
        item["max_gap_s"] = max(item["max_gap_s"], *gaps, 0.0)
        item["max_tick_s"] = max(item["max_tick_s"], *durations, 0.0)
        if interval == 60 and (not history or max(gaps, default=0) > 120):
            failures.append(f"{name}: {len(times)} ticks, largest gap {max(gaps, default=0):.0f} s")
    for item in kinds.values():
        counts = item.pop("ticks")
        item["ticks_median"] = statistics.median(counts) if counts else 0
        item["ticks_min"] = min(counts, default=0)
    return {"sources": args.sources, "minutes": args.minutes, "instigators": len(ticks),
            "steady_minutes": max(0.0, (until - steady_from) / 60),
            "first_tick_after_s": first - started, "sensors": sum(1 for t in ticks.values() if t),
            "kinds": kinds,
            "queued_runs": queued, "failures": failures}


def render(report: dict[str, Any]) -> str:
    lines = [(f"{report['sources']} sources, {report['sensors']} sensors and schedules ticked; first tick "
             f"{report['first_tick_after_s']:.0f} s after start; counted over the last "
             f"{report['steady_minutes']:.1f} minutes; {report['queued_runs']} runs queued"),
             "", ("| kind | interval s | count | never ticked | ticks (median, min) "
             "| largest gap s | slowest tick s |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, item in sorted(report["kinds"].items()):
        lines.append(f"| {kind} | {item['interval_s'] or '—'} | {item['sensors']} | "
                     f"{item['never']} | {item['ticks_median']:g}, {item['ticks_min']} | "
                     f"{item['max_gap_s']:.0f} | {item['max_tick_s']:.1f} |")
    lines.append(f"\nper-minute sensors late or never: {len(report['failures'])}")
    lines += [f"  {failure}" for failure in report["failures"][:10]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
