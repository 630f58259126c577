"""`kind: python`: a user's fetch(start, end, **options), returning or yielding data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pull_pipeline.config.models import PythonSource
from pull_pipeline.connectors.python import PythonConnector
from pull_pipeline.errors import PermanentSourceError, TransientSourceError
from pull_pipeline_tests import python_sources
from pull_pipeline_tests.helpers import failure_text, make_project, run_source

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
MODULE = "pull_pipeline_tests.python_sources"


@pytest.fixture(autouse=True)
def _reset() -> Iterator[None]:
    python_sources.CALLS.clear()
    python_sources.GONE["value"] = False
    yield
    python_sources.GONE["value"] = False


def connector(function: str, **options: Any) -> PythonConnector:
    return PythonConnector("plant", PythonSource.model_validate({
        "kind": "python", "function": f"{MODULE}:{function}", "options": options,
        "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}))


def rows(conn: PythonConnector) -> list[dict[str, str]]:
    return [row for batch in conn.fetch(T0, T0 + HOUR) for row in batch.to_pylist()]


@pytest.mark.parametrize(("function", "batches"), [
    ("fetch_frame", 1), ("fetch_pages", 3), ("fetch_records", 1), ("fetch_record_pages", 2),
])
def test_returned_and_yielded_data_become_the_same_raw_rows(function: str, batches: int) -> None:
    conn = connector(function, site="north") if function != "fetch_record_pages" else connector(
        function)
    got = list(conn.fetch(T0, T0 + HOUR))
    assert len(got) == batches
    flat = [row for batch in got for row in batch.to_pylist()]
    expected = python_sources.readings(T0, T0 + HOUR, "north", timedelta(minutes=5))
    assert flat == [{k: str(v) for k, v in row.items()} for row in expected]


def test_the_window_is_utc_aware_and_options_are_passed() -> None:
    rows(connector("fetch_pages", site="south", page_minutes=30))
    call = python_sources.CALLS[0]
    assert call["start"] == T0 and call["end"] == T0 + HOUR
    assert call["start"].tzinfo is not None and call["start"].utcoffset() == timedelta(0)
    assert call["site"] == "south"


def test_none_is_an_empty_window() -> None:
    assert rows(connector("fetch_nothing")) == []


@pytest.mark.parametrize(("function", "message"), [
    ("fetch_strings", "produced a str as item 0"),
    ("fetch_wrong_columns",
     "without the column(s) ['sensor_tag', 'relative_time', 'sensor_value']"),
])
def test_wrong_shapes_fail_permanently_with_the_fix(function: str, message: str) -> None:
    with pytest.raises(PermanentSourceError) as info:
        rows(connector(function))
    assert message in str(info.value)


def test_an_unimportable_function_is_named() -> None:
    with pytest.raises(PermanentSourceError, match="cannot import 'no_such_module'"):
        PythonConnector("plant", PythonSource.model_validate({
            "kind": "python", "function": "no_such_module:fetch",
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}))
    with pytest.raises(PermanentSourceError, match="has no function 'nope'"):
        connector("nope")


@pytest.mark.parametrize("function", ["fetch_frame", "fetch_pages"])
def test_python_source_loads_through_dagster(
    tmp_path: Path, pg_dsn: str, table_name: str, function: str
) -> None:
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {
            "kind": "python", "function": f"{MODULE}:{function}", "options": {"site": "east"},
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}},
    })
    result = run_source(project, "plant", "2024-01-01-02:00")
    assert result.success, failure_text(result)
    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {table_name} ORDER BY ts, sensor_tag"
        ).fetchall()
    expected = python_sources.readings(T0 + 2 * HOUR, T0 + 3 * HOUR, "east", timedelta(minutes=5))
    assert loaded == [(r["sensor_tag"], datetime.fromtimestamp(r["relative_time"], UTC),
                       r["sensor_value"]) for r in expected]


def test_connection_errors_are_transient_for_fetch_and_probe() -> None:
    conn = connector("fetch_pages")
    conn.probe()
    python_sources.GONE["value"] = True
    with pytest.raises(TransientSourceError, match="ConnectionError: historian for north is "
                       "unreachable"):
        rows(conn)
    with pytest.raises(TransientSourceError, match="historian is unreachable"):
        conn.probe()
