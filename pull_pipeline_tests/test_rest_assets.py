"""A REST source through Dagster: exact loads, retries, refused credentials, no leaked secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from pull_pipeline_tests.helpers import (
    failure_text,
    make_project,
    materialization_metadata,
    run_source,
)
from pull_pipeline_tests.servers import sample_readings

PARTITION = "2024-01-01-00:00"
SECRET = "key-Zx81-never-logged"


def rest_project(tmp_path: Path, api: Any, pg_dsn: str, table: str, **overrides: Any):
    source = api.source_config(**overrides)
    source["partitions"] = {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}
    return make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table},
                                   "sources": {"plant": source}})


def count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_transient_errors_retry_then_load_exactly(
    readings_api: Any, tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = rest_project(tmp_path, readings_api, pg_dsn, table_name)
    readings_api.fail_next(2, status=500)
    result = run_source(project, "plant", PARTITION)
    assert result.success, failure_text(result)
    assert count(pg_dsn, table_name) == len(sample_readings())
    statuses = [r.status for r in readings_api.requests]
    assert statuses[:3] == [500, 500, 200]
    assert materialization_metadata(result, "plant")["pages"] == 4  # 180 rows, 50 a page


@pytest.mark.parametrize("place", ["header", "query_param"])
def test_refused_credentials_fail_at_once_and_no_secret_reaches_dagster(
    readings_api_factory: Any, tmp_path: Path, pg_dsn: str, table_name: str,
    monkeypatch: pytest.MonkeyPatch, place: str
) -> None:
    api = readings_api_factory(auth={"type": "api_key", place: "X-Key" if place == "header"
                                     else "api_key", "value": "the-right-key"})
    monkeypatch.setenv("PLANT_KEY", SECRET)
    project = rest_project(tmp_path, api, pg_dsn, table_name, auth={
        "type": "api_key", place: "X-Key" if place == "header" else "api_key",
        "value": "${PLANT_KEY}"})
    with dg.instance_for_test() as instance:
        result = run_source(project, "plant", PARTITION, instance=instance)
        assert not result.success
        assert len(api.requests) == 1  # 401 is not retried
        assert "refused the credentials" in failure_text(result)
        records = instance.get_records_for_run(result.run_id).records
        everything = "\n".join(repr(record.event_log_entry) for record in records)
    assert "plant" in failure_text(result)
    assert SECRET not in everything
    assert SECRET not in failure_text(result)


def test_successful_run_metadata_and_logs_hold_no_secret(
    readings_api_factory: Any, tmp_path: Path, pg_dsn: str, table_name: str,
    monkeypatch: pytest.MonkeyPatch
) -> None:
    api = readings_api_factory(auth={"type": "api_key", "query_param": "api_key",
                                     "value": SECRET})
    monkeypatch.setenv("PLANT_KEY", SECRET)
    project = rest_project(tmp_path, api, pg_dsn, table_name, auth={
        "type": "api_key", "query_param": "api_key", "value": "${PLANT_KEY}"})
    with dg.instance_for_test() as instance:
        result = run_source(project, "plant", PARTITION, instance=instance)
        assert result.success, failure_text(result)
        records = instance.get_records_for_run(result.run_id).records
        everything = "\n".join(repr(record.event_log_entry) for record in records)
    assert "ASSET_MATERIALIZATION" in everything
    assert SECRET not in everything
    assert count(pg_dsn, table_name) == len(sample_readings())
