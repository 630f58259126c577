"""Shared fixtures: a throw-away database on the real PostgreSQL, isolated per test run."""

from __future__ import annotations

import importlib.util
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest

pytest_plugins = ["pull_pipeline_tests.servers", "pull_pipeline_tests.alert_receivers",
                  "pull_pipeline_tests.s3_server"]

ADMIN_DSN = os.environ.get(
    "PULL_PIPELINE_TEST_DSN", "postgresql://postgres@127.0.0.1:5432/postgres"
)


needs_pgserver = pytest.mark.skipif(
    importlib.util.find_spec("pgserver") is None,
    reason="pgserver (the embedded PostgreSQL) has wheels for CPython 3.11 and 3.12 only",
)


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh database on the real server for this test session (dropped afterwards)."""
    name = f"pp_test_{uuid.uuid4().hex[:10]}"
    try:
        admin = psycopg.connect(ADMIN_DSN, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {ADMIN_DSN} ({exc}); start it or set "
            "PULL_PIPELINE_TEST_DSN to an admin DSN"
        )
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    dsn = ADMIN_DSN.rsplit("/", 1)[0] + f"/{name}"
    yield dsn
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def table_name() -> str:
    """A sink table name unique to one test, so tests never see each other's rows."""
    return f"readings_{uuid.uuid4().hex[:8]}"
