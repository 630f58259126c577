"""The benchmark: its checksum catches any wrong row, and a tiny run passes end to end."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg
import pytest

from benchmarks.database import SOURCE_TABLE, fill_source, table_checksum
from benchmarks.run import verify
from benchmarks.workload import Workload
from pull_pipeline_tests.conftest import ADMIN_DSN

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
