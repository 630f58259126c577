"""Hostile data through real runs: a real HTTP server on loopback, the real PostgreSQL sink.

Each test is a regression test for a way the pipeline once loaded wrong data, deleted rows
it should keep, let one bad row or window sink the rest, or waited without a bound.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pull_pipeline.config.loader import Project
from pull_pipeline.landing import LocalLanding, remove_orphans
from pull_pipeline.sink import timescale
from pull_pipeline.sink.slots import SourceBusy, source_slot
from pull_pipeline.sink.timescale import TimescaleSink, Window
from pull_pipeline_tests import fake_sources
from pull_pipeline_tests.helpers import (
    failure_text,
    make_project,
    materialization_metadata,
    run_source,
)

DAY = "2024-01-01"
T0 = datetime(2024, 1, 1, tzinfo=UTC)


class BodyServer:
    """Answers every GET with the JSON text set for the window's `start` (or the default)."""

    def __init__(self) -> None:
        self.bodies: dict[str, str] = {}
        self.default = "[]"
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                start = self.path.partition("start=")[2].partition("&")[0]
                body = server.bodies.get(start, server.default).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/readings"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def api() -> Iterator[BodyServer]:
    server = BodyServer()
    yield server
    server.close()


def rest_project(tmp_path: Path, api: BodyServer, pg_dsn: str, table: str,
                 cadence: str = "daily", **overrides: Any) -> Project:
    source = {"kind": "rest", "url": api.url, "records_path": "",
              "partitions": {"cadence": cadence, "start": "2024-01-01T00:00:00Z"},
              "retries": {"attempts": 1}, **overrides}
    return make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table},
                                   "sources": {"plant": source}})


def stored(dsn: str, table: str) -> list[tuple[str, datetime, float]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {table} ORDER BY sensor_tag, ts").fetchall()


def rejects(dsn: str, table: str) -> list[tuple[str, str, str]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT partition_key, raw_row, reason FROM {table}_rejects "
                            "ORDER BY id").fetchall()


def epoch(hour: int, minute: int = 0) -> int:
    return int(datetime(2024, 1, 1, hour, minute, tzinfo=UTC).timestamp())


# --- no silent wrong data ---------------------------------------------------------------------


def test_zone_less_iso_times_are_utc_whatever_their_neighbours(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    api.default = json.dumps([
        {"sensor_tag": "a", "relative_time": "2024-01-01T12:00:00+05:00", "sensor_value": 1},
        {"sensor_tag": "b", "relative_time": "2024-01-01T12:00:00", "sensor_value": 2},
        {"sensor_tag": "c", "relative_time": "2024-01-01T12:00:00-03:00", "sensor_value": 3},
        {"sensor_tag": "d", "relative_time": "2024-01-01T12:00:00", "sensor_value": 4},
        {"sensor_tag": "e", "relative_time": "2024-01-01T12:00:00Z", "sensor_value": 5},
        {"sensor_tag": "f", "relative_time": "2024-01-01", "sensor_value": 6},
    ])
    project = rest_project(tmp_path, api, pg_dsn, table_name, time_unit="iso8601")
    result = run_source(project, "plant", DAY)
    assert result.success, failure_text(result)
    hours = {tag: ts.astimezone(UTC).replace(tzinfo=None).hour
             for tag, ts, _ in stored(pg_dsn, table_name)}
    assert hours == {"a": 7, "b": 12, "c": 15, "d": 12, "e": 12, "f": 0}


def test_booleans_and_non_finite_literals_are_rejects_and_the_rest_loads(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    good = [{"sensor_tag": f"s{i}", "relative_time": epoch(1, i), "sensor_value": i + 0.5}
            for i in range(20)]
    at = epoch(2)
    bad = (f'{{"sensor_tag": "flag", "relative_time": {at}, "sensor_value": true}},'
           f'{{"sensor_tag": "nan", "relative_time": {at}, "sensor_value": NaN}},'
           f'{{"sensor_tag": "inf", "relative_time": {at}, "sensor_value": Infinity}},'
           f'{{"sensor_tag": "big", "relative_time": {at}, "sensor_value": 1e309}}')
    api.default = "[" + json.dumps(good)[1:-1] + "," + bad + "]"
    project = rest_project(tmp_path, api, pg_dsn, table_name, max_reject_ratio=0.5)
    result = run_source(project, "plant", DAY)
    assert result.success, failure_text(result)
    assert len(stored(pg_dsn, table_name)) == 20
    reasons = {json.loads(raw)["sensor_tag"]: reason for _, raw, reason in
               rejects(pg_dsn, table_name)}
    assert set(reasons) == {"flag", "nan", "inf", "big"}
    assert "'true'" in reasons["flag"]
    # Landed as received: replay sees the boolean as the text true, not as 1.0.
    landed = LocalLanding(tmp_path / "landing")
    values = [v for t, _ in landed.read("plant", DAY) for v in t.column("sensor_value").to_pylist()]
    assert "true" in values and "1.0" not in values and "1" not in values


# --- one bad row never sinks its window, one bad window never sinks a range --------------------


def test_nul_bytes_and_oversized_tags_are_one_reject_each(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    rows = [{"sensor_tag": f"ok{i}", "relative_time": epoch(3, i), "sensor_value": i}
            for i in range(40)]
    rows += [
        {"sensor_tag": "nul\u0000tag", "relative_time": epoch(4), "sensor_value": 1},
        {"sensor_tag": "nul\u0000and bad", "relative_time": "not a time", "sensor_value": 1},
        {"sensor_tag": "x" * 3000, "relative_time": epoch(4), "sensor_value": 1},
        {"sensor_tag": "y" * 1_000_000, "relative_time": epoch(4), "sensor_value": 1},
    ]
    api.default = json.dumps(rows)
    project = rest_project(tmp_path, api, pg_dsn, table_name, max_reject_ratio=0.2)
    result = run_source(project, "plant", DAY)
    assert result.success, failure_text(result)
    assert len(stored(pg_dsn, table_name)) == 40
    kept = rejects(pg_dsn, table_name)
    assert len(kept) == 4
    by_tag = {json.loads(raw)["sensor_tag"]: reason for _, raw, reason in kept}
    assert "NUL" in by_tag["nul\u0000tag"]
    assert "NUL" in by_tag["nul\u0000and bad"] and "relative_time" in by_tag["nul\u0000and bad"]
    assert "longer than 1024 bytes" in by_tag["x" * 3000]
    assert len(by_tag["y" * 1_000_000]) < 500  # the reason quotes the start of the value


def test_a_bad_window_in_a_range_fails_alone_and_is_named(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    for hour in range(3):
        start = epoch(hour)
        api.bodies[str(start)] = json.dumps(
            [{"sensor_tag": "t", "relative_time": start + i * 60,
              "sensor_value": "n/a" if hour == 1 else i} for i in range(10)])
    api.bodies[str(epoch(0))] = json.dumps(  # a NUL in the first window is one reject
        json.loads(api.bodies[str(epoch(0))]) + [
            {"sensor_tag": "a\u0000b", "relative_time": epoch(0) + 1, "sensor_value": 1}])
    project = rest_project(tmp_path, api, pg_dsn, table_name, cadence="hourly",
                           max_reject_ratio=0.2)
    result = run_source(project, "plant", tags={
        "dagster/asset_partition_range_start": "2024-01-01-00:00",
        "dagster/asset_partition_range_end": "2024-01-01-02:00"})
    assert not result.success
    message = failure_text(result)
    assert "2024-01-01-01:00 (10/10 = 100.0%)" in message
    assert "2024-01-01-00:00" not in message and "2024-01-01-02:00" not in message
    hours = sorted({ts.astimezone(UTC).hour for _, ts, _ in stored(pg_dsn, table_name)})
    assert hours == [0, 2]  # the good windows committed on their own


# --- never replace data with nothing by accident -----------------------------------------------


def test_an_empty_answer_keeps_the_windows_rows_unless_allowed(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    api.default = json.dumps([{"sensor_tag": "t", "relative_time": epoch(5, m),
                               "sensor_value": m} for m in range(30)])
    project = rest_project(tmp_path, api, pg_dsn, table_name)
    assert run_source(project, "plant", DAY).success
    api.default = "[]"  # the source no longer keeps that day
    result = run_source(project, "plant", DAY)
    assert not result.success
    message = failure_text(result)
    assert "window 2024-01-01 (30 rows kept)" in message and "allow_empty_replace" in message
    assert len(stored(pg_dsn, table_name)) == 30

    allowed = rest_project(tmp_path, api, pg_dsn, table_name, allow_empty_replace=True)
    result = run_source(allowed, "plant", DAY)
    assert result.success, failure_text(result)
    assert stored(pg_dsn, table_name) == []
    assert materialization_metadata(result, "plant")["rows_replaced"] == 30


# --- every wait has a bound ----------------------------------------------------------------------


def test_a_locked_sink_table_fails_within_lock_timeout_naming_it(
    api: BodyServer, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    api.default = json.dumps([{"sensor_tag": "t", "relative_time": epoch(1),
                               "sensor_value": 1}])
    project = rest_project(tmp_path, api, pg_dsn, table_name)
    assert run_source(project, "plant", DAY).success
    locked = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name, "lock_timeout": "1s"},
        "sources": project.config.model_dump(mode="json")["sources"]})
    with psycopg.connect(pg_dsn) as holder:
        holder.execute(f"LOCK TABLE {table_name} IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        result = run_source(locked, "plant", DAY)
        elapsed = time.monotonic() - started
        holder.rollback()
    assert not result.success
    assert "sink.lock_timeout" in failure_text(result)
    assert elapsed < 20  # 1 s per attempt, one attempt, plus Dagster's own start-up
    assert len(stored(pg_dsn, table_name)) == 1


def test_the_schema_check_does_not_queue_behind_loads_in_flight(
    pg_dsn: str, table_name: str
) -> None:
    sink = TimescaleSink(dsn=pg_dsn, table=table_name, lock_timeout=timedelta(seconds=2))
    with sink.load("src", [Window("w", T0, T0.replace(hour=1))]):
        pass
    with psycopg.connect(pg_dsn) as loader:  # a load in flight: ROW EXCLUSIVE on the table
        loader.execute(f"INSERT INTO {table_name} (source, sensor_tag, ts, sensor_value) "
                       "VALUES ('other', 't', now(), 1)")
        timescale._schema_ready.clear()  # as in a new run's process
        started = time.monotonic()
        with sink.connection():
            pass
        assert time.monotonic() - started < 1.0
        loader.rollback()


def test_waiting_for_a_source_slot_is_bounded(pg_dsn: str) -> None:
    sink, source = TimescaleSink(dsn=pg_dsn), f"plant_{uuid.uuid4().hex[:6]}"
    with source_slot(sink.connect, source, 1, lambda _: None):
        started = time.monotonic()
        with pytest.raises(SourceBusy) as error, source_slot(
                sink.connect, source, 1, lambda _: None, poll_seconds=0.1, max_wait=1.0):
            pass
    assert 1.0 <= time.monotonic() - started < 5
    assert "slot_timeout" in str(error.value) and error.value.transient


# --- configuration means what it says ------------------------------------------------------------


def test_a_python_source_retries_a_transient_error_per_retries(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    fake_sources.reset(fake_sources.hourly_rows(T0, hours=1))
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {
            "kind": "python", "function": "pull_pipeline_tests.fake_sources:fetch",
            "options": {"fail_first": 2},
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"},
            "retries": {"attempts": 3, "backoff": "0.05s", "max_backoff": "0.1s"}}}})
    result = run_source(project, "plant", "2024-01-01-00:00")
    assert result.success, failure_text(result)
    assert len(fake_sources.CALLS) == 3
    assert len(stored(pg_dsn, table_name)) == 180

    fake_sources.reset(fake_sources.hourly_rows(T0, hours=1))
    fewer = make_project(tmp_path, {**project.config.model_dump(mode="json"), "sources": {
        "plant": {**project.config.model_dump(mode="json")["sources"]["plant"],
                  "retries": {"attempts": 2, "backoff": "0.05s", "max_backoff": "0.1s"}}}})
    result = run_source(fewer, "plant", "2024-01-01-00:00")
    assert not result.success and len(fake_sources.CALLS) == 2
    assert "ConnectionError" in failure_text(result)


# --- tidy after a crash ------------------------------------------------------------------------


def test_a_killed_fetch_leaves_no_partial_file_behind(tmp_path: Path) -> None:
    folder = tmp_path / "landing" / "plant"
    child = subprocess.Popen(  # a writer that is killed while its window is half written
        [sys.executable, "-c", (
            "import sys, time, pyarrow as pa\n"
            "from pull_pipeline.landing import LocalLanding\n"
            "schema = pa.schema([('v', pa.large_string())])\n"
            f"with LocalLanding({str(tmp_path / 'landing')!r}).writer("
            "'plant', '2024-01-01', schema, 'r') as w:\n"
            "    w.write(pa.table({'v': ['1']}, schema=schema)); print('ok', flush=True)\n"
            "    time.sleep(60)\n")],
        stdout=subprocess.PIPE, text=True, env={**os.environ})
    assert child.stdout is not None and child.stdout.readline().strip() == "ok"
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=10)
    partial = list(folder.glob(".*.tmp"))
    assert len(partial) == 1
    assert not (folder / "2024-01-01.parquet").exists()  # never mistaken for a whole window
    assert remove_orphans(folder) == partial  # the next writer in this folder removes it
    assert not list(folder.glob(".*.tmp"))
