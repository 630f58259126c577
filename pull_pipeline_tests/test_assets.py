"""raw -> readings through Dagster, against the real PostgreSQL, with a python source."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from pull_pipeline.config.loader import Project
from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests import fake_sources
from pull_pipeline_tests.helpers import (
    failure_text,
    make_project,
    materialization_metadata,
    run_source,
)

T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def project(tmp_path: Path, pg_dsn: str, table_name: str) -> Project:
    fake_sources.reset(fake_sources.hourly_rows(T0, hours=3))
    return make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {
            "kind": "python", "function": "pull_pipeline_tests.fake_sources:fetch",
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"},
            "max_reject_ratio": 0.1,
        }},
    })


def checks_passed(result: dg.ExecuteInProcessResult, name: str) -> list[bool]:
    return [c.passed for c in result.get_asset_check_evaluations() if c.check_name == name]


def sink_rows(dsn: str, table: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {table} ORDER BY ts, sensor_tag").fetchall()


def test_partition_lands_exactly_the_window_and_reruns_do_not_duplicate(
    project: Project, pg_dsn: str, table_name: str
) -> None:
    for _ in range(2):
        result = run_source(project, "plant", "2024-01-01-01:00")
        assert result.success, failure_text(result)
    rows = sink_rows(pg_dsn, table_name)
    assert len(rows) == 60 * 3
    assert rows[0][1] == datetime(2024, 1, 1, 1, tzinfo=UTC)
    assert rows[-1][1] == datetime(2024, 1, 1, 1, 59, tzinfo=UTC)
    metadata = materialization_metadata(result, "plant")
    assert metadata["rows_fetched"] == 180 and metadata["rows_loaded"] == 180
    assert metadata["rows_rejected"] == 0 and metadata["rows_deduplicated"] == 0
    assert metadata["sensors"] == 3 and metadata["pages"] == 1
    assert {"min_ts", "max_ts", "seconds", "rows_per_second", "seconds_validate"} <= set(metadata)
    assert (project.root / "landing" / "plant" / "2024-01-01-01:00.parquet").exists()


def test_ranged_backfill_is_one_run_covering_every_window(
    project: Project, pg_dsn: str, table_name: str
) -> None:
    result = run_source(project, "plant", tags={
        "dagster/asset_partition_range_start": "2024-01-01-00:00",
        "dagster/asset_partition_range_end": "2024-01-01-02:00",
    })
    assert result.success, failure_text(result)
    assert len(fake_sources.CALLS) == 3  # one fetch per window, all in this one run
    assert len(sink_rows(pg_dsn, table_name)) == 3 * 60 * 3
    keys = {e.partition for e in result.get_asset_materialization_events()}
    assert keys == {"2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"}


def test_malformed_rows_are_quarantined_and_the_rest_loads(
    project: Project, pg_dsn: str, table_name: str
) -> None:
    fake_sources.ROWS.extend([
        {"sensor_tag": "sensor_0", "relative_time": int(T0.timestamp()) + 5, "sensor_value": "n/a"},
        {"sensor_tag": "", "relative_time": int(T0.timestamp()) + 6, "sensor_value": 1.0},
    ])
    result = run_source(project, "plant", "2024-01-01-00:00")
    assert result.success, failure_text(result)
    assert len(sink_rows(pg_dsn, table_name)) == 180
    with psycopg.connect(pg_dsn) as conn:
        rejects = conn.execute(
            f"SELECT partition_key, raw_row::jsonb->>'sensor_value', reason FROM {table_name}_rejects "
            "ORDER BY reason").fetchall()
    assert [r[0] for r in rejects] == ["2024-01-01-00:00"] * 2
    assert "sensor_tag is empty" in rejects[0][2]
    assert rejects[1][1] == "n/a" and "sensor_value is missing or not a number" in rejects[1][2]
    assert checks_passed(result, "valid_rows") == [True]


def test_over_reject_ratio_fails_naming_source_and_keeps_previous_rows(
    project: Project, pg_dsn: str, table_name: str
) -> None:
    assert run_source(project, "plant", "2024-01-01-00:00").success
    before = sink_rows(pg_dsn, table_name)
    bad = [{"sensor_tag": "x", "relative_time": "yesterday", "sensor_value": 1} for _ in range(50)]
    fake_sources.ROWS.extend(bad)
    result = run_source(project, "plant", "2024-01-01-00:00")
    assert not result.success
    message = failure_text(result)
    assert "plant: too many rows rejected in window 2024-01-01-00:00" in message
    assert "max_reject_ratio" in message
    assert sink_rows(pg_dsn, table_name) == before
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute(f"SELECT count(*) FROM {table_name}_rejects").fetchone() == (50,)
    assert checks_passed(result, "valid_rows") == [False]


def test_unreachable_sink_fails_and_keeps_previous_rows(
    project: Project, pg_dsn: str, table_name: str, tmp_path: Path
) -> None:
    assert run_source(project, "plant", "2024-01-01-00:00").success
    broken = make_project(tmp_path, {
        **project.config.model_dump(mode="json", exclude={"sink"}),
        "sink": {"dsn": "postgresql://writer:pw-never-shown@127.0.0.1:1/db", "table": table_name},
    })
    result = run_source(broken, "plant", "2024-01-01-00:00")
    assert not result.success
    assert "cannot connect to the sink" in failure_text(result)
    assert "pw-never-shown" not in failure_text(result)
    assert len(sink_rows(pg_dsn, table_name)) == 180


def test_missing_variable_fails_only_that_source(
    tmp_path: Path, pg_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PLANT_B_TOKEN_UNSET", raising=False)
    fake_sources.reset(fake_sources.hourly_rows(T0, hours=1))
    source = {"kind": "python", "function": "pull_pipeline_tests.fake_sources:fetch",
              "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"good": source,
                    "bad": {**source, "options": {"token": "${PLANT_B_TOKEN_UNSET}"}}},
    })
    defs = build_definitions(project)  # the project loads although a variable is missing
    assert dg.AssetKey(["bad", "readings"]) in defs.resolve_all_asset_keys()
    assert run_source(project, "good", "2024-01-01-00:00").success
    result = run_source(project, "bad", "2024-01-01-00:00")
    assert not result.success
    assert "PLANT_B_TOKEN_UNSET is not set" in failure_text(result)
    assert "source 'bad'" in failure_text(result)


def test_replaying_readings_needs_no_source_call(project: Project, pg_dsn: str, table_name: str) -> None:
    assert run_source(project, "plant", "2024-01-01-00:00").success
    fake_sources.CALLS.clear()
    fake_sources.ROWS.clear()  # the source is gone
    result = run_source(project, "plant", "2024-01-01-00:00", assets=("readings",))
    assert result.success, failure_text(result)
    assert fake_sources.CALLS == []
    assert len(sink_rows(pg_dsn, table_name)) == 180


def test_empty_window_succeeds_with_a_warning(project: Project, pg_dsn: str, table_name: str) -> None:
    result = run_source(project, "plant", "2024-01-02-00:00")  # the source has nothing then
    assert result.success, failure_text(result)
    [check] = [c for c in result.get_asset_check_evaluations() if c.check_name == "has_rows"]
    assert not check.passed and check.severity == dg.AssetCheckSeverity.WARN
    assert check.metadata["windows_without_rows"].value == ["2024-01-02-00:00"]
    assert materialization_metadata(result, "plant")["rows_loaded"] == 0
