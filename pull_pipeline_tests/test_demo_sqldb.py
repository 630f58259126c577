"""The demo SQLite historian: deterministic, idempotent, and pullable by the quick-start query."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import SqlSource
from pull_pipeline.connectors.sql import SqlConnector
from pull_pipeline.demo.sqldb import SENSORS, build_historian, value

START = datetime(2024, 1, 1, tzinfo=UTC)
QUERY = (
    "SELECT tag AS sensor_tag, recorded_at AS relative_time, value AS sensor_value"
    " FROM readings WHERE recorded_at >= :start AND recorded_at < :end"
)


def test_builds_once_and_tops_up_only_new_minutes(tmp_path: Path) -> None:
    path = tmp_path / "demo" / "historian.db"
    assert build_historian(path, START, datetime(2024, 1, 1, 6, tzinfo=UTC)) == 6 * 60 * 5
    assert build_historian(path, START, datetime(2024, 1, 1, 6, tzinfo=UTC)) == 0
    assert build_historian(path, START, datetime(2024, 1, 1, 7, tzinfo=UTC)) == 60 * 5


def test_the_quick_start_query_pulls_an_hour(tmp_path: Path) -> None:
    path = tmp_path / "historian.db"
    build_historian(path, START, datetime(2024, 1, 2, tzinfo=UTC))
    source = SqlSource.model_validate(
        {"kind": "sql", "url": f"sqlite:///{path}", "query": QUERY,
         "partitions": {"start": "2024-01-01"}}
    )
    with SqlConnector("demo_sql", source) as conn:
        raw = pa.concat_tables(conn.fetch(datetime(2024, 1, 1, 3, tzinfo=UTC),
                                          datetime(2024, 1, 1, 4, tzinfo=UTC)))
    frame = to_canonical(raw, source)
    assert len(frame) == 60 * len(SENSORS)
    assert frame["ts"].min() == datetime(2024, 1, 1, 3, tzinfo=UTC)
    first = frame[frame["sensor_tag"] == SENSORS[1]].sort_values("ts").iloc[0]
    assert first["sensor_value"] == value(1, int(datetime(2024, 1, 1, 3, tzinfo=UTC).timestamp()))


def test_module_entry_point_writes_to_the_state_folder(tmp_path: Path) -> None:
    two_hours_ago = (datetime.now(UTC) - timedelta(hours=2)).isoformat()
    done = subprocess.run(
        [sys.executable, "-m", "pull_pipeline.demo.sqldb", "--start", two_hours_ago],
        env={"PULL_PIPELINE_HOME": str(tmp_path), "PATH": ""},
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "demo" / "historian.db").is_file()
    assert f"sqlite:///{tmp_path / 'demo' / 'historian.db'}" in done.stdout


def test_the_entry_point_refuses_years_of_data(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pull_pipeline.demo.sqldb", "--start", "2020-01-01",
         "--path", str(tmp_path / "h.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert done.returncode == 2 and "within 31 days" in done.stderr
    assert not (tmp_path / "h.db").exists()
