"""Dagster's instance storage for a fleet: dagster-postgres, with pooled connections.

dagster-postgres opens a new PostgreSQL connection for every statement outside the
webserver (SQLAlchemy's `NullPool`, so that short-lived processes hold none). The daemon
and the run workers are where a fleet writes: creating one run stores its snapshots and
planned events, and a run stores several events per window, each on a connection of its
own. A connection costs about 15 ms here (a server process forked for it), against about
3 ms for the write itself: py-spy put 40% of the daemon's time during a 500-source
catch-up in `connect`. This storage is dagster-postgres with each of its three storages on
a `QueuePool` instead: connections are kept per process, checked with a ping before use
(a restarted server is no error), recycled hourly, and waited for at most `pool_timeout`.

Select it in dagster.yaml with `storage: custom: {module: pull_pipeline.defs.instance_storage,
class: PooledPostgresStorage, config: {postgres_db: ..., pool_size: 4}}`; the `postgres_db`
(or `postgres_url`) settings are dagster-postgres's own. The webserver still swaps in
Dagster's own small pool, as it does for `storage: postgres:`.
"""

from __future__ import annotations

import os
import weakref
from collections.abc import Mapping
from typing import Any, cast

from dagster import Field, IntSource
from dagster._config.config_schema import UserConfigSchema
from dagster._core.storage.config import pg_config
from dagster._serdes import ConfigurableClassData
from dagster_postgres import DagsterPostgresStorage
from dagster_postgres.utils import (
    create_pg_engine,
    get_token_provider_from_config,
    pg_url_from_config,
)
from sqlalchemy.engine import Engine

POOL_DEFAULTS = {"pool_size": 4, "max_overflow": 16, "pool_timeout_seconds": 30,
                 "pool_recycle_seconds": 3600}

# Engines this process pooled: a forked child must not use its parent's connections.
_POOLED: weakref.WeakSet[Engine] = weakref.WeakSet()


def _forget_inherited_connections() -> None:
    for engine in list(_POOLED):
        engine.dispose(close=False)


os.register_at_fork(after_in_child=_forget_inherited_connections)


class PooledPostgresStorage(DagsterPostgresStorage):
    """`DagsterPostgresStorage` whose run, event-log and schedule storages pool connections."""

    def __init__(self, postgres_url: str, should_autocreate_tables: bool = True,
                 inst_data: ConfigurableClassData | None = None,
                 pool: Mapping[str, int] | None = None, token_provider: Any = None) -> None:
        super().__init__(postgres_url, should_autocreate_tables, inst_data=inst_data,
                         token_provider=token_provider)
        self.pool = {**POOL_DEFAULTS, **(pool or {})}
        for storage in (self._run_storage, self._event_log_storage, self._schedule_storage):
            # Each storage connects only through `_engine`; dagster-postgres offers no setting.
            storage._engine = self._pooled_engine(token_provider)

    def _pooled_engine(self, token_provider: Any) -> Engine:
        engine = create_pg_engine(
            self.postgres_url, token_provider, isolation_level="AUTOCOMMIT",
            pool_size=self.pool["pool_size"], max_overflow=self.pool["max_overflow"],
            pool_timeout=self.pool["pool_timeout_seconds"],
            pool_recycle=self.pool["pool_recycle_seconds"], pool_pre_ping=True)
        _POOLED.add(engine)
        return engine

    @classmethod
    def config_type(cls) -> UserConfigSchema:
        fields = {key: Field(IntSource, is_required=False, default_value=value)
                  for key, value in POOL_DEFAULTS.items()}
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
        )
