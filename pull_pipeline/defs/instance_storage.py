"""Dagster's instance storage for a fleet: dagster-postgres, with pooled connections.

dagster-postgres opens a new PostgreSQL connection for every statement outside the
webserver (SQLAlchemy's `NullPool`, so that short-lived processes hold none), and checks
its tables on yet another one each time an instance is built, which the code server does
for every sensor tick. The daemon and the run workers are where a fleet writes: creating
one run stores its snapshots and planned events, and a run stores several events per
window. A connection costs about 15 ms here (a server process forked for it): py-spy put
40% of the daemon's time during a 500-source catch-up in `connect`.

`PooledPostgresStorage` is dagster-postgres whose three storages share one `QueuePool`
engine per process and database: every instance a process builds (the code server builds
one per tick) uses the same few connections, and the tables are checked once per process.
A connection idle for a while is pinged before use, so a restarted server is no error;
waiting for a free one is bounded by `pool_timeout_seconds`. Overflow connections close
when returned, so a process never holds more connections than it uses at once, plus
`pool_size` idle ones. A forked child (a Celery prefork worker) starts with an empty pool.

It also turns on Dagster's batched event writes (`event_batch_size`, default 1,000): a
ranged run's materializations, one per window and asset, then go to PostgreSQL as one
INSERT per asset instead of one each, a run's planned events (one per window and asset,
handed over as one batch when the run is created) one INSERT in all, and a ranged run's
check evaluations (one per window and check, logged as a batch by `checks.per_window`) one
INSERT and one UPDATE of their execution rows. Dagster
reads that setting only from the DAGSTER_EVENT_BATCH_SIZE variable of the process writing
the events, so the storage sets it when it is built, in every process that writes (daemon,
webserver, run and step workers), unless the variable is already set (0 turns batching
off). A 500-window backfill of 4,000-row windows took 56–62 s with it, 70 s without.

Select it in dagster.yaml with `storage: custom: {module: pull_pipeline.defs.instance_storage,
class: PooledPostgresStorage, config: {postgres_db: ..., pool_size: 4}}`; the `postgres_db`
(or `postgres_url`) settings are dagster-postgres's own. The webserver still swaps in
Dagster's own small pool, as it does for `storage: postgres:`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

import sqlalchemy
from dagster import AssetCheckEvaluation, DagsterEventType, EventLogEntry, Field, IntSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.events import ASSET_CHECK_EVENTS
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster._core.storage.config import pg_config
from dagster._core.storage.event_log.schema import SqlEventLogStorageTable
from dagster._serdes import ConfigurableClassData, serialize_value
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.event_log import PostgresEventLogStorage
from dagster_postgres.run_storage import PostgresRunStorage
from dagster_postgres.schedule_storage import PostgresScheduleStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.engine import Connection, Engine

POOL_DEFAULTS = {"pool_size": 4, "max_overflow": 16, "pool_timeout_seconds": 30,
                 "pool_recycle_seconds": 3600}
# Dagster writes a ranged run's asset events in batches of this many when DAGSTER_EVENT_BATCH_SIZE
# says so; dagster-postgres stores a batch of materializations with one INSERT.
EVENT_BATCH_SIZE = 1000
EVENT_BATCH_VARIABLE = "DAGSTER_EVENT_BATCH_SIZE"
# A connection unused for longer than this is pinged before it is handed out; a busy one is
# not (a ping per statement cost the daemon a fifth of its time).
PING_AFTER_IDLE_SECONDS = 10.0

_ENGINES: dict[tuple[str, tuple[tuple[str, int], ...]], Engine] = {}
_TABLES_CHECKED: set[str] = set()
_FOUND: set[tuple[str, str]] = set()  # (database, table or column or index) known to exist
_LOCK = threading.Lock()
# What Dagster hands over in one batch when it creates a run, and what `checks.per_window`
# logs as one batch: a ranged run's check evaluations.
_BATCHED_HERE = {DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
                 DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
                 DagsterEventType.ASSET_CHECK_EVALUATION}


# Each evaluation's planned execution row, found by (run, asset, check, partition) as dagster
# finds it, updated the way `_update_asset_check_evaluation` updates it.
_EVALUATION_COLUMNS = ("run_ids", "asset_keys", "check_names", "partitions", "statuses",
                       "events", "timestamps", "event_ids", "materialization_ids")
_UPDATE_EVALUATIONS = sqlalchemy.text("""
    UPDATE asset_check_executions AS e
    SET execution_status = v.status, evaluation_event = v.event,
        evaluation_event_timestamp = v.ts, evaluation_event_storage_id = v.event_id,
        materialization_event_storage_id = v.materialization_id
    FROM unnest(CAST(:run_ids AS text[]), CAST(:asset_keys AS text[]),
                CAST(:check_names AS text[]), CAST(:partitions AS text[]),
                CAST(:statuses AS text[]), CAST(:events AS text[]),
                CAST(:timestamps AS timestamp[]), CAST(:event_ids AS bigint[]),
                CAST(:materialization_ids AS bigint[]))
        AS v(run_id, asset_key, check_name, partition, status, event, ts, event_id,
             materialization_id)
    WHERE e.run_id = v.run_id AND e.asset_key = v.asset_key AND e.check_name = v.check_name
        AND e.partition = v.partition
    RETURNING e.run_id, e.asset_key, e.check_name, e.partition""")


def _forget_inherited_connections() -> None:
    """In a forked child: the parent's connections are the parent's."""
    for engine in _ENGINES.values():
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


def _ping_when_idle(engine: Engine) -> None:
    """Ping a connection before use only when it sat idle (pessimistic, but cheap)."""

    @sqlalchemy.event.listens_for(engine, "checkin")
    def checked_in(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @sqlalchemy.event.listens_for(engine, "checkout")
    def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None or time.monotonic() - idle_since < PING_AFTER_IDLE_SECONDS:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
        except Exception as exc:  # the pool then retries with a new connection
            raise sqlalchemy.exc.DisconnectionError("stale pooled connection") from exc


def shared_engine(postgres_url: str, pool: Mapping[str, int]) -> Engine:
    """The process's pooled engine for this database and these pool settings."""
    key = (postgres_url, tuple(sorted(pool.items())))
    with _LOCK:
        engine = _ENGINES.get(key)
        if engine is None:
            engine = create_pg_engine(
                postgres_url, None, isolation_level="AUTOCOMMIT",
                pool_size=pool["pool_size"], max_overflow=pool["max_overflow"],
                pool_timeout=pool["pool_timeout_seconds"],
                pool_recycle=pool["pool_recycle_seconds"])
            _ping_when_idle(engine)
            _ENGINES[key] = engine
        return engine


def _known(postgres_url: str, what: str, probe: Callable[[], bool]) -> bool:
    """Whether `what` (a table, a column, a finished index migration) exists in the database,
    asking it only until it does: none goes away under a running deployment."""
    if (postgres_url, what) in _FOUND:
        return True
    found = probe()
    if found:
        with _LOCK:
            _FOUND.add((postgres_url, what))
    return found


class KnownTablesScheduleStorage(PostgresScheduleStorage):
    """dagster-postgres's schedule storage, asking the catalog only until a table is there.

    It reflects the table list before nearly every statement (tick and sensor state reads
    and writes): 11% of the daemon's time at 500 sources went to those catalog queries."""

    def has_instigators_table(self) -> bool:
        return (self.postgres_url, "table instigators") in _FOUND or super().has_instigators_table()

    def _has_instigators_table(self, conn: Connection) -> bool:
        return _known(self.postgres_url, "table instigators",
                      lambda: PostgresScheduleStorage._has_instigators_table(self, conn))

    def has_secondary_index_table(self) -> bool:
        return _known(self.postgres_url, "table secondary_indexes",
                      lambda: PostgresScheduleStorage.has_secondary_index_table(self))

    def has_built_index(self, migration_name: str) -> bool:
        return _known(self.postgres_url, f"schedule index {migration_name}",
                      lambda: PostgresScheduleStorage.has_built_index(self, migration_name))


class KnownTablesEventLogStorage(PostgresEventLogStorage):
    """dagster-postgres's event log, asking the catalog only until a table or column is there
    (it asks before asset-check writes and asset-record reads), and storing a run's planned
    events and a ranged run's check evaluations a batch at a time."""

    stores_check_evaluation_batches = True  # read by `checks.per_window`

    def has_table(self, table_name: str) -> bool:
        return _known(self.postgres_url, f"table {table_name}",
                      lambda: PostgresEventLogStorage.has_table(self, table_name))

    def _has_asset_key_col_on_connection(self, conn: Connection, column_name: str) -> bool:
        return _known(self.postgres_url, f"column asset_keys.{column_name}",
                      lambda: PostgresEventLogStorage._has_asset_key_col_on_connection(
                          self, conn, column_name))

    def store_event_batch(self, events: Sequence[EventLogEntry]) -> None:
        """A run's planned events, or a ranged run's check evaluations, in one INSERT, as
        dagster-postgres stores materializations.

        Dagster hands over all of a run's planned events as one batch when it creates the run:
        a planned materialization per window and asset, a planned evaluation per check; a
        ranged run's check evaluations come as one batch from `checks.per_window`.
        dagster-postgres stores a mixed batch one event at a time (an INSERT, a NOTIFY and an
        asset-entry upsert each) and refuses evaluations. Here the rows go in with one INSERT;
        then, as `store_event` would leave them, each asset's entry holds its last event and
        each check's execution rows are written or updated. Any other batch is
        dagster-postgres's.
        """
        kinds = {event.get_dagster_event().event_type for event in events}
        if not kinds <= _BATCHED_HERE or not events:
            super().store_event_batch(events)
            return
        with self._connect() as conn:
            inserted = conn.execute(self.prepare_insert_event_batch(events).returning(
                SqlEventLogStorageTable.c.id))
            event_ids = [int(row[0]) for row in inserted.fetchall()]
        planned = [(event, event_id) for event, event_id in zip(events, event_ids, strict=True)
                   if event.dagster_event_type == DagsterEventType.ASSET_MATERIALIZATION_PLANNED]
        last = {event.get_dagster_event().asset_key: (event, event_id)
                for event, event_id in planned}
        if planned:
            with self.index_transaction() as conn:
                self._store_asset_event_tags(conn, [e for e, _ in planned],
                                             [i for _, i in planned])
                for event, event_id in last.values():
                    self._store_asset_event(conn, event, event_id)
        checks = [(event, event_id) for event, event_id in zip(events, event_ids, strict=True)
                  if event.dagster_event_type in ASSET_CHECK_EVENTS]
        for event, event_id in self._update_evaluations(checks):
            self.store_asset_check_event(event, event_id)

    def _update_evaluations(
        self, checks: Sequence[tuple[EventLogEntry, int]]
    ) -> list[tuple[EventLogEntry, int]]:
        """Mark the planned execution rows of a run's partitioned evaluations with one UPDATE
        (what dagster's `store_asset_check_event` does row by row); returns the events it did
        not cover, for that: planned events, runless or unpartitioned evaluations, and any
        evaluation without a planned row."""
        rows: dict[tuple[str, str, str, str],
                   tuple[EventLogEntry, int, AssetCheckEvaluation]] = {}
        rest = []
        for event, event_id in checks:
            data = event.get_dagster_event().event_specific_data
            if (event.dagster_event_type != DagsterEventType.ASSET_CHECK_EVALUATION
                    or not event.run_id or not isinstance(data, AssetCheckEvaluation)
                    or data.partition is None):
                rest.append((event, event_id))
                continue
            rows[(event.run_id, data.asset_key.to_string(), data.check_name, data.partition)] = (
                event, event_id, data)
        if not rows:
            return rest
        columns: dict[str, list[Any]] = {name: [] for name in _EVALUATION_COLUMNS}
        for (run_id, asset_key, check_name, partition), (event, event_id, data) in rows.items():
            target = data.target_materialization_data
            for name, value in zip(_EVALUATION_COLUMNS, (
                    run_id, asset_key, check_name, partition,
                    (AssetCheckExecutionRecordStatus.SUCCEEDED if data.passed
                     else AssetCheckExecutionRecordStatus.FAILED).value,
                    serialize_value(event), self._event_insert_timestamp(event), event_id,
                    target.storage_id if target else None), strict=True):
                columns[name].append(value)
        with self.index_connection() as conn:
            updated = conn.execute(_UPDATE_EVALUATIONS, columns).fetchall()
        for key in updated:
            rows.pop(tuple(key), None)
        return rest + [(event, event_id) for event, event_id, _ in rows.values()]


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event-log and schedule storages share a pool."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None,
                 pool: Mapping[str, int] | None = None, token_provider: Any = None,
                 event_batch_size: int = EVENT_BATCH_SIZE) -> None:
        # The variable of the process, read by Dagster for every event; one set by hand wins.
        os.environ.setdefault(EVENT_BATCH_VARIABLE, str(event_batch_size))
        with _LOCK:
            create = should_autocreate_tables and postgres_url not in _TABLES_CHECKED
        # DagsterPostgresStorage.__init__, with the storages above for two of its three.
        super(DagsterPostgresStorage, self).__init__()
        self.postgres_url = postgres_url
        self.should_autocreate_tables = should_autocreate_tables
        self._inst_data = inst_data
        self._run_storage = PostgresRunStorage(postgres_url, create, token_provider=token_provider)
        self._event_log_storage = KnownTablesEventLogStorage(postgres_url, create,
                                                             token_provider=token_provider)
        self._schedule_storage = KnownTablesScheduleStorage(postgres_url, create,
                                                            token_provider=token_provider)
        with _LOCK:
            _TABLES_CHECKED.add(postgres_url)
        if token_provider is not None:
            return  # tokens expire: keep dagster-postgres's connection per statement
        engine = shared_engine(postgres_url, {**POOL_DEFAULTS, **(pool or {})})
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            # Each storage connects only through `_engine`; dagster-postgres offers no setting.
            storage._engine = engine

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        fields = {key: Field(IntSource, is_required=False, default_value=value)
                  for key, value in {**POOL_DEFAULTS, "event_batch_size": EVENT_BATCH_SIZE}.items()}
        return {**cast(dict[str, Any], pg_config()), **fields}

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData | None, config_value: Mapping[str, Any]
    ) -> PooledPostgresStorage:
        return cls(
            pg_url_from_config(config_value),
            config_value.get("should_autocreate_tables", True),
            inst_data=inst_data,
            pool={key: config_value[key] for key in POOL_DEFAULTS if key in config_value},
            token_provider=get_token_provider_from_config(config_value),
            event_batch_size=config_value.get("event_batch_size", EVENT_BATCH_SIZE),
        )
