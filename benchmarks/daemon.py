"""The real daemon against a generated fleet: `python -m benchmarks.daemon --sources 500`
(also `make bench-daemon SOURCES=500`).

Starts `dagster-daemon run` with the shipped dagster.yaml (threaded sensors and schedules)
on N generated REST sources (`benchmarks.fleet_config`, one loopback server that answers
every window with an empty page), lets it run `--minutes`, then reads every sensor's ticks
from the instance: a per-minute timeline (ticks, mean tick, runs requested), and over the
last `--steady-minutes`, per kind, how many ticks, the longest time without one and the
slowest tick. The first minutes are left out of that: the first round of recovery creates
runs for every source's missing windows, which takes the daemon minutes at 500 sources. The
runs the sensors request stay queued (`max_concurrent_runs: 0`), so the figures are the
ticks' alone on this machine; a fleet's runs are measured by `benchmarks.fleet`.
`--storage postgres` puts the instance in a scratch database on the `--sink-dsn` server with
deploy/dagster.yaml's storage block (dagster-postgres, pooled by
`pull_pipeline.defs.instance_storage`) instead of SQLite; `--storage dagster-postgres` with
plain dagster-postgres, to compare.
Exits 1 when a per-minute sensor went more than two minutes without a tick in that span, or
when a tick failed (a failing tick is quick, and would otherwise pass for a fast one).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import yaml

from benchmarks import fleet_config
from benchmarks.database import scratch_database
from benchmarks.instance import add_storage_option, storage_settings
from benchmarks.materialize import PROJECT_ROOT, open_instance, prepare_instance
from benchmarks.run import API_KEY, DEFAULT_DSN, PAGE_SIZE, say
from benchmarks.server import PagesServer


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.daemon", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", type=int, default=500, help="generated sources")
    parser.add_argument("--minutes", type=float, default=12, help="how long the daemon runs")
    parser.add_argument("--steady-minutes", type=float, default=4,
                        help="the last minutes, over which every per-minute sensor must tick")
    parser.add_argument("--history-days", type=int, default=90)
    parser.add_argument("--code-server", choices=("standalone", "daemon"), default="standalone",
                        help="standalone: a long-lived `dagster code-server start` that the "
                        "daemon connects to (the README's fleet set-up); daemon: the daemon "
                        "starts its own, as `dagster dev` and workspace.yaml's default do")
    add_storage_option(parser)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN)
    parser.add_argument("--database", default="pp_bench_daemon")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and the instance here")
    return parser.parse_args(argv)


@contextmanager
def code_server(env: dict[str, str], log: Path) -> Iterator[tuple[int, int]]:
    """`dagster code-server start` on a free port, once it has loaded the location: its port
    and its process id."""
    from dagster._core.errors import DagsterUserCodeUnreachableError
    from dagster._grpc.client import DagsterGrpcClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    with log.open("wb") as out:
        server = subprocess.Popen(
            [str(Path(sys.executable).parent / "dagster"), "code-server", "start", "-m",
             "pull_pipeline.definitions", "-h", "127.0.0.1", "-p", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=PROJECT_ROOT,
            start_new_session=True)
        try:
            client, deadline = DagsterGrpcClient(port=port, host="127.0.0.1"), time.time() + 600
            while True:
                try:
                    client.list_repositories()
                    break
                except DagsterUserCodeUnreachableError:
                    if server.poll() is not None or time.time() > deadline:
                        raise RuntimeError(f"the code server did not load, see {log}") from None
                    time.sleep(1)
            say(f"code server loaded on port {port}")
            yield port, server.pid
        finally:
            stop(server)


# The daemon stops in about a second; a code server that launched a run waits out a minute
# of its own before exiting, and nothing of it is measured, so it is killed sooner.
STOP_GRACE_SECONDS = 10


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop a process and its children (it leads its own session)."""
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def instigators(config: Path) -> dict[str, int | None]:
    """Every sensor of the location with how often it is meant to tick (its
    `minimum_interval_seconds`), and every schedule (None), as the definitions declare them."""
    from dagster._core.definitions.sensor_definition import DEFAULT_SENSOR_DAEMON_INTERVAL

    from pull_pipeline.config.loader import load_project
    from pull_pipeline.definitions import build_definitions

    repository = build_definitions(load_project(config, contain=True)).get_repository_def()
    return {**{schedule.name: None for schedule in repository.schedule_defs},
            **{sensor.name: sensor.minimum_interval_seconds or DEFAULT_SENSOR_DAEMON_INTERVAL
               for sensor in repository.sensor_defs}}


def kind_of(name: str, interval: int | None) -> str:
    """`recover`, `freshness`, ... for a generated source's sensor; the name of a
    location-wide one; `schedule` for every schedule."""
    return "schedule" if interval is None else name.split("_fleet_")[0]


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
        # The daemon's and summarize's: DAGSTER_PG_* go into os.environ.
        settings.update(stack.enter_context(
            storage_settings(args.storage, args.sink_dsn, f"{args.database}_instance")))
        (home / "dagster.yaml").write_text(yaml.safe_dump(settings))
        env = {**os.environ, "DAGSTER_HOME": str(home), "PULL_PIPELINE_CONFIG": str(config),
               "PULL_PIPELINE_HOME": str(workdir / "state"), "BENCH_API_KEY": API_KEY}
        if args.code_server == "standalone":
            port, _ = stack.enter_context(code_server(env, workdir / "code_server.log"))
            entry: dict[str, Any] = {"grpc_server": {"host": "127.0.0.1", "port": port,
                                                     "location_name": "pull_pipeline"}}
        else:
            entry = {"python_module": {"module_name": "pull_pipeline.definitions",
                                       "working_directory": str(PROJECT_ROOT),
                                       "location_name": "pull_pipeline"}}
        workspace = workdir / "workspace.yaml"
        workspace.write_text(yaml.safe_dump({"load_from": [entry]}))
        log = workdir / "daemon.log"
        say(f"{args.sources} sources: dagster-daemon for {args.minutes:g} minutes, code server "
            f"{args.code_server}, {args.storage} instance storage, log {log}")
        started = time.time()
        with log.open("wb") as out:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(workspace)],
                env=env, stdout=out, stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)
            try:
                time.sleep(args.minutes * 60)
            finally:
                stop(daemon)
        report = summarize(home, instigators(config), started, args)
        report["code_server_restarts"] = log.read_text(errors="replace").count(
            "No heartbeat received")
        report["storage"] = args.storage
    text = render(report)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 1 if report["failures"] or report["failed_ticks"] else 0


def summarize(home: Path, declared: dict[str, int | None], started: float,
              args: argparse.Namespace) -> dict[str, Any]:
    """A per-minute timeline of all ticks, and every sensor's ticks over the last
    `--steady-minutes`, by kind (the first minutes are the first round of recovery and
    freshness, when runs are created for every source's missing windows)."""
    import dagster as dg
    from dagster._core.definitions.run_request import InstigatorType
    from dagster._core.scheduler.instigation import TickStatus

    with open_instance(home) as instance:
        states = [*instance.all_instigator_state(instigator_type=InstigatorType.SENSOR),
                  *instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)]
        ticked = {state.instigator_name: instance.get_ticks(state.instigator_origin_id,
                                                            state.selector_id, limit=10_000)
                  for state in states}
        queued = len(instance.get_run_ids(dg.RunsFilter(statuses=[dg.DagsterRunStatus.QUEUED])))
    until = started + args.minutes * 60  # when the daemon was told to stop
    # One that never ticked has none. Ticks that ended after `until` are the daemon's shutdown
    # failing what its threads still had queued, not the fleet's (a schedule tick's timestamp
    # is its scheduled time, so it may look older).
    ticks = {name: [tick for tick in ticked.get(name, [])
                    if (tick.end_timestamp or tick.timestamp) < until]
             for name in declared}
    every = [tick for history in ticks.values() for tick in history]
    first = min((tick.timestamp for tick in every), default=started)
    steady_from = max(first, until - args.steady_minutes * 60)
    timeline: dict[int, dict[str, float]] = {}
    for tick in every:
        minute = timeline.setdefault(int((tick.timestamp - started) // 60),
                                     {"ticks": 0, "failed": 0, "seconds": 0.0, "runs": 0})
        minute["ticks"] += 1
        minute["failed"] += tick.status == TickStatus.FAILURE
        minute["seconds"] += (tick.end_timestamp or tick.timestamp) - tick.timestamp
        minute["runs"] += len(tick.run_ids)
    kinds: dict[str, dict[str, Any]] = {}
    failures: list[str] = []
    for name, history in ticks.items():
        interval = declared[name]
        kind = kind_of(name, interval)
        steady = [t for t in history if t.timestamp >= steady_from]
        times = sorted(t.timestamp for t in steady)
        durations = [t.end_timestamp - t.timestamp for t in steady if t.end_timestamp]
        gaps = [b - a for a, b in itertools.pairwise([steady_from, *times, until])]
        item = kinds.setdefault(kind, {"interval_s": interval, "sensors": 0, "never": 0,
                                       "ticks": [], "max_gap_s": 0.0, "max_tick_s": 0.0})
        item["sensors"] += 1
        item["never"] += not history
        item["ticks"].append(len(times))
        item["max_tick_s"] = max(item["max_tick_s"], *durations, 0.0)
        if interval is not None and interval <= 60:
            item["max_gap_s"] = max(item["max_gap_s"], *gaps)
            if max(gaps) > 2 * 60:
                failures.append(f"{name}: {len(times)} ticks, {max(gaps):.0f} s without one")
    for item in kinds.values():
        counts = item.pop("ticks")
        item["ticks_median"] = statistics.median(counts) if counts else 0
        item["ticks_min"] = min(counts, default=0)
    return {"sources": args.sources, "minutes": args.minutes, "instigators": len(ticks),
            "code_server": args.code_server, "steady_minutes": (until - steady_from) / 60,
            "first_tick_after_s": first - started,
            "sensors": sum(1 for t in ticks.values() if t), "kinds": kinds,
            "timeline": {str(m): v for m, v in sorted(timeline.items())},
            "queued_runs": queued,
            "failed_ticks": sum(tick.status == TickStatus.FAILURE for tick in every),
            "failures": failures}


def render(report: dict[str, Any]) -> str:
    lines = [(f"{report['sources']} sources, {report['sensors']} sensors and schedules ticked; "
             f"first tick {report['first_tick_after_s']:.0f} s after start; "
             f"{report['queued_runs']} runs queued; {report['failed_ticks']} ticks failed"), "",
             "| minute | ticks | failed | mean tick s | runs requested |",
             "|---:|---:|---:|---:|---:|"]
    for minute, item in report["timeline"].items():
        lines.append(f"| {minute} | {item['ticks']:.0f} | {item['failed']:.0f} | "
                     f"{item['seconds'] / max(item['ticks'], 1):.2f} | {item['runs']:.0f} |")
    lines += ["", f"over the last {report['steady_minutes']:.1f} minutes:", "",
              ("| kind | interval s | count | never ticked | ticks (median, min) | longest "
              "without a tick s | slowest tick s |"), "|---|---:|---:|---:|---:|---:|---:|"]
    for kind, item in sorted(report["kinds"].items()):
        lines.append(f"| {kind} | {item['interval_s'] or '—'} | {item['sensors']} | "
                     f"{item['never']} | {item['ticks_median']:g}, {item['ticks_min']} | "
                     f"{item['max_gap_s']:.0f} | {item['max_tick_s']:.1f} |")
    lines.append(f"\ncode server: {report['code_server']}, shut down for want of the daemon's "
                 f"heartbeat {report['code_server_restarts']} times; per-minute sensors "
                 f"more than 2 minutes without a tick: {len(report['failures'])}")
    lines += [f"  {failure}" for failure in report["failures"][:10]]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
