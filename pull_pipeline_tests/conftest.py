"""Shared fixtures: a throw-away database on the real PostgreSQL, isolated per test run.

The suite runs on whatever server `PULL_PIPELINE_TEST_DSN` names: plain PostgreSQL, or a
TimescaleDB server (`make test` runs it on both), where every sink table is a hypertable.
`python -m pull_pipeline_tests.conftest [--require-timescale] DSN` prints what a server is,
for `make test`'s headers.
"""

from __future__ import annotations

import importlib.util
import os
import sys
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


def where(dsn: str) -> str:
    """host:port of a DSN, without its credentials (for headers and messages)."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    return f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"


def timescale_unavailable(dsn: str) -> str | None:
    """None when the sink will make hypertables on this server, else why not."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
            preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    except psycopg.Error as exc:
        return f"cannot reach {where(dsn)}: {str(exc).strip().splitlines()[0]}"
    if not available:
        return "the TimescaleDB extension is not installed on this PostgreSQL"
    if "timescaledb" not in (preload[0] if preload else ""):
        return "TimescaleDB is installed but not in shared_preload_libraries"
    return None


def describe_server(dsn: str) -> tuple[str, str | None]:
    """("TimescaleDB 2.28.3 (PostgreSQL 15.20) at host:port", None), or the plain server's
    description and why TimescaleDB is not used there."""
    try:
        with psycopg.connect(dsn, connect_timeout=3) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0].split()[0]  # type: ignore[index]
            row = conn.execute("SELECT default_version FROM pg_available_extensions "
                               "WHERE name = 'timescaledb'").fetchone()
    except psycopg.Error as exc:
        unreachable = f"cannot reach {where(dsn)}: {str(exc).strip().splitlines()[0]}"
        return f"an unreachable server at {where(dsn)}", unreachable
    reason = timescale_unavailable(dsn)
    if reason is None and row:
        return f"TimescaleDB {row[0]} (PostgreSQL {version}) at {where(dsn)}", None
    return f"plain PostgreSQL {version} at {where(dsn)}", reason


def pytest_report_header(config: pytest.Config) -> list[str]:
    described, reason = describe_server(ADMIN_DSN)
    lines = [f"sink server (PULL_PIPELINE_TEST_DSN): {described}"]
    if reason is None:
        lines.append("timescaledb: available and preloaded; every sink table is a hypertable")
    else:
        lines.append(f"timescaledb: not used ({reason}); sink tables are plain tables")
    other = os.environ.get("PULL_PIPELINE_TIMESCALE_DSN")
    if other and other != ADMIN_DSN:
        lines.append(f"timescaledb tests (PULL_PIPELINE_TIMESCALE_DSN): {describe_server(other)[0]}")
    return lines


def pytest_sessionstart(session: pytest.Session) -> None:
    """`-q` (as `make test` runs) hides the report header: print the sink server anyway."""
    config = session.config
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if config.get_verbosity() < 0 and reporter and not hasattr(config, "workerinput"):
        for line in pytest_report_header(config):
            reporter.write_line(line)


# Fixtures that open the suite's sink server: a test using one (or marked `sink`) is what
# `make test`'s TimescaleDB pass runs. The rest (connectors, config, Dagster wiring) never
# reach the sink server, so a second pass of them would test nothing new.
SINK_FIXTURES = frozenset({"pg_dsn", "timescale_dsn"})


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sink: the test opens the sink server (set by itself for a test using "
        "pg_dsn or timescale_dsn); make test's TimescaleDB pass runs these only")


@pytest.hookimpl(tryfirst=True)  # before `-m` selects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SINK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.sink)


@pytest.fixture(scope="session")
def sink_has_timescale() -> bool:
    """Whether the suite's sink tables are hypertables (the test server has TimescaleDB)."""
    return timescale_unavailable(ADMIN_DSN) is None


@pytest.fixture(scope="session")
def pg_dsn() -> Iterator[str]:
    """A fresh database on the real server for this test session (dropped afterwards).

    On a TimescaleDB server the extension is created in it up front, so every test sees the
    same kind of database whichever test ran first (test_timescale.py covers the sink
    creating the extension itself).
    """
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
    if timescale_unavailable(ADMIN_DSN) is None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    yield dsn
    with psycopg.connect(ADMIN_DSN, autocommit=True) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(autouse=True)
def event_batch_variable_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """PostgreSQL instance storage sets DAGSTER_EVENT_BATCH_SIZE for its process
    (`defs/instance_storage.py`); no test leaves it set for the next one."""
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", "")  # remembered, restored afterwards
    monkeypatch.delenv("DAGSTER_EVENT_BATCH_SIZE")


@pytest.fixture
def table_name() -> str:
    """A sink table name unique to one test, so tests never see each other's rows."""
    return f"readings_{uuid.uuid4().hex[:8]}"


if __name__ == "__main__":  # make test: `python -m pull_pipeline_tests.conftest [--require-timescale] DSN`
    require = sys.argv[1] == "--require-timescale"
    described, why_not = describe_server(sys.argv[-1])
    if require and why_not is not None:
        print(f"{described}: {why_not}")
        sys.exit(2)
    print(described)
