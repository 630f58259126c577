"""New windows and reruns next to a long compressed history, on TimescaleDB:
`python -m benchmarks.compressed` (also `make bench-compressed`).

The same daily window of `--rows` readings (`benchmarks.workload`, served by the loopback
REST server) is materialized by `bench_rest/raw,bench_rest/readings` in a fresh
`dagster asset materialize` process, four ways per round:

- `new_empty`: into an empty hypertable (the baseline of the next one);
- `new_on_history`: into a hypertable holding `--history-days` days of the same workload
  before the window, every one of those daily chunks compressed (`compress_chunk`);
- `rerun_uncompressed`: the same window again, its chunk as the load left it (baseline);
- `rerun_compressed`: the same window again, after `compress_chunk` of its chunk.

The ratios compare paths measured in the same round, on the same server, so they hold on a
noisy machine where seconds do not. Both tables have the sink's own schema (created
before the clock starts) and its compression settings; their policies are paused so that
only the benchmark compresses. The history is generated in SQL (`benchmarks.history`).
After every run the window must hold exactly the generated rows, and after the last round
the history must still be exact (count and checksum); otherwise the exit status is 1.

    python -m benchmarks.compressed --rows 1000000 --history-days 60 --repeat 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import yaml

from benchmarks import history
from benchmarks.database import has_timescale, scratch_database, table_checksum
from benchmarks.materialize import materialize, prepare_instance
from benchmarks.run import (
    API_KEY,
    PAGE_SIZE,
    Measured,
    finish,
    machine,
    phases_of,
    rest_source,
    say,
    tail,
    verify,
)
from benchmarks.server import PagesServer
from benchmarks.workload import Workload

DEFAULT_DSN = os.environ.get("PULL_PIPELINE_TIMESCALE_DSN",
                             "postgresql://postgres@127.0.0.1:5434/postgres")
SOURCE = "bench_rest"
TABLES = {"empty": "bench_empty", "history": "bench_history"}
PATHS = ("new_empty", "new_on_history", "rerun_uncompressed", "rerun_compressed")
# (what is compared, path, its baseline)
RATIOS = (("new window on compressed history vs empty table", "new_on_history", "new_empty"),
          ("rerun into a compressed chunk vs an uncompressed one", "rerun_compressed",
           "rerun_uncompressed"))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.compressed", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the window (a day)")
    parser.add_argument("--history-days", type=int, default=60,
                        help="compressed days of the same workload before the window")
    parser.add_argument("--repeat", type=int, default=3, help="rounds (medians reported)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--sink-dsn", default=DEFAULT_DSN,
                        help="admin DSN of a TimescaleDB server (default "
                             "$PULL_PIPELINE_TIMESCALE_DSN, else 127.0.0.1:5434)")
    parser.add_argument("--database", default="pp_bench_compressed",
                        help="name of the database created (and dropped) on the server")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds after which one run is killed (and reported failed)")
    parser.add_argument("--workdir", type=Path, help="keep config, landing and logs here")
    parser.add_argument("--keep", action="store_true", help="keep the benchmark database")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workload = Workload(args.rows)
    with ExitStack() as stack:
        bench = CompressedBench.set_up(stack, args, workload)
        if bench.failures:  # no TimescaleDB, or the history is not what was generated
            for failure in bench.failures:
                print(f"FAILED: {failure}", file=sys.stderr)
            return 1
        for round_ in range(1, args.repeat + 1):
            bench.round(round_)
        bench.check_history()
        report = bench.report()
    return finish(render(report), report, args.json, bench.failures)


@dataclass
class CompressedBench:
    """The database, the two sink tables, the REST server and what the rounds measure."""

    args: argparse.Namespace
    workload: Workload
    dsn: str
    workdir: Path
    env: dict[str, str]
    paths: dict[str, Measured] = field(default_factory=dict)
    chunk_after_rerun: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @classmethod
    def set_up(cls, stack: ExitStack, args: argparse.Namespace,
               workload: Workload) -> CompressedBench:
        workdir = args.workdir or Path(stack.enter_context(
            tempfile.TemporaryDirectory(prefix="pp_bench_compressed_")))
        workdir.mkdir(parents=True, exist_ok=True)
        dsn = stack.enter_context(scratch_database(args.sink_dsn, args.database, args.keep))
        home = workdir / "dagster_home"
        prepare_instance(home)
        bench = cls(args, workload, dsn, workdir, {
            "DAGSTER_HOME": str(home), "PULL_PIPELINE_HOME": str(workdir / "state"),
            "BENCH_API_KEY": API_KEY})
        if not has_timescale(dsn):
            bench.failures.append(f"{args.sink_dsn}: TimescaleDB is not preloaded there; "
                                  "pass --sink-dsn of a TimescaleDB server")
            return bench
        say("serialising pages ...")
        server = PagesServer({workload.window(): workload.page_bodies(PAGE_SIZE)},
                             PAGE_SIZE, API_KEY)
        url = stack.enter_context(server).url
        for table in TABLES.values():
            history.create_table(dsn, table)
            bench.write_config(table, url)
        say(f"history: {args.history_days} days of {workload.rows:,} rows ...")
        history.fill_history(dsn, TABLES["history"], SOURCE, workload, args.history_days, say)
        chunks = history.compress(dsn, TABLES["history"], before=workload.start)
        say(f"history: {chunks} chunks compressed")
        return bench

    def write_config(self, table: str, url: str) -> None:
        """sources.yaml for one sink table: one daily REST source, the sink's compression."""
        config = {
            "sink": {"dsn": self.dsn, "table": table, "chunk_interval": "1 day",
                     "compress_after": "7 days"},
            "landing": {"path": str(self.workdir / "landing")},
            "sources": {SOURCE: rest_source(url, {"cadence": "daily",
                                                  "start": self.workload.partition_key})},
        }
        (self.workdir / f"{table}.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    def round(self, round_: int) -> None:
        """The four paths, each after the state it needs; the empty table's run goes first in
        odd rounds and last in even ones, so that neither side always follows the same step."""
        start = self.workload.start
        if round_ % 2:
            self.new_empty(round_)
        history.drop_from(self.dsn, TABLES["history"], start)
        self.run("new_on_history", TABLES["history"], round_)
        self.run("rerun_uncompressed", TABLES["history"], round_)
        history.compress(self.dsn, TABLES["history"], at_or_after=start)
        if history.chunk_state(self.dsn, TABLES["history"], start) != "compressed":
            self.failures.append("the window's chunk did not compress")
        self.run("rerun_compressed", TABLES["history"], round_)
        self.chunk_after_rerun.append(history.chunk_state(self.dsn, TABLES["history"], start))
        if not round_ % 2:
            self.new_empty(round_)

    def new_empty(self, round_: int) -> None:
        """The baseline of `new_on_history`: the window into the emptied table."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"TRUNCATE {TABLES['empty']}, {TABLES['empty']}_rejects")
        self.run("new_empty", TABLES["empty"], round_)

    def run(self, path: str, table: str, round_: int) -> None:
        """One window in a fresh Dagster process; the window must then be exact."""
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        env = {**self.env, "PULL_PIPELINE_CONFIG": str(self.workdir / f"{table}.yaml")}
        run = materialize(SOURCE, self.workload.partition_key, env,
                          self.workdir / f"{path}-{round_}.log", self.args.timeout)
        if run.returncode != 0:
            self.failures.append(f"{path}: the run failed (exit {run.returncode}), see {run.log}")
            say(tail(run.log))
            return
        start, end = self.workload.window()
        self.failures += verify(path, self.workload.checksum(), table_checksum(
            self.dsn, table, "WHERE ts >= to_timestamp(%s) AND ts < to_timestamp(%s)",
            (start, end)))
        entry = self.paths.setdefault(path, Measured(path))
        entry.seconds.append(run.seconds)
        entry.peak_rss_mb.append(run.peak_rss_mb)
        entry.phases.append(phases_of(run))
        say(f"round {round_}: {path}: {run.seconds:.2f} s, delete "
            f"{entry.phases[-1]['delete']:.2f} s, load {entry.phases[-1]['load']:.2f} s")

    def check_history(self) -> None:
        """The history must still be exactly what was generated."""
        say("checking the history ...")
        self.failures += verify("history", history.expected_history(
            self.workload, self.args.history_days), table_checksum(
                self.dsn, TABLES["history"], "WHERE ts < %s", (self.workload.start,)))

    def report(self) -> dict[str, Any]:
        results = {}
        for name, entry in self.paths.items():
            phases = {p: entry.phase(p) for p in ("delete", "load", "pipeline")}
            results[name] = {"seconds": entry.median(entry.seconds), "phases": phases,
                             "peak_rss_mb": entry.median(entry.peak_rss_mb), "runs": asdict(entry)}
        ratios = {}
        for label, path, baseline in RATIOS:
            if path in results and baseline in results:
                rounds = {what: _ratios(self.paths[path], self.paths[baseline], what)
                          for what in ("seconds", "delete+load")}
                ratios[path] = {"label": label, "vs": baseline, "rounds": rounds, **{
                    what: statistics.median(values) if values else None
                    for what, values in rounds.items()}}
        return {
            "rows": self.workload.rows, "history_days": self.args.history_days,
            "history_rows": self.workload.rows * self.args.history_days,
            "repeat": self.args.repeat, "timed": "dagster asset materialize (whole process)",
            "results": results, "ratios": ratios,
            "chunk_after_compressed_rerun": self.chunk_after_rerun,
            "exact": not self.failures, "machine": machine(self.dsn),
            "timescaledb": timescale_version(self.dsn),
        }


def timescale_version(dsn: str) -> str:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'"
                           ).fetchone()
    return row[0] if row else ""


def _ratios(path: Measured, baseline: Measured, what: str) -> list[float]:
    """`path` over `baseline` in each round: a round pairs runs made a minute apart."""
    def value(entry: Measured, i: int) -> float:
        if what == "seconds":
            return entry.seconds[i]
        return entry.phases[i]["delete"] + entry.phases[i]["load"]

    pairs = range(min(len(path.seconds), len(baseline.seconds)))
    return [value(path, i) / value(baseline, i) for i in pairs if value(baseline, i)]


def render(report: dict[str, Any]) -> str:
    """The medians as a Markdown table, then the ratios."""
    lines = ["| path | whole process s | delete s | load s | peak RSS MB |", "|---|---:|---:|---:|---:|"]
    for name, item in report["results"].items():
        phases = item["phases"]
        lines.append(f"| {name} | {item['seconds']:.2f} | {phases['delete']:.2f} | "
                     f"{phases['load']:.2f} | {item['peak_rss_mb']:.0f} |")
    lines.append("")
    for item in report["ratios"].values():
        lines.append(f"{item['label']}: " + ", ".join(
            f"{label} {_x(item[what])} (rounds: {', '.join(_x(r) for r in item['rounds'][what])})"
            for what, label in (("seconds", "whole process"), ("delete+load", "delete+load"))))
    machine_ = report["machine"]
    lines.append(f"{report['rows']:,}-row window, {report['history_days']} compressed days "
                 f"({report['history_rows']:,} rows) of history, median of {report['repeat']}; "
                 f"chunk after the compressed rerun: "
                 f"{', '.join(sorted(set(report['chunk_after_compressed_rerun'])))}; "
                 f"{machine_['cpu']} x{machine_['cores']}, {machine_['postgres']}, "
                 f"TimescaleDB {report['timescaledb']}")
    return "\n".join(lines)


def _x(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


if __name__ == "__main__":
    sys.exit(main())
