"""Name limits are checked when the config loads, not when Dagster or PostgreSQL trips on them.

A source name longer than Dagster's 63-character tag values used to pass validation and
then fail the whole code location; a long table name made PostgreSQL cut the names derived
from it (`<table>_rejects_window_idx`, ...) silently.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from pull_pipeline.config.loader import load_project
from pull_pipeline.config.models import MAX_IDENTIFIER, MAX_SOURCE_NAME, MAX_TABLE_NAME
from pull_pipeline.definitions import build_definitions
from pull_pipeline.errors import ConfigError
from pull_pipeline.sink.timescale import TimescaleSink, create_schema


def longest_name(last: str) -> str:
    return "s" * (MAX_SOURCE_NAME - 1) + last


def write_config(tmp_path: Path, sources: dict[str, Any], **blocks: Any) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"landing": {"path": str(tmp_path / "landing")},
                                    **blocks, "sources": sources}))
    return path


def python_source(**extra: Any) -> dict[str, Any]:
    return {"kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_frame",
            "partitions": {"start": "2024-01-01"}, **extra}


def test_limits_follow_from_dagster_and_postgresql() -> None:
    assert MAX_SOURCE_NAME == 63  # Dagster: a tag value holds at most 63 characters
    # The longest derived name: a rollup whose width is 10079 minutes, with its primary key.
    assert MAX_TABLE_NAME + len("_rollup_10079min_pkey") <= MAX_IDENTIFIER == 63


def test_too_long_source_name_fails_at_load_naming_file_source_and_limit(tmp_path: Path) -> None:
    name = "s" * (MAX_SOURCE_NAME + 1)
    path = write_config(tmp_path, {"ok": python_source(), name: python_source()})
    with pytest.raises(ConfigError) as error:
        load_project(path)
    message = str(error.value)
    assert str(path) in message
    assert f"source {name!r}" in message
    assert f"{MAX_SOURCE_NAME + 1} characters long; at most {MAX_SOURCE_NAME}" in message
    assert "pull_pipeline/source" in message


def test_source_name_with_trailing_newline_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="letters, digits and underscores"):
        load_project(write_config(tmp_path, {"plant\n": python_source()}))


def test_longest_source_names_build_every_definition(tmp_path: Path) -> None:
    """Every kind, with archive, freshness and gap checks: every name made from the source."""
    (tmp_path / "files").mkdir()
    sources = {
        longest_name("p"): python_source(freshness={"fail_after": "2h"}, expected_interval="1min"),
        longest_name("r"): {"kind": "rest", "url": "http://127.0.0.1:9/readings",
                            "partitions": {"start": "2024-01-01"}},
        longest_name("q"): {"kind": "sql", "url": "sqlite://", "partitions": {"start": "2024-01-01"},
                            "query": "SELECT 1 WHERE :start < :end"},
        longest_name("f"): {"kind": "files", "path": str(tmp_path / "files"),
                            "partitions": {"start": "2024-01-01"}},
    }
    project = load_project(write_config(tmp_path, sources,
                                        archive={"path": str(tmp_path / "archive")}))
    defs = build_definitions(project)
    dg.Definitions.validate_loadable(defs)
    repository = defs.get_repository_def()
    name = longest_name("p")
    jobs = {job.name for job in repository.get_all_jobs()}
    assert {f"pull_{name}", f"replay_{name}", f"restore_{name}"} <= jobs
    sensors = {sensor.name for sensor in repository.sensor_defs}
    assert {f"recover_{name}", f"freshness_{name}", f"archive_{name}"} <= sensors
    assert f"pull_{name}_schedule" in {schedule.name for schedule in repository.schedule_defs}
    assert repository.assets_defs_by_key[dg.AssetKey([name, "raw"])].tags_by_key[
        dg.AssetKey([name, "raw"])]["pull_pipeline/source"] == name


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("t" * (MAX_TABLE_NAME + 1), f"{MAX_TABLE_NAME + 1} characters long; at most {MAX_TABLE_NAME}"),
        ("metrics." + "t" * 57, "<table>_rejects_window_idx"),
        ("s" * (MAX_IDENTIFIER + 1) + ".readings", f"PostgreSQL allows at most {MAX_IDENTIFIER}"),
        ("readings\n", "table must be a name"),
    ],
)
def test_too_long_table_name_fails_at_load(tmp_path: Path, table: str, expected: str) -> None:
    path = write_config(tmp_path, {"plant": python_source()}, sink={"table": table})
    with pytest.raises(ConfigError) as error:
        load_project(path)
    message = str(error.value)
    assert str(path) in message and "sink.table" in message and expected in message


def test_longest_table_name_creates_its_schema_untruncated(tmp_path: Path, pg_dsn: str) -> None:
    """Every relation and constraint the sink makes keeps the whole table name in its own."""
    schema = f"limits_{uuid.uuid4().hex[:8]}"
    table = f"r{uuid.uuid4().hex}".ljust(MAX_TABLE_NAME, "x")
    path = write_config(tmp_path, {"plant": python_source()}, sink={
        "dsn": pg_dsn, "table": f"{schema}.{table}", "rollups": ["1h", "10079min"]})
    config = load_project(path).config.sink
    assert len(table) == MAX_TABLE_NAME
    sink = TimescaleSink.from_config(config, tmp_path / "state")
    notices: list[str] = []
    with sink.connect() as conn:
        conn.add_notice_handler(lambda notice: notices.append(str(notice.message_primary)))
        timescale = create_schema(conn, sink)
        relations = {row[0] for row in conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace", (schema,))}
        constraints = {row[0] for row in conn.execute(
            "SELECT conname FROM pg_constraint WHERE connamespace = %s::regnamespace", (schema,))}
    assert not [n for n in notices if "truncated" in n], notices
    expected = {table, f"{table}_rejects", f"{table}_rejects_window_idx",
                f"{table}_rejects_id_seq", f"{table}_rejects_pkey", f"{table}_pkey",
                f"{table}_rollup_1h", f"{table}_rollup_10079min"}
    expected |= {f"{table}_ts_idx"} if timescale else {
        f"{table}_source_ts_idx", f"{table}_rollup_1h_pkey", f"{table}_rollup_10079min_pkey"}
    assert expected <= relations
    assert all(name.startswith(table) for name in relations | constraints), relations | constraints
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
