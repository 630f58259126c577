"""PostgreSQL instance storage exactly as dagster.yaml documents it (its commented block):
dagster-postgres through `pull_pipeline.defs.instance_storage`, which pools its connections."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import sqlalchemy
import yaml
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage

from pull_pipeline.defs import instance_storage
from pull_pipeline.defs.instance_storage import (
    EVENT_BATCH_SIZE,
    EVENT_BATCH_VARIABLE,
    POOL_DEFAULTS,
)
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
    storage = documented_storage()["storage"]["custom"]["config"]["postgres_db"]
    assert storage["scheme"] == "postgresql+psycopg2"
    assert storage["password"] == {"env": "DAGSTER_PG_PASSWORD"}


def instance_home(tmp_path: Path, db: DagsterDb) -> Path:
    """DAGSTER_HOME with dagster.yaml and its documented storage block, pointed at `db`: only
    where the database is changes; the driver scheme and the password's source stay."""
    settings = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    storage = documented_storage()
    storage["storage"]["custom"]["config"]["postgres_db"].update(
        hostname=db.host, port=int(db.port), db_name=db.name, username=db.user)
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(yaml.safe_dump({**settings, **storage}))
    return home


def count_connects(instance: dg.DagsterInstance) -> list[int]:
    """A list that grows by one for every new PostgreSQL connection of the instance's storages."""
    connects: list[int] = []
    storages: list[Any] = [instance.run_storage, instance.event_log_storage,
                           instance.schedule_storage]
    for engine in {id(storage._engine): storage._engine for storage in storages}.values():
        sqlalchemy.event.listen(engine, "connect", lambda *_: connects.append(1))
    return connects


def test_a_window_materializes_on_postgres_instance_storage(
    dagster_db: DagsterDb, readings_api: ReadingsApi,  # noqa: F811
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    home = instance_home(tmp_path, dagster_db)
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": readings_api.source_config()}})

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        connects = count_connects(instance)
        result = run_source(project, "plant", PARTITION, instance=instance)
        events = len(instance.get_records_for_run(result.run_id, limit=1000).records)
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
    # The run's events reused pooled connections (plain dagster-postgres: one per statement).
    assert events >= 20 and len(connects) <= 3, (events, len(connects))
    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()
    assert loaded == (len(sample_readings()),)


def test_a_ranged_run_writes_its_planned_events_materializations_and_evaluations_in_batches(
    dagster_db: DagsterDb, readings_api: ReadingsApi,  # noqa: F811
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    """Three windows in one run: the storage turns on Dagster's batched event writes, so each
    asset's three materializations are one INSERT, the run's eight planned events (a
    materialization per window and asset, an evaluation per check) one more, each check's
    three evaluations one more (and one UPDATE of their execution rows), and every window
    still shows as loaded and checked."""
    home = instance_home(tmp_path, dagster_db)
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": readings_api.source_config()}})
    keys = ["2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"]
    inserts: list[str] = []
    updates: list[str] = []

    def count_insert(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if statement.lstrip().upper().startswith("INSERT INTO EVENT_LOGS"):
            inserts.append(statement)
        if statement.lstrip().upper().startswith("UPDATE ASSET_CHECK_EXECUTIONS"):
            updates.append(statement)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        assert os.environ[EVENT_BATCH_VARIABLE] == str(EVENT_BATCH_SIZE)
        sqlalchemy.event.listen(instance.event_log_storage._engine,  # type: ignore[attr-defined]
                                "before_cursor_execute", count_insert)
        result = run_source(project, "plant", instance=instance, tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1]})
        assert result.success, failure_text(result)
        for asset in ("raw", "readings"):
            assert instance.get_materialized_partitions(dg.AssetKey(["plant", asset])) == set(keys)
        record = instance.get_asset_records([dg.AssetKey(["plant", "readings"])])[0]
        assert record.asset_entry.last_run_id == result.run_id
    run = f"run_id = '{result.run_id}'"
    stored = dagster_db.count(f"SELECT count(*) FROM event_logs WHERE {run}")

    def stored_of(kind: str) -> int:
        return dagster_db.count(
            f"SELECT count(*) FROM event_logs WHERE dagster_event_type = '{kind}' AND {run} "
            "AND (partition IS NOT NULL OR dagster_event_type LIKE 'ASSET_CHECK%')")

    assert stored_of("ASSET_MATERIALIZATION") == 6
    assert stored_of("ASSET_MATERIALIZATION_PLANNED") == 6
    assert stored_of("ASSET_CHECK_EVALUATION_PLANNED") == 2
    assert stored_of("ASSET_CHECK_EVALUATION") == 6
    # 6 materializations in 2 INSERTs, 8 planned events in 1, 6 evaluations in 2: 15 rows
    # fewer than INSERTs (11 when evaluations go one by one)
    assert stored - len(inserts) >= 15, (stored, len(inserts))
    assert len(updates) == 2  # each check's three execution rows in one UPDATE (6 one by one)
    checked = dagster_db.count(  # has_rows fails for the two windows the API has no rows in
        f"SELECT count(*) FROM asset_check_executions WHERE {run} AND partition IS NOT NULL "
        "AND execution_status IN ('SUCCEEDED', 'FAILED') "
        "AND materialization_event_storage_id IS NOT NULL")
    assert checked == 6  # two checks, each window: planned, then evaluated on its materialization
    failed = dagster_db.count(
        f"SELECT count(*) FROM asset_check_executions WHERE {run} AND execution_status = 'FAILED'")
    assert failed == 2  # has_rows (WARN) on the two windows without rows


def test_the_catalog_is_asked_only_until_the_tables_are_there(
    dagster_db: DagsterDb, tmp_path: Path  # noqa: F811
) -> None:
    """dagster-postgres reflects the table list before nearly every sensor-state or tick
    statement, and asset-key columns before asset reads; once found, the pooled storage
    stops asking (what the daemon and code server do thousands of times a minute)."""
    home = instance_home(tmp_path, dagster_db)
    catalog: list[str] = []

    def count_catalog(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        if "pg_catalog" in statement:
            catalog.append(statement)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("catalog"))

        def work() -> None:
            instance.all_instigator_state()
            instance.get_asset_records([dg.AssetKey("catalog")])
            instance.get_latest_materialization_event(dg.AssetKey("catalog"))

        work()  # finds the tables
        sqlalchemy.event.listen(instance.event_log_storage._engine,  # type: ignore[attr-defined]
                                "before_cursor_execute", count_catalog)
        for _ in range(5):
            work()
        assert len(instance.all_instigator_state()) == 0
    assert catalog == []


def test_a_batch_size_set_by_hand_wins(
    dagster_db: DagsterDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.setenv(EVENT_BATCH_VARIABLE, "0")  # batching off
    with dg.DagsterInstance.from_config(str(instance_home(tmp_path, dagster_db))):
        assert os.environ[EVENT_BATCH_VARIABLE] == "0"


def test_a_forked_child_opens_its_own_connections(
    dagster_db: DagsterDb, tmp_path: Path  # noqa: F811
) -> None:
    """A pooled connection is never shared with a forked child (Celery's prefork workers):
    the child starts with an empty pool, and both processes go on writing."""
    home = instance_home(tmp_path, dagster_db)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("before_fork"))
        engine = instance.event_log_storage._engine  # type: ignore[attr-defined]
        assert engine.pool.checkedin() >= 1
        read, write = os.pipe()
        child = os.fork()
        if child == 0:  # the child: report what it inherited, then write on its own connection
            inherited = engine.pool.checkedin()
            instance.report_runless_asset_event(dg.AssetMaterialization("in_child"))
            os.write(write, str(inherited).encode())
            os._exit(0)
        os.close(write)
        _, status = os.waitpid(child, 0)
        inherited_in_child = int(os.read(read, 16) or b"-1")
        instance.report_runless_asset_event(dg.AssetMaterialization("after_fork"))
    assert status == 0 and inherited_in_child == 0
    assert dagster_db.count("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%fork%' "
                            "OR asset_key LIKE '%in_child%'") == 3


def test_instances_of_one_process_share_a_few_connections(
    dagster_db: DagsterDb, tmp_path: Path  # noqa: F811
) -> None:
    """The code server builds an instance per sensor tick: twenty instances alive at once,
    each writing, hold no more connections than one pool keeps."""
    home = instance_home(tmp_path, dagster_db)
    instances = [dg.DagsterInstance.from_config(str(home)) for _ in range(20)]
    for number, instance in enumerate(instances):
        instance.report_runless_asset_event(dg.AssetMaterialization(f"tick_{number}"))
    held = dagster_db.count("SELECT count(*) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    for instance in instances:
        instance.dispose()
    assert 1 <= held <= POOL_DEFAULTS["pool_size"], held
    assert dagster_db.count("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%tick_%'") == 20


def test_a_connection_the_server_closed_is_replaced_unseen(
    dagster_db: DagsterDb, tmp_path: Path, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    """After the server drops the pooled connections (a restart, an idle timeout), the next
    write pings, finds them gone and connects again instead of failing."""
    monkeypatch.setattr(instance_storage, "PING_AFTER_IDLE_SECONDS", 0.0)
    home = instance_home(tmp_path, dagster_db)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.report_runless_asset_event(dg.AssetMaterialization("before_restart"))
        dropped = dagster_db.count(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        instance.report_runless_asset_event(dg.AssetMaterialization("after_restart"))
    assert dropped >= 1
    assert dagster_db.count("SELECT count(*) FROM event_logs WHERE asset_key LIKE '%restart%'") == 2
