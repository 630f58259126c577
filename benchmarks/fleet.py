"""Fleet-sized figures: `python -m benchmarks.fleet --sources 1,50,200,500` (also
`make bench-fleet SOURCES=...`).

For each N, a sources.yaml of N generated REST sources (`benchmarks.fleet_config`) is
written, and three things are measured, each in a fresh process killed after `--timeout`:

- code-location load: `dagster definitions validate -m pull_pipeline.definitions` (what the
  webserver, the daemon's code server and every run worker pay): wall time, CPU time
  (user + system, steadier than wall time on a shared machine), peak RSS, warnings printed;
- the code server: `dagster code-server start`'s CPU once it answers, and what serving the
  location to one client (as the webserver and the daemon fetch it) adds (`benchmarks.served`);
- ticks: every sensor and schedule evaluated once (`benchmarks.ticks`): total and slowest;
- a run worker: one run of `pull_fleet_0000` on a window with no rows, in a fresh
  `dagster api execute_run` process (`benchmarks.worker`): its CPU time is start-up, which
  must not grow with N (a worker builds only its run's sources), reported against the first N;
- backfill throughput, with the N sources plus the backfill pair configured: the same
  `--backfill-rows` rows materialized as one daily window of `backfill_daily`, and as a
  ranged run of `--backfill-windows` hourly windows of `backfill_hourly` (one run in one
  process, as the daemon launches each run of a backfill: `benchmarks.ranged`; the same
  Dagster start-up as the CLI's). Their ratio (ranged rows/s over
  single-window rows/s) is measured in the same run; both loads are checked exact (count
  and checksum) and a mismatch or a failed run exits with status 1.

    python -m benchmarks.fleet --sources 1,50,200 --json fleet.json
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks import fleet_config
from benchmarks.database import scratch_database, table_checksum
from benchmarks.materialize import (
    PROJECT_ROOT,
    dagster_cli,
    materialize,
    measure,
    prepare_instance,
)
from benchmarks.run import (
    API_KEY,
    DEFAULT_DSN,
    PAGE_SIZE,
    finish,
    machine,
    phases_of,
    reset_sink,
    say,
    tail,
    verify,
)
from benchmarks.served import served
from benchmarks.server import PagesServer
from benchmarks.ticks import summarize_ticks
from benchmarks.workload import Workload

HOUR = 3600
# A warning line, less the CLI's own notices that its commands are superseded by `dg`.
WARNING = re.compile(r"(\w+Warning): (?!Function `\w+_command` is superseded)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fleet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sources", default="1,50,200,500",
                        help="fleet sizes to measure, comma-separated")
    parser.add_argument("--history-days", type=int, default=90,
                        help="the generated sources' history: their start is this many days ago")
    parser.add_argument("--backfill-rows", type=int, default=1_000_000,
                        help="rows of the backfill (one day)")
    parser.add_argument("--backfill-windows", type=int, default=24,
                        help="hourly windows of the ranged run (2-24)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="backfill runs per path and size (medians reported)")
    parser.add_argument("--timeout", type=float, default=600,
                        help="seconds after which one measured process is killed")
    parser.add_argument("--skip-backfill", action="store_true",
                        help="measure the code location and the ticks only")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN,
                        help="admin DSN of the sink server; a database is created there")
    parser.add_argument("--database", default="pp_bench_fleet",
                        help="name of the database created (and dropped)")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs and stores here")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    args = parser.parse_args(argv)
    try:
        args.sources = [int(n) for n in args.sources.split(",") if n.strip()]
    except ValueError:
        parser.error("--sources takes numbers, e.g. 1,50,200")
    if not args.sources or min(args.sources) < 1:
        parser.error("--sources needs at least one size of 1 or more")
    if not 2 <= args.backfill_windows <= 24:
        parser.error("--backfill-windows must be 2-24 (hourly windows of one day)")
    return args


def backfill_workload(rows: int, windows: int) -> Workload:
    """`rows` readings spread evenly over the first `windows` hours of the day."""
    per_sensor = -(-rows // 200)
    return Workload(rows, step=max(1, windows * HOUR // per_sensor))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with ExitStack() as stack:
        fleet = Fleet.set_up(stack, args)
        for count in args.sources:
            fleet.measure(count)
        report = fleet.report()
    return finish(render(report), report, args.json, fleet.failures)


@dataclass
class Fleet:
    """The server, the sink database, the instance, and the figures per fleet size."""

    args: argparse.Namespace
    workload: Workload
    sink_dsn: str
    url: str
    workdir: Path
    env: dict[str, str]
    sizes: dict[int, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @classmethod
    def set_up(cls, stack: ExitStack, args: argparse.Namespace) -> Fleet:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pp_bench_fleet_")))
        workdir.mkdir(parents=True, exist_ok=True)
        sink_dsn = stack.enter_context(scratch_database(args.sink_dsn, args.database, args.keep))
        workload = backfill_workload(args.backfill_rows, args.backfill_windows)
        say(f"serialising pages: {workload.rows:,} rows as 1 daily and "
            f"{args.backfill_windows} hourly windows ...")
        start = int(workload.start.timestamp())
        windows = {workload.window(): workload.page_bodies(PAGE_SIZE)}
        for hour in range(args.backfill_windows):
            span = (start + hour * HOUR, start + (hour + 1) * HOUR)
            windows[span] = workload.page_bodies(PAGE_SIZE, span)
        url = stack.enter_context(PagesServer(windows, PAGE_SIZE, API_KEY)).url
        home = workdir / "dagster_home"
        prepare_instance(home)
        env = {"DAGSTER_HOME": str(home), "PULL_PIPELINE_HOME": str(workdir / "state"),
               "BENCH_API_KEY": API_KEY}
        return cls(args, workload, sink_dsn, url, workdir, env)

    def measure(self, count: int) -> None:
        """The code location, the ticks and the backfill with `count` sources configured."""
        sources = fleet_config.fleet_sources(count, self.url, self.args.history_days)
        config = fleet_config.write(self.workdir / f"fleet-{count}.yaml", self.sink_dsn,
                                    self.workdir, sources)
        env = {**self.env, "PULL_PIPELINE_CONFIG": str(config)}
        figures: dict[str, Any] = {"load": self.load(count, env)}
        figures["served"] = self.served(count, env)
        figures["ticks"] = self.ticks(count, env)
        figures["worker"] = self.worker(count, env)
        if not self.args.skip_backfill:
            sources |= fleet_config.backfill_sources(self.url, self.workload.partition_key)
            config = fleet_config.write(self.workdir / f"backfill-{count}.yaml", self.sink_dsn,
                                        self.workdir, sources)
            figures["backfill"] = self.backfill(count, {**self.env,
                                                        "PULL_PIPELINE_CONFIG": str(config)})
        self.sizes[count] = figures

    def load(self, count: int, env: dict[str, str]) -> dict[str, Any]:
        """`dagster definitions validate` in a fresh process."""
        log = self.workdir / f"load-{count}.log"
        run = measure([dagster_cli(), "definitions", "validate", "-m",
                       "pull_pipeline.definitions"], env, log, self.args.timeout)
        warnings = collections.Counter(warnings_in(log))
        result = {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                  "peak_rss_mb": run.peak_rss_mb, "warnings": sum(warnings.values()),
                  "warnings_by_category": dict(warnings),
                  "status": self.status(f"{count} sources: definitions validate", run, log)}
        say(f"{count} sources: load {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU, "
            f"{run.peak_rss_mb:.0f} MB, {result['warnings']} warnings ({result['status']})")
        return result

    def served(self, count: int, env: dict[str, str]) -> dict[str, Any]:
        """A code server's CPU for loading the location and for serving it once."""
        try:
            result = served({**os.environ, **env}, self.workdir / f"served-{count}.log")
        except Exception as exc:  # noqa: BLE001 - reported as a failure, the rest still runs
            self.failures.append(f"{count} sources: code server: {exc}")
            return {"status": "failed"}
        say(f"{count} sources: code server loaded in {result['load_cpu_seconds']:.1f} s CPU, "
            f"served {result['jobs']} jobs in {result['serve_cpu_seconds']:.1f} s CPU "
            f"({result['serve_seconds']:.1f} s wall)")
        return {**result, "status": "ok"}

    def ticks(self, count: int, env: dict[str, str]) -> dict[str, Any]:
        """Every sensor and schedule once, in a fresh process (`benchmarks.ticks`)."""
        out = self.workdir / f"ticks-{count}.jsonl"
        out.unlink(missing_ok=True)
        log = self.workdir / f"ticks-{count}.log"
        run = measure([sys.executable, "-m", "benchmarks.ticks", str(out)], env, log,
                      self.args.timeout)
        lines = out.read_text().splitlines() if out.exists() else []
        result = summarize_ticks([json.loads(line) for line in lines])
        result |= {"process_seconds": run.seconds, "peak_rss_mb": run.peak_rss_mb,
                   "status": self.status(f"{count} sources: ticks", run, log)}
        if result["errors"]:
            self.failures.append(f"{count} sources: {result['errors']} tick(s) raised, e.g. "
                                 f"{result['first_error']}")
        sensors = result["sensors"]
        say(f"{count} sources: {sensors['evaluated']}/{sensors['count']} sensors in "
            f"{sensors['total_seconds']:.1f} s (max {sensors['max_seconds']:.2f} s, "
            f"{sensors['slowest']}) ({result['status']})")
        return result

    def worker(self, count: int, env: dict[str, str]) -> dict[str, Any]:
        """A run worker for one window of one source, in a fresh process (`benchmarks.worker`)."""
        log = self.workdir / f"worker-{count}.log"
        created = subprocess.run(
            [sys.executable, "-m", "benchmarks.worker", "fleet_0000",
             fleet_config.first_window(self.args.history_days)],
            env={**os.environ, **env}, capture_output=True, text=True, cwd=PROJECT_ROOT,
            timeout=self.args.timeout, check=False)
        if created.returncode != 0:
            self.failures.append(f"{count} sources: creating the worker's run failed: "
                                 f"{created.stderr[-500:]}")
            return {"status": "failed"}
        run = measure(json.loads(created.stdout), env, log, self.args.timeout)
        result = {"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                  "peak_rss_mb": run.peak_rss_mb,
                  "status": self.status(f"{count} sources: run worker", run, log)}
        say(f"{count} sources: run worker {run.seconds:.1f} s wall, {run.cpu_seconds:.1f} s CPU, "
            f"{run.peak_rss_mb:.0f} MB ({result['status']})")
        return result

    def backfill(self, count: int, env: dict[str, str]) -> dict[str, Any]:
        """The same rows as one daily window and as a ranged run of hourly windows."""
        windows = self.args.backfill_windows
        key = self.workload.partition_key
        paths = {"single": (fleet_config.BACKFILL_SOURCES["daily"], key),
                 "ranged": (fleet_config.BACKFILL_SOURCES["hourly"],
                            f"{key}-00:00...{key}-{windows - 1:02d}:00")}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in paths}
        for round_ in range(1, self.args.repeat + 1):
            for name, (source, partition) in paths.items():
                reset_sink(self.sink_dsn)
                log = self.workdir / f"backfill-{count}-{name}-{round_}.log"
                run = materialize(source, partition, env, log, self.args.timeout)
                if run.returncode != 0:
                    self.failures.append(f"{count} sources: backfill {name} failed (exit "
                                         f"{run.returncode}), see {log}")
                    say(tail(log))
                    continue
                self.failures += verify(f"{count} sources: backfill {name}",
                                        self.workload.checksum(), table_checksum(
                                            self.sink_dsn, fleet_config.SINK_TABLE,
                                            "WHERE source = %s", (source,)))
                runs[name].append({"seconds": run.seconds, "cpu_seconds": run.cpu_seconds,
                                   "peak_rss_mb": run.peak_rss_mb,
                                   "pipeline_seconds": phases_of(run)["pipeline"],
                                   "warnings": len(warnings_in(log))})
                say(f"{count} sources: backfill {name}: {run.seconds:.1f} s, "
                    f"{run.peak_rss_mb:.0f} MB")
        result: dict[str, Any] = {"rows": self.workload.rows, "windows": windows, "runs": runs}
        for name, measured in runs.items():
            if measured:
                result[name] = {what: statistics.median(r[what] for r in measured)
                                for what in measured[0]}
                result[name]["rows_per_second"] = self.workload.rows / result[name]["seconds"]
        if "single" in result and "ranged" in result:
            result["ranged_vs_single"] = result["single"]["seconds"] / result["ranged"]["seconds"]
            result["ranged_vs_single_pipeline"] = (result["single"]["pipeline_seconds"]
                                                   / result["ranged"]["pipeline_seconds"])
        return result

    def status(self, what: str, run: Any, log: Path) -> str:
        """"ok", or why not (also recorded as a failure)."""
        if run.timed_out:
            self.failures.append(f"{what}: killed after {self.args.timeout:.0f} s, see {log}")
            return f"timed out after {self.args.timeout:.0f} s"
        if run.returncode != 0:
            self.failures.append(f"{what}: exit {run.returncode}, see {log}")
            say(tail(log))
            return f"failed (exit {run.returncode})"
        return "ok"

    def report(self) -> dict[str, Any]:
        return {
            "sizes": self.sizes,
            "history_days": self.args.history_days,
            "backfill": {"rows": self.workload.rows, "windows": self.args.backfill_windows,
                         "span_hours": self.workload.rows // self.workload.sensors
                         * self.workload.step / HOUR, "repeat": self.args.repeat},
            "timeout": self.args.timeout,
            "machine": machine(self.sink_dsn),
            "exact": not any("checksum" in failure for failure in self.failures),
            "failures": self.failures,
        }


def warnings_in(log: Path) -> list[str]:
    """The category of every warning a process printed (Python prints each distinct one once)."""
    return WARNING.findall(log.read_text(errors="replace"))


def render(report: dict[str, Any]) -> str:
    """One row per fleet size; the backfill's columns when it ran."""
    head = ("| sources | load CPU s | load wall s | load RSS MB | code server load + serve "
            "CPU s | run warnings | sensors | ticks total s | slowest tick s | schedules s | "
            "run worker CPU s (vs first) | single window rows/s | ranged rows/s | "
            "ranged vs single |")
    lines = [head, "|" + "---:|" * 14]
    sizes: list[dict[str, Any]] = list(report["sizes"].values())
    first_worker = sizes[0].get("worker", {}).get("cpu_seconds") if sizes else None
    for count, figures in report["sizes"].items():
        load, ticks = figures["load"], figures["ticks"]
        sensors, schedules = ticks["sensors"], ticks["schedules"]
        backfill = figures.get("backfill", {})
        cells = [str(count), f"{load['cpu_seconds']:.1f}", f"{load['seconds']:.1f}",
                 f"{load['peak_rss_mb']:.0f}", _served(figures.get("served")),
                 str(backfill["single"]["warnings"]) if "single" in backfill else "—",
                 f"{sensors['evaluated']}/{sensors['count']}", f"{sensors['total_seconds']:.1f}",
                 f"{sensors['max_seconds']:.2f} ({sensors['slowest']})",
                 f"{schedules['total_seconds']:.2f}", _worker(figures.get("worker"), first_worker),
                 _rate(backfill.get("single")), _rate(backfill.get("ranged")),
                 _pct(backfill.get("ranged_vs_single"))]
        lines.append("| " + " | ".join(cells) + " |")
    backfill, machine_ = report["backfill"], report["machine"]
    lines.append("")
    lines.append(f"backfill: {backfill['rows']:,} rows over {backfill['span_hours']:.1f} h, "
                 f"as 1 daily window or a ranged run of {backfill['windows']} hourly windows "
                 f"(median of {backfill['repeat']}); generated sources' history: "
                 f"{report['history_days']} days; {machine_['cpu']} x{machine_['cores']}, "
                 f"{machine_['postgres']}")
    return "\n".join(lines)


def _served(item: dict[str, Any] | None) -> str:
    if not item or item.get("status") != "ok":
        return "—"
    return f"{item['load_cpu_seconds']:.1f} + {item['serve_cpu_seconds']:.1f}"


def _rate(item: dict[str, float] | None) -> str:
    return "—" if not item else f"{item['rows_per_second']:,.0f}"


def _worker(item: dict[str, Any] | None, first: float | None) -> str:
    if not item or "cpu_seconds" not in item:
        return "—"
    ratio = f" ({item['cpu_seconds'] / first:.2f}x)" if first else ""
    return f"{item['cpu_seconds']:.1f}{ratio}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"



if __name__ == "__main__":
    sys.exit(main())
