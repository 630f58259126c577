"""A long backfill against one big window of the same rows: `python -m benchmarks.backfill`.

The same `--rows` readings are materialized twice through `raw` + `readings`, each run a
fresh `dagster asset materialize` process (start-up and Dagster's event writing included):

- as ONE hourly window holding all the rows (`bench_one`);
- as `--windows` hourly windows of `rows / windows` rows each (`bench_many`): one ranged
  run, as a backfill runs under the assets' single-run policy (or, with
  `--windows-per-run`, runs of that many windows one after the other).

Rows come from a `kind: python` source (`benchmarks.backfill:fetch`) that generates them in
the process, so the figures are the pipeline's and Dagster's, not an API's. It prints rows/s
for both, their ratio, the peak RSS of the largest process, and the Dagster events written
per window; the sink is checked to hold every row (exit status 1 otherwise). Dagster's
instance is the shipped SQLite one, or with `--storage postgres` deploy/dagster.yaml's pooled
PostgreSQL storage (`benchmarks.instance`), where a fleet keeps its events.

    python -m benchmarks.backfill --rows 2000000 --windows 500 --storage postgres
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pyarrow as pa
import yaml

from benchmarks.database import scratch_database
from benchmarks.instance import add_storage_option, storage_settings
from benchmarks.materialize import (
    PROJECT_ROOT,
    dagster_cli,
    measure,
    open_instance,
    prepare_instance,
)
from benchmarks.run import DEFAULT_DSN, say

START = datetime(2024, 1, 1, tzinfo=UTC)
SENSORS = 200
PAGE_ROWS = 100_000


def fetch(start: datetime, end: datetime, rows: int) -> Iterator[pa.Table]:
    """`rows` readings of `SENSORS` sensors spread evenly over the window, in 100k-row pages
    (times in ms, values as the text a JSON API sends)."""
    per_sensor = max(rows // SENSORS, 1)
    step = (end - start) / timedelta(milliseconds=1) / per_sensor
    base = int(start.timestamp() * 1000)
    times = base + (np.arange(per_sensor) * step).astype(np.int64)
    tags = np.array([f"sensor_{n:03d}" for n in range(SENSORS)])
    for first in range(0, per_sensor * SENSORS, PAGE_ROWS):
        index = np.arange(first, min(first + PAGE_ROWS, per_sensor * SENSORS))
        sensor, slot = index % SENSORS, index // SENSORS
        yield pa.table({
            "sensor_tag": tags[sensor],
            "relative_time": times[slot].astype(str),
            "sensor_value": ((slot % 1000) / 10 + sensor).astype(str),
        })


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.backfill", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2_000_000)
    parser.add_argument("--windows", type=int, default=500)
    parser.add_argument("--windows-per-run", type=int, help="default: all in one run")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN, help="admin DSN of the sink server")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--database", default="pp_bench_backfill",
                        help="scratch databases: this one for the sink, <this>_instance for "
                        "--storage postgres")
    parser.add_argument("--workdir", type=Path, help="keep the config, logs and landing here")
    add_storage_option(parser)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.windows_per_run = args.windows_per_run or args.windows
    with ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pp-backfill-")))
        workdir.mkdir(parents=True, exist_ok=True)
        dsn = stack.enter_context(scratch_database(args.sink_dsn, args.database))
        storage = stack.enter_context(
            storage_settings(args.storage, args.sink_dsn, f"{args.database}_instance"))
        home = workdir / "dagster_home"
        prepare_instance(home, storage)
        config = write_config(workdir, dsn, args.rows, args.windows)
        # PYTHONPATH: the `dagster` script's process must import `benchmarks.backfill:fetch`.
        env = {"DAGSTER_HOME": str(home), "PULL_PIPELINE_CONFIG": str(config),
               "PYTHONPATH": str(PROJECT_ROOT)}
        single = run_ranges(workdir, env, "bench_one", [(key(0), key(0))])
        chunks = [(key(first), key(min(first + args.windows_per_run, args.windows) - 1))
                  for first in range(0, args.windows, args.windows_per_run)]
        many = run_ranges(workdir, env, "bench_many", chunks)
        failures = check_rows(dsn, {"bench_one": args.rows, "bench_many": expected(args)})
        many["events_per_window"] = events_per_window(home, args.windows)
    single["rows_per_second"] = args.rows / single["seconds"]
    many["rows_per_second"] = expected(args) / many["seconds"]
    report = {"rows": args.rows, "windows": args.windows, "storage": args.storage,
              "windows_per_run": args.windows_per_run, "single": single, "backfill": many,
              "ratio": many["rows_per_second"] / single["rows_per_second"]}
    say(render(report))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    for failure in failures:
        say(f"FAILED: {failure}")
    return 1 if failures or single["failed"] or many["failed"] else 0


def key(hour: int) -> str:
    return (START + timedelta(hours=hour)).strftime("%Y-%m-%d-%H:%M")


def expected(args: argparse.Namespace) -> int:
    """Rows the windows hold: each rounds its share down to whole readings per sensor."""
    rows: int = args.rows
    windows: int = args.windows
    return max(rows // windows // SENSORS, 1) * SENSORS * windows


def write_config(workdir: Path, dsn: str, rows: int, windows: int) -> Path:
    def source(per_window: int) -> dict[str, Any]:
        return {"kind": "python", "function": "benchmarks.backfill:fetch",
                "options": {"rows": per_window}, "time_unit": "ms",
                "partitions": {"cadence": "hourly", "start": START.isoformat()}}

    config = {"sink": {"dsn": dsn, "table": "bench_readings"},
              "landing": {"path": str(workdir / "landing")},
              "sources": {"bench_one": source(rows), "bench_many": source(rows // windows)}}
    path = workdir / "sources.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_ranges(workdir: Path, env: dict[str, str], source: str,
               ranges: list[tuple[str, str]]) -> dict[str, Any]:
    """Materialize each range as one run, one after the other; totals and the worst peak."""
    seconds = cpu = peak = 0.0
    failed = False
    for number, (first, last) in enumerate(ranges):
        option = ["--partition", first] if first == last else [
            "--partition-range", f"{first}...{last}"]
        log = workdir / f"{source}-{number}.log"
        run = measure([dagster_cli(), "asset", "materialize", "-m", "pull_pipeline.definitions",
                       "--select", f"{source}/raw,{source}/readings", *option], env, log)
        seconds, cpu, peak = seconds + run.seconds, cpu + run.cpu_seconds, max(peak, run.peak_rss_mb)
        if run.returncode:
            failed = True
            say(f"{source} {first}...{last} failed; see {log}")
            say(log.read_text()[-3000:])
            break
    return {"runs": len(ranges), "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak,
            "failed": failed}


def check_rows(dsn: str, wanted: dict[str, int]) -> list[str]:
    failures = []
    with psycopg.connect(dsn) as conn:
        for source, rows in wanted.items():
            (count,) = conn.execute("SELECT count(*) FROM bench_readings WHERE source = %s",
                                    (source,)).fetchone() or (0,)
            if count != rows:
                failures.append(f"{source}: the sink holds {count} rows, expected {rows}")
    return failures


def events_per_window(home: Path, windows: int) -> float:
    """Events Dagster stored for `bench_many`'s runs (planned ones included), per window."""
    with open_instance(home) as instance:
        runs = [r for r in instance.get_runs() if "bench_many" in str(r.asset_selection)]
        return sum(len(instance.all_logs(run.run_id)) for run in runs) / windows


def render(report: dict[str, Any]) -> str:
    single, many = report["single"], report["backfill"]
    lines = [(f"{report['rows']:,} rows: one window vs {report['windows']} hourly windows "
              f"({many['runs']} runs of up to {report['windows_per_run']}), "
              f"{report['storage']} instance storage")]
    for name, figures in (("one window", single), ("backfill", many)):
        lines.append(f"  {name:<11} {figures['seconds']:7.1f} s  {figures['rows_per_second']:>9,.0f}"
                     f" rows/s  cpu {figures['cpu_seconds']:6.1f} s  peak RSS "
                     f"{figures['peak_rss_mb']:.0f} MB")
    lines.append(f"  backfill / one window: {report['ratio']:.0%}; Dagster events per window: "
                 f"{many['events_per_window']:.2f}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
