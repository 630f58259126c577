"""A fresh PostgreSQL database per test for Dagster's own instance storage (dagster-postgres).

The instance settings read it from the environment, as deploy/dagster.yaml does
(`DAGSTER_PG_HOST`, `_PORT`, `_DB`, `_USER`, `_PASSWORD`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest

from pull_pipeline_tests.conftest import ADMIN_DSN


@dataclass(frozen=True)
class DagsterDb:
    host: str
    port: str
    name: str
    user: str
    password: str

    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": self.port,
                "DAGSTER_PG_DB": self.name, "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password}

    def count(self, query: str) -> int:
        with psycopg.connect(host=self.host, port=self.port, dbname=self.name, user=self.user,
                             password=self.password) as conn:
            return int(conn.execute(query).fetchone()[0])  # type: ignore[index]


@pytest.fixture
def dagster_db(monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterDb]:
    """A new database on the test server, its coordinates exported as DAGSTER_PG_*."""
    info = psycopg.conninfo.conninfo_to_dict(ADMIN_DSN)
    db = DagsterDb(host=str(info.get("host") or "127.0.0.1"), port=str(info.get("port") or 5432),
                   name=f"pp_dagster_{uuid.uuid4().hex[:10]}",
                   user=str(info.get("user") or "postgres"), password=str(info.get("password") or ""))
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{db.name}"')
    for key, value in db.env().items():
        monkeypatch.setenv(key, value)
    yield db
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{db.name}" WITH (FORCE)')
