"""The instance storage a benchmark runs Dagster on, chosen with `--storage`.

- `sqlite`: the shipped dagster.yaml's (the default, as `make dev` has it);
- `postgres`: deploy/dagster.yaml's block, dagster-postgres pooled by
  `pull_pipeline.defs.instance_storage`, in a scratch database on the sink's server;
- `dagster-postgres`: the same database settings without the pool, to compare.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from benchmarks.database import scratch_database
from benchmarks.materialize import PROJECT_ROOT

STORAGES = ("sqlite", "postgres", "dagster-postgres")


def add_storage_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", choices=STORAGES, default="sqlite",
                        help="the instance's storage: the shipped dagster.yaml's SQLite; "
                        "postgres: deploy/dagster.yaml's block (dagster-postgres, pooled) in a "
                        "scratch database on --sink-dsn's server; dagster-postgres: the same "
                        "database without the pool")


@contextmanager
def storage_settings(storage: str, admin_dsn: str, database: str) -> Iterator[dict[str, Any]]:
    """The settings to merge into dagster.yaml for `storage` (none for SQLite).

    For PostgreSQL, a scratch database `database` (dropped afterwards) whose DAGSTER_PG_*
    variables, which deploy/dagster.yaml reads, are set for this process and its children.
    """
    if storage == "sqlite":
        yield {}
        return
    with scratch_database(admin_dsn, database, False) as dsn:
        os.environ.update(postgres_env(dsn))
        yield {"storage": postgres_storage(pooled=storage == "postgres")}


def postgres_storage(pooled: bool) -> dict[str, Any]:
    """deploy/dagster.yaml's storage block; without the pool, plain dagster-postgres with the
    same database settings."""
    block: dict[str, Any] = yaml.safe_load(
        (PROJECT_ROOT / "deploy" / "dagster.yaml").read_text())["storage"]
    if pooled:
        return block
    return {"postgres": {"postgres_db": block["custom"]["config"]["postgres_db"]}}


def postgres_env(dsn: str) -> dict[str, str]:
    """The DAGSTER_PG_* variables deploy/dagster.yaml reads, for the database `dsn` names."""
    from psycopg.conninfo import conninfo_to_dict

    parts = conninfo_to_dict(dsn)
    return {"DAGSTER_PG_HOST": str(parts.get("host", "127.0.0.1")),
            "DAGSTER_PG_PORT": str(parts.get("port", 5432)), "DAGSTER_PG_DB": str(parts["dbname"]),
            "DAGSTER_PG_USER": str(parts.get("user", "postgres")),
            "DAGSTER_PG_PASSWORD": str(parts.get("password", ""))}
