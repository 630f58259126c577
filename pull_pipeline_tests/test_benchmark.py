"""The benchmarks: the checksum catches any wrong row, and a tiny run of each mode (one window,
compressed history, fleet) passes end to end, exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from benchmarks.database import SOURCE_TABLE, fill_source, table_checksum
from benchmarks.fleet import backfill_workload
from benchmarks.materialize import measure
from benchmarks.run import verify
from benchmarks.workload import Workload
from pull_pipeline_tests.conftest import ADMIN_DSN, timescale_unavailable

ROOT = Path(__file__).resolve().parents[1]
SOURCE = f"(SELECT sensor_tag, recorded_at AS ts, sensor_value FROM {SOURCE_TABLE}) AS t"


def test_workload_is_deterministic_and_fits_one_daily_window() -> None:
    workload = Workload(3_000)
    assert workload.checksum() == Workload(3_000).checksum()
    assert workload.sensors == 200 and workload.epoch_seconds[-1] < workload.end.timestamp()
    assert Workload(20_000_000).sensors > 200  # more sensors, never a second day
    page = json.loads(workload.page_bodies(1_000)[0])
    assert len(page["data"]) == 1_000 and page["next_page"] == 2


@pytest.mark.parametrize(
    "tamper",
    [
        "UPDATE {t} SET sensor_value = sensor_value + 0.001 WHERE ctid = '(0,5)'",
        ("UPDATE {t} SET recorded_at = recorded_at + interval '1 microsecond' "
         "WHERE ctid = '(0,5)'"),
        "UPDATE {t} SET sensor_tag = sensor_tag || 'x' WHERE ctid = '(0,5)'",
        "DELETE FROM {t} WHERE ctid = '(0,5)'",
        "INSERT INTO {t} SELECT * FROM {t} LIMIT 1",
        # Two rows trading values keep every column's sum: the checksum still notices.
        ("UPDATE {t} SET sensor_value = CASE ctid WHEN '(0,1)' THEN (SELECT sensor_value FROM "
         "{t} WHERE ctid = '(0,2)') ELSE (SELECT sensor_value FROM {t} WHERE ctid = '(0,1)') "
         "END WHERE ctid IN ('(0,1)', '(0,2)')"),
    ],
)
def test_checksum_tells_the_generated_rows_from_any_other(pg_dsn: str, tamper: str) -> None:
    workload = Workload(2_000)
    fill_source(pg_dsn, workload)
    assert verify("source", workload.checksum(), table_checksum(pg_dsn, SOURCE)) == []
    with psycopg.connect(pg_dsn) as conn:
        conn.execute(tamper.format(t=SOURCE_TABLE))
    problems = verify("source", workload.checksum(), table_checksum(pg_dsn, SOURCE))
    assert len(problems) == 1 and "expected 2,000 rows" in problems[0]


@pytest.mark.sink  # its benchmark's sink is the suite's server
def test_a_small_run_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--rows", "2000", "--repeat", "1",
         "--sink-dsn", ADMIN_DSN, "--source-dsn", ADMIN_DSN,
         "--database", f"pp_bench_{uuid.uuid4().hex[:8]}", "--workdir", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert "| rest |" in run.stdout and "| sql |" in run.stdout
    results = json.loads(out.read_text())["results"]
    for kind in ("rest", "sql"):
        assert results[kind]["rows_per_second"] > 0
        assert results[kind]["peak_rss_mb"] > 50
        assert set(results[kind]["phases"]) >= {"fetch", "land", "validate", "load"}
    assert results["copy_pk"]["seconds"] > 0


def bench(module: str, tmp_path: Path, *options: str) -> tuple[subprocess.CompletedProcess[str],
                                                                 dict]:
    """Run `python -m benchmarks.<module>` in its own database; (the process, its JSON)."""
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{module}", *options,
         "--database", f"pp_bench_{uuid.uuid4().hex[:8]}", "--workdir", str(tmp_path / "work"),
         "--json", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return run, json.loads(out.read_text())


@pytest.mark.sink  # its benchmark's sink is the suite's server
def test_compressed_history_mode_small_run(tmp_path: Path) -> None:
    dsn = os.environ.get("PULL_PIPELINE_TIMESCALE_DSN", ADMIN_DSN)
    if reason := timescale_unavailable(dsn):
        pytest.skip(f"{reason} (set PULL_PIPELINE_TIMESCALE_DSN to a TimescaleDB server)")
    run, report = bench("compressed", tmp_path, "--rows", "2000", "--history-days", "2",
                        "--repeat", "1", "--sink-dsn", dsn)
    assert report["exact"] and report["history_rows"] == 4_000
    assert set(report["results"]) == {"new_empty", "new_on_history", "rerun_uncompressed",
                                      "rerun_compressed"}
    for item in report["results"].values():
        assert item["seconds"] > 0 and item["peak_rss_mb"] > 50
        assert set(item["phases"]) == {"delete", "load", "pipeline"}
    assert {name: item["vs"] for name, item in report["ratios"].items()} == {
        "new_on_history": "new_empty", "rerun_compressed": "rerun_uncompressed"}
    assert all(item["seconds"] > 0 for item in report["ratios"].values())
    assert report["chunk_after_compressed_rerun"][0] in {"compressed", "partial", "uncompressed"}
    assert "| rerun_compressed |" in run.stdout


@pytest.mark.sink  # its benchmark's sink is the suite's server
def test_fleet_mode_small_run(tmp_path: Path) -> None:
    run, report = bench("fleet", tmp_path, "--sources", "2", "--backfill-rows", "2000",
                        "--backfill-windows", "4", "--history-days", "7", "--timeout", "240",
                        "--sink-dsn", ADMIN_DSN)
    assert report["exact"] and not report["failures"]
    figures = report["sizes"]["2"]
    load, ticks, backfill = figures["load"], figures["ticks"], figures["backfill"]
    assert load["status"] == "ok" and load["cpu_seconds"] > 0 and load["peak_rss_mb"] > 50
    # Per source: recovery, freshness and archive sensors; and the fleet-wide ones.
    assert ticks["sensors"]["evaluated"] == ticks["sensors"]["count"] >= 6
    assert ticks["schedules"]["evaluated"] == ticks["schedules"]["count"] >= 2
    assert ticks["errors"] == 0 and ticks["unfinished"] is None
    # A real code server loaded the location and served every job of it to a client.
    served = figures["served"]
    assert served["status"] == "ok" and served["load_cpu_seconds"] > 0
    assert served["serve_cpu_seconds"] > 0 and served["jobs"] >= 2 * 3  # pull, replay, restore
    # One run's worker, in its own process: it ran (exit 0 only if the run succeeded).
    assert figures["worker"]["status"] == "ok" and figures["worker"]["cpu_seconds"] > 0
    for path in ("single", "ranged"):
        assert backfill[path]["rows_per_second"] > 0 and backfill[path]["peak_rss_mb"] > 50
    assert backfill["ranged_vs_single"] > 0
    assert "| 2 |" in run.stdout and "(1.00x)" in run.stdout


@pytest.mark.skipif(bool(os.environ.get("PULL_PIPELINE_TIMESCALE_DSN")),
                    reason="the daemon benchmark runs in the plain PostgreSQL pass only: it "
                    "measures ticks, which the sink flavour does not change, for 70 s")
def test_daemon_mode_small_run(tmp_path: Path) -> None:
    """The real daemon for a minute on two sources and a standalone code server, its instance
    on dagster-postgres as a fleet's is (deploy/dagster.yaml; the shipped SQLite instance is
    the one every other benchmark test uses)."""
    run, report = bench("daemon", tmp_path, "--sources", "2", "--minutes", "1.2",
                        "--steady-minutes", "0.6", "--history-days", "2", "--sink-dsn", ADMIN_DSN,
                        "--storage", "postgres")
    assert report["storage"] == "postgres" and report["queued_runs"] >= 2  # recovery's runs
    assert report["failed_ticks"] == 0
    kinds = report["kinds"]
    assert {"recover", "freshness", "archive", "alert_on_run_failure", "schedule"} <= set(kinds)
    assert kinds["recover"]["never"] == kinds["freshness"]["never"] == 0
    assert report["code_server_restarts"] == 0 and report["failures"] == []
    assert sum(minute["ticks"] for minute in report["timeline"].values()) >= 8
    assert "| recover | 60 | 2 | 0 |" in run.stdout


@pytest.mark.skipif(bool(os.environ.get("PULL_PIPELINE_TIMESCALE_DSN")),
                    reason="the backfill benchmark runs in the plain PostgreSQL pass only: it "
                    "measures Dagster's bookkeeping per window, which the sink flavour does "
                    "not change")
def test_backfill_mode_small_run_on_pooled_postgres_storage(tmp_path: Path) -> None:
    """One window against a ranged run of four, exact, with the instance on deploy/dagster.yaml's
    pooled storage: its events are read back from PostgreSQL."""
    run, report = bench("backfill", tmp_path, "--rows", "2000", "--windows", "4",
                        "--sink-dsn", ADMIN_DSN, "--storage", "postgres")
    assert report["storage"] == "postgres" and "postgres instance storage" in run.stderr
    single, backfill = report["single"], report["backfill"]
    assert not single["failed"] and not backfill["failed"] and backfill["runs"] == 1
    assert single["rows_per_second"] > 0 and report["ratio"] > 0
    # A materialization of raw and of readings and a check of each, per window, at least.
    assert backfill["events_per_window"] >= 4


def test_the_backfill_rows_are_spread_over_every_hourly_window() -> None:
    workload = backfill_workload(2_000, 4)
    start = int(workload.start.timestamp())
    per_hour = [sum(len(json.loads(body)["data"]) for body in workload.page_bodies(
        500, (start + hour * 3600, start + (hour + 1) * 3600))) for hour in range(4)]
    assert sum(per_hour) == 2_000 and min(per_hour) > 0


def test_a_measured_process_is_killed_at_its_timeout(tmp_path: Path) -> None:
    run = measure(["sleep", "60"], {}, tmp_path / "sleep.log", timeout=1)
    assert run.timed_out and run.returncode != 0 and run.seconds < 30
