"""PostgreSQL instance storage exactly as dagster.yaml documents it (its commented block)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import yaml

from pull_pipeline_tests.dagster_pg import DagsterDb, dagster_db  # noqa: F401 - fixture
from pull_pipeline_tests.helpers import failure_text, make_project, run_source
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

ROOT = Path(__file__).resolve().parents[1]
PARTITION = "2024-01-01-00:00"


def documented_storage() -> dict[str, Any]:
    """The `storage:` block that dagster.yaml ships commented out, as YAML."""
    lines = (ROOT / "dagster.yaml").read_text().splitlines()
    start = lines.index("# storage:")
    block = []
    for line in lines[start:]:
        if not line.startswith("#"):
            break
        block.append(line[2:])
    parsed: dict[str, Any] = yaml.safe_load("\n".join(block))
    return parsed


def test_the_documented_block_keeps_the_psycopg2_scheme() -> None:
    storage = documented_storage()["storage"]["postgres"]["postgres_db"]
    assert storage["scheme"] == "postgresql+psycopg2"
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def test_a_window_materializes_on_postgres_instance_storage(
    dagster_db: DagsterDb, readings_api: ReadingsApi,  # noqa: F811
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    storage = documented_storage()
    # Only where the database is changes; the driver scheme and the password's source stay.
    storage["storage"]["postgres"]["postgres_db"].update(
        hostname=dagster_db.host, port=int(dagster_db.port), db_name=dagster_db.name,
        username=dagster_db.user)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({**settings, **storage}))
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": readings_api.source_config()}})

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        result = run_source(project, "plant", PARTITION, instance=instance)
        assert result.success, failure_text(result)
        readings = instance.get_latest_materialization_event(dg.AssetKey(["plant", "readings"]))
        assert readings is not None and readings.dagster_event is not None
        assert readings.dagster_event.partition == PARTITION
        assert instance.get_run_by_id(result.run_id).status == dg.DagsterRunStatus.SUCCESS  # type: ignore[union-attr]

    # The events are rows in PostgreSQL, readable by any other machine.
    assert dagster_db.count(
        "SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION' "
        f"AND run_id = '{result.run_id}'") == 2  # raw and readings
    assert dagster_db.count("SELECT count(*) FROM runs") == 1
    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()
    assert loaded == (len(sample_readings()),)
