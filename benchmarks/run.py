"""Throughput and memory benchmark: `python -m benchmarks.run` (also `make bench`).

One window of `--rows` readings (default 1,000,000 = 200 sensors x 5,000 s) is generated
deterministically, served by a loopback REST server and held in a source PostgreSQL table,
then materialized through the project's real assets (`<source>/raw` and
`<source>/readings`) in a fresh `dagster asset materialize` process per kind. In the same
run the COPY baseline (binary COPY of the rows already in memory, into a table with
PRIMARY KEY (sensor_tag, ts) and into one with no index) is measured on the sink server.

Every materialization is verified: the sink must hold exactly the generated rows (count
and checksum, computed on both sides). A mismatch or a failed run exits with status 1.

    python -m benchmarks.run --rows 1000000 --kinds rest,sql --repeat 3 --json out.json
    python -m benchmarks.run --sink-dsn postgresql://postgres@127.0.0.1:5433/postgres
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from benchmarks.database import (
    SOURCE_TABLE,
    copy_baseline,
    fill_source,
    has_timescale,
    scratch_database,
    table_checksum,
)
from benchmarks.materialize import Materialization, materialize, prepare_instance
from benchmarks.server import PagesServer
from benchmarks.workload import Checksum, Workload

DEFAULT_DSN = os.environ.get(
    "PULL_PIPELINE_BENCH_DSN",
    os.environ.get("PULL_PIPELINE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"),
)
PAGE_SIZE = 10_000
SINK_TABLE = "bench_readings"
API_KEY = "bench-key"
KINDS = ("rest", "sql")
BASELINE_DDL = {
    "copy_pk": "sensor_tag text NOT NULL, ts timestamptz NOT NULL, "
               "sensor_value double precision NOT NULL, PRIMARY KEY (sensor_tag, ts)",
    "copy_noindex": "sensor_tag text NOT NULL, ts timestamptz NOT NULL, "
                    "sensor_value double precision NOT NULL",
}


@dataclass
class Measured:
    """The repeated measurements of one path (a source kind or a baseline)."""

    name: str
    seconds: list[float] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    phases: list[dict[str, float]] = field(default_factory=list)

    def median(self, values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    def phase(self, name: str) -> float | None:
        return self.median([p[name] for p in self.phases if name in p])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the window")
    parser.add_argument("--kinds", default="rest,sql", help="source kinds, comma-separated")
    parser.add_argument("--repeat", type=int, default=3, help="runs per path (medians reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN,
                        help="admin DSN of the sink server; the benchmark creates its own "
                             "database there (TimescaleDB is used when preloaded)")
    parser.add_argument("--source-dsn", default=DEFAULT_DSN,
                        help="admin DSN of the server holding the SQL source table")
    parser.add_argument("--database", default="pp_bench",
                        help="name of the database created (and dropped) on each server")
    parser.add_argument("--chunk-interval", default="1 day",
                        help="sink chunk interval (TimescaleDB only)")
    parser.add_argument("--dlt-python", help="a Python with dlt[postgres], sqlalchemy and "
                        "pyarrow: also run dlt (rest_api / sql_database -> postgres) on the same "
                        "workload, for comparison")
    parser.add_argument("--workdir", type=Path, help="keep config, landing and logs here")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark databases")
    args = parser.parse_args(argv)
    args.kinds = [kind.strip() for kind in args.kinds.split(",") if kind.strip()]
    unknown = set(args.kinds) - set(KINDS)
    if unknown:
        parser.error(f"unknown kinds {sorted(unknown)}; choose from {', '.join(KINDS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = Workload(args.rows)
    say(f"workload: {workload.rows:,} rows, {workload.sensors} sensors, window "
        f"{workload.partition_key} (daily partition)")
    with ExitStack() as stack:
        bench = Bench.set_up(stack, args, workload)
        for round_ in range(1, args.repeat + 1):
            bench.baselines(round_)
            for kind in args.kinds:
                bench.materialize(kind, round_)
        if args.dlt_python:
            for round_ in range(1, args.repeat + 1):
                for kind in args.kinds:
                    bench.dlt(kind, round_)
        report = build_report(workload, bench.paths, bench.timescale, args, bench.sink_dsn)
    return finish(render(report), report, args.json, bench.failures)


@dataclass
class Bench:
    """One benchmark run's set-up, and the measurements it collects."""

    args: argparse.Namespace
    workload: Workload
    expected: Checksum
    sink_dsn: str
    source_dsn: str
    workdir: Path
    env: dict[str, str]
    server_url: str
    timescale: bool
    paths: dict[str, Measured] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @classmethod
    def set_up(cls, stack: ExitStack, args: argparse.Namespace, workload: Workload) -> Bench:
        """Databases, REST server, source table, sources.yaml and Dagster instance."""
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pp_bench_")))
        workdir.mkdir(parents=True, exist_ok=True)
        sink_dsn = stack.enter_context(scratch_database(args.sink_dsn, args.database, args.keep))
        same_server = _server_of(args.source_dsn) == _server_of(args.sink_dsn)
        source_dsn = sink_dsn if same_server else stack.enter_context(
            scratch_database(args.source_dsn, args.database, args.keep))
        expected = workload.checksum()
        failures = []
        server_url = ""
        if "rest" in args.kinds:
            say("serialising pages ...")
            server = PagesServer({workload.window(): workload.page_bodies(PAGE_SIZE)},
                                 PAGE_SIZE, API_KEY)
            server_url = stack.enter_context(server).url
        if "sql" in args.kinds:
            say(f"filling the SQL source table {SOURCE_TABLE} ...")
            fill_source(source_dsn, workload)
            failures += verify(f"source table {SOURCE_TABLE}", expected, table_checksum(
                source_dsn, f"(SELECT sensor_tag, recorded_at AS ts, sensor_value "
                            f"FROM {SOURCE_TABLE}) AS t"))
        config = write_config(workdir, workload, sink_dsn, source_dsn, server_url, args)
        home = workdir / "dagster_home"
        prepare_instance(home)
        env = {"PULL_PIPELINE_CONFIG": str(config), "DAGSTER_HOME": str(home),
               "PULL_PIPELINE_HOME": str(workdir / "state"), "BENCH_API_KEY": API_KEY}
        return cls(args, workload, expected, sink_dsn, source_dsn, workdir, env, server_url,
                   has_timescale(sink_dsn), failures=failures)

    def baselines(self, round_: int) -> None:
        """Binary COPY of the rows into fresh tables: with the PK, without any index (and
        into a hypertable with the PK on TimescaleDB)."""
        tables = dict(BASELINE_DDL)
        if self.timescale:
            tables["copy_pk_hypertable"] = BASELINE_DDL["copy_pk"]
        for name, ddl in tables.items():
            interval = self.args.chunk_interval if name.endswith("hypertable") else None
            seconds = copy_baseline(self.sink_dsn, self.workload, f"bench_{name}", ddl, interval)
            self.paths.setdefault(name, Measured(name)).seconds.append(seconds)
            say(f"round {round_}: {name}: {seconds:.2f} s")
            if round_ == 1:
                self.failures += verify(name, self.expected,
                                        table_checksum(self.sink_dsn, f"bench_{name}"))

    def materialize(self, kind: str, round_: int) -> None:
        """One window of `bench_<kind>` in a fresh Dagster process, into an empty sink."""
        reset_sink(self.sink_dsn)
        run = materialize(f"bench_{kind}", self.workload.partition_key, self.env,
                          self.workdir / f"{kind}-{round_}.log")
        if run.returncode != 0:
            self.failures.append(f"{kind}: the run failed (exit {run.returncode}), see {run.log}")
            say(tail(run.log))
            return
        self.failures += verify(kind, self.expected, table_checksum(
            self.sink_dsn, SINK_TABLE, "WHERE source = %s", (f"bench_{kind}",)))
        entry = self.paths.setdefault(kind, Measured(kind))
        entry.seconds.append(run.seconds)
        entry.peak_rss_mb.append(run.peak_rss_mb)
        entry.phases.append(phases_of(run))
        say(f"round {round_}: {kind}: {run.seconds:.2f} s, peak RSS {run.peak_rss_mb:.0f} MB, "
            f"phases {fmt_phases(entry.phases[-1])}")

    def dlt(self, kind: str, round_: int) -> None:
        """dlt's pipeline for `kind` on the same workload (see `benchmarks.dlt_compare`)."""
        from benchmarks.dlt_compare import run_dlt

        seconds, rss, checksum = run_dlt(
            self.args.dlt_python, kind, self.server_url, API_KEY, self.workload,
            self.source_dsn, self.sink_dsn, self.workdir, round_)
        self.failures += verify(f"dlt_{kind}", self.expected, checksum)
        entry = self.paths.setdefault(f"dlt_{kind}", Measured(f"dlt_{kind}"))
        entry.seconds.append(seconds)
        entry.peak_rss_mb.append(rss)
        say(f"round {round_}: dlt_{kind}: {seconds:.2f} s, peak RSS {rss:.0f} MB")


# --- set-up ------------------------------------------------------------------------------------


def write_config(workdir: Path, workload: Workload, sink_dsn: str, source_dsn: str,
                 server_url: str, args: argparse.Namespace) -> Path:
    """The sources.yaml of the benchmark: one source per kind, one daily window."""
    partitions = {"cadence": "daily", "start": workload.partition_key}
    sources: dict[str, Any] = {}
    if server_url:
        sources["bench_rest"] = rest_source(server_url, partitions)
    sources["bench_sql"] = {
        "kind": "sql", "url": source_dsn,
        "query": f"SELECT sensor_tag, recorded_at AS relative_time, sensor_value "
                 f"FROM {SOURCE_TABLE} WHERE recorded_at >= :start AND recorded_at < :end",
        "time_unit": "iso8601", "partitions": partitions,
    }
    config = {
        "sink": {"dsn": sink_dsn, "table": SINK_TABLE, "chunk_interval": args.chunk_interval},
        "landing": {"path": str(workdir / "landing")},
        "sources": sources,
    }
    path = workdir / "sources.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rest_source(server_url: str, partitions: dict[str, Any]) -> dict[str, Any]:
    """A REST source on `PagesServer` (API key in $BENCH_API_KEY), as sources.yaml has it."""
    return {
        "kind": "rest", "url": server_url,
        "auth": {"type": "api_key", "header": "X-API-Key", "value": "${BENCH_API_KEY}"},
        "window_params": {"start": "start", "end": "end"}, "window_format": "epoch_s",
        "pagination": {"type": "page_number", "param": "page", "size_param": "page_size",
                       "size": PAGE_SIZE},
        "records_path": "data", "time_unit": "s", "partitions": partitions,
    }


def reset_sink(dsn: str) -> None:
    """Drop the sink tables so that every run measures the same thing: a window's first load."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SINK_TABLE}, {SINK_TABLE}_rejects CASCADE")
        conn.execute("CHECKPOINT")


def verify(what: str, expected: Checksum, actual: Checksum) -> list[str]:
    """A failure message unless `actual` is exactly the generated rows."""
    if actual == expected:
        return []
    return [(f"{what}: holds {actual.rows:,} rows (checksum {actual.digest}), expected "
             f"{expected.rows:,} rows (checksum {expected.digest})")]


# --- results -----------------------------------------------------------------------------------


def phases_of(run: Materialization) -> dict[str, float]:
    """Per-phase seconds from the two assets' metadata."""
    raw, readings = run.raw, run.readings
    phases = {
        "fetch": raw.get("seconds_fetch", raw.get("seconds", 0.0)),
        "land": raw.get("seconds_land", 0.0),
        "read_map": readings.get("seconds_read", 0.0) + readings.get("seconds_map", 0.0),
        "validate": readings.get("seconds_validate", 0.0),
        "delete": readings.get("seconds_delete", 0.0),
        "load": readings.get("seconds_load", 0.0),
    }
    phases["pipeline"] = raw.get("seconds", 0.0) + readings.get("seconds", 0.0)
    return {name: float(value) for name, value in phases.items()}


def build_report(workload: Workload, paths: dict[str, Measured], timescale: bool,
                 args: argparse.Namespace, sink_dsn: str) -> dict[str, Any]:
    """Medians per path, with ratios to the COPY-with-PK baseline measured in the same run."""
    rows = workload.rows
    copy_pk = paths["copy_pk"].median(paths["copy_pk"].seconds)
    results: dict[str, Any] = {}
    for name, entry in paths.items():
        seconds = entry.median(entry.seconds)
        item: dict[str, Any] = {
            "seconds": seconds,
            "rows_per_second": rows / seconds if seconds else None,
            "vs_copy_pk": copy_pk / seconds if seconds and copy_pk else None,
            "peak_rss_mb": entry.median(entry.peak_rss_mb),
            "runs": asdict(entry),
        }
        if entry.phases:
            item["phases"] = {p: entry.phase(p) for p in entry.phases[0]}
            load = item["phases"]["load"]
            item["load_rows_per_second"] = rows / load if load else None
            item["load_vs_copy_pk"] = copy_pk / load if load and copy_pk else None
            item["validate_share"] = item["phases"]["validate"] / seconds
        results[name] = item
    return {
        "rows": rows,
        "sensors": workload.sensors,
        "repeat": args.repeat,
        "sink": {"server": _server_of(sink_dsn), "timescaledb": timescale,
                 "chunk_interval": args.chunk_interval if timescale else None},
        "machine": machine(sink_dsn),
        "results": results,
    }


def render(report: dict[str, Any]) -> str:
    """The results as a Markdown table (medians of `repeat` runs)."""
    head = ("| path | seconds | rows/s | vs COPY-PK | fetch | land | read+map | validate | load "
            "| load rows/s | load vs COPY-PK | peak RSS MB |")
    lines = [head, "|" + "---|" * 12]
    for name, item in report["results"].items():
        phases = item.get("phases") or {}
        cells = [name, _f(item["seconds"], 2), _n(item["rows_per_second"]),
                 _pct(item["vs_copy_pk"])]
        cells += [_f(phases.get(p), 2) for p in ("fetch", "land", "read_map", "validate", "load")]
        cells += [_n(item.get("load_rows_per_second")), _pct(item.get("load_vs_copy_pk")),
                  _f(item["peak_rss_mb"], 0)]
        lines.append("| " + " | ".join(cells) + " |")
    machine_ = report["machine"]
    sink = report["sink"]
    server = f"{sink['server'][0]}:{sink['server'][1]}"
    flavour = (f"TimescaleDB, chunk {sink['chunk_interval']}" if sink["timescaledb"]
               else "plain PostgreSQL")
    lines.append("")
    lines.append(f"{report['rows']:,} rows ({report['sensors']} sensors), median of "
                 f"{report['repeat']}; sink {server} ({flavour}); {machine_['cpu']} "
                 f"x{machine_['cores']}, {machine_['memory_gb']} GB, {machine_['postgres']}")
    results = report["results"]
    shares = [f"{name} {item['validate_share']:.0%}" for name, item in results.items()
              if item.get("validate_share") is not None]
    if shares:
        lines.append("validation share of whole-process time: " + ", ".join(shares))
    speedups = [f"{kind} {results['dlt_' + kind]['seconds'] / results[kind]['seconds']:.1f}x"
                for kind in KINDS if kind in results and "dlt_" + kind in results]
    if speedups:
        lines.append("faster than dlt on the same workload: " + ", ".join(speedups))
    return "\n".join(lines)


def machine(dsn: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        memory_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kb = 0
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None  # SHOW always returns one row
    version = row[0]
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(memory_kb / 1024**2),
            "python": platform.python_version(), "postgres": f"PostgreSQL {version.split()[0]}"}


def fmt_phases(phases: dict[str, float]) -> str:
    return ", ".join(f"{name} {value:.2f}" for name, value in phases.items())


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def finish(text: str, report: Any, json_path: Path | None, failures: Sequence[str]) -> int:
    """Print the report, write it as JSON when asked, list the failures: the exit status."""
    print(text)
    if json_path:
        json_path.write_text(json.dumps(report, indent=2, default=str))
        say(f"results written to {json_path}")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _server_of(dsn: str) -> tuple[str, str]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    return str(params.get("host", "")), str(params.get("port", "5432"))


def _f(value: float | None, digits: int) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _n(value: float | None) -> str:
    return "—" if value is None else f"{value / 1000:,.0f}k"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


if __name__ == "__main__":
    sys.exit(main())
