"""Dagster's SQLite instance storage (the one-machine default), with its engines kept.

Dagster's SQLite event log builds a new SQLAlchemy engine for every statement it runs
(`create_engine`, then `dispose`): a ranged run writes several events per window (planned,
materialized, checked), and each then pays for a new engine and for compiling its
statements again, since SQLAlchemy caches compiled statements per engine. py-spy on a
500-window run on SQLite: about 12 ms of CPU an event, most of the run.

`SqliteStorage` is Dagster's own SQLite storage (the same files under `base_dir`, the same
schema) whose event log keeps one engine per database file it writes, the most recent few
(`_ENGINES`), each still opening a fresh connection per statement (`NullPool`), so
that the run, daemon and webserver processes share the files exactly as before. Select it in
dagster.yaml with `storage: custom: {module: pull_pipeline.defs.sqlite_storage, class:
SqliteStorage, config: {base_dir: {env: DAGSTER_HOME}}}` (the shipped dagster.yaml does).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from dagster._core.storage.sqlite_storage import DagsterSqliteStorage, _event_logs_directory
from dagster._serdes import ConfigurableClassData
from sqlalchemy import create_engine
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

# Database files whose engines stay: a run's own file and the index, with room for the
# webserver's and daemon's reads of a few runs at once.
_ENGINES = 8


class KeptEnginesEventLogStorage(SqliteEventLogStorage):
    """Dagster's SQLite event log, with an engine per database file kept, not rebuilt."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        self._engines: OrderedDict[str, Engine] = OrderedDict()
        super().__init__(base_dir, inst_data)

    @contextmanager
    def _connect(self, shard: str) -> Iterator[Connection]:
        with self._db_lock:
            engine = self._engine(shard)
            with engine.connect() as conn, conn.begin():
                yield conn

    def _engine(self, shard: str) -> Engine:
        engine = self._engines.get(shard)
        if engine is not None:
            self._engines.move_to_end(shard)
            return engine
        engine = create_engine(self.conn_string_for_shard(shard), poolclass=NullPool,
                               connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
        if shard not in self._initialized_dbs:
            self._initdb(engine)
            self._initialized_dbs.add(shard)
        self._engines[shard] = engine
        if len(self._engines) > _ENGINES:
            _, oldest = self._engines.popitem(last=False)
            oldest.dispose()
        return engine

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()
        super().dispose()


class SqliteStorage(DagsterSqliteStorage):
    """`DagsterSqliteStorage` with `KeptEnginesEventLogStorage` as its event log."""

    def __init__(self, base_dir: str, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(base_dir, inst_data)
        self._event_log_storage.dispose()
        self._event_log_storage = KeptEnginesEventLogStorage(_event_logs_directory(base_dir))

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData,
                          config_value: Any) -> SqliteStorage:
        return cls.from_local(inst_data=inst_data, **config_value)
