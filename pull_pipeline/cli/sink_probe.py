"""`check` for the sink: connect, say what the server is and whether the table is ready.

Read-only: it never creates the schema (the first load does). The DSN is resolved here
rather than by `TimescaleSink.resolved_dsn`, whose module imports Dagster; the rules are
the same: `sink.dsn`, else `$SINK_DSN`, else the embedded PostgreSQL.
"""

from __future__ import annotations

import os

import psycopg

from pull_pipeline.cli.output import Row, Status
from pull_pipeline.config.env import PLACEHOLDER, resolve_text
from pull_pipeline.config.loader import Project
from pull_pipeline.errors import ConfigError, PullPipelineError, first_line
from pull_pipeline.redaction import register_secret

SINK_DSN_ENV = "SINK_DSN"
_SQLALCHEMY_PREFIXES = ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://")


def probe_sink(project: Project) -> Row:
    """One row: connection, server version, TimescaleDB, and the table's state."""
    table = project.config.sink.table
    row = Row("sink", f"table {table}")
    configured = project.config.sink.dsn or os.environ.get(SINK_DSN_ENV)
    try:
        dsn = _resolve(configured) if configured else _embedded(project)
    except PullPipelineError as exc:
        row.add(Status.FAIL, str(exc))
        return row
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    row.summary = (f"{info.get('host') or 'local socket'}:{info.get('port') or 5432}"
                   f"/{info.get('dbname') or ''}, table {table}")
    try:
        conn = psycopg.connect(dsn, connect_timeout=10, autocommit=True,
                               application_name="pull_pipeline check")
    except psycopg.Error as exc:
        detail = first_line(exc)
        hint = "check sink.dsn / SINK_DSN and that the database is up"
        if "password" in detail or "authentication" in detail:
            names = sorted(set(PLACEHOLDER.findall(configured or "")))
            hint = "the sink refused the credentials; check the user and password in sink.dsn" + (
                f" and the variable ${{{names[0]}}} it uses" if names else "")
        row.add(Status.FAIL, f"connect: {detail}", hint)
        return row
    with conn:
        _describe(row, conn, table)
    return row


def _describe(row: Row, conn: psycopg.Connection, table: str) -> None:
    def one(query: str, *params: object) -> object:
        found = conn.execute(query, params).fetchone()
        return found[0] if found else None

    row.add(Status.OK, f"connected: PostgreSQL {one('SHOW server_version')}")
    installed = one("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'")
    available = one("SELECT default_version FROM pg_available_extensions"
                    " WHERE name = 'timescaledb'")
    preloaded = "timescaledb" in str(one("SELECT current_setting('shared_preload_libraries')"))
    if installed:
        row.add(Status.OK, f"TimescaleDB {installed}: enabled in this database")
    elif available and preloaded:
        row.add(Status.OK, f"TimescaleDB {available}: available, enabled by the first load")
    elif available:
        row.add(Status.WARN, f"TimescaleDB {available} is installed but not preloaded, so the "
                "table will be a plain PostgreSQL table",
                "add timescaledb to shared_preload_libraries and restart PostgreSQL")
    else:
        row.add(Status.OK, "TimescaleDB: not available; the table is a plain PostgreSQL table")
    schema, _, name = table.rpartition(".")
    schema = schema or str(one("SELECT current_schema()"))
    qualified = f'"{schema}"."{name}"'
    if one("SELECT to_regclass(%s) IS NOT NULL", qualified):
        hyper = installed and one(
            "SELECT count(*) > 0 FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = %s AND hypertable_name = %s", schema, name)
        kind = "hypertable" if hyper else "plain table"
        writable = one("SELECT has_table_privilege(%s, 'INSERT')"
                       " AND has_table_privilege(%s, 'DELETE')", qualified, qualified)
        if writable:
            row.add(Status.OK, f"table {table}: exists ({kind})")
        else:
            row.add(Status.FAIL, f"table {table}: exists ({kind}) but this user cannot "
                    "insert into it and delete from it",
                    f"GRANT INSERT, DELETE, SELECT ON {table} (and {table}_rejects) to the user")
    elif one("SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = %s)"
             " THEN has_schema_privilege(%s, 'CREATE')"
             " ELSE has_database_privilege(current_database(), 'CREATE') END", schema, schema):
        row.add(Status.OK, f"table {table}: not there yet; the first load creates it")
    else:
        row.add(Status.FAIL, f"table {table}: does not exist, and this user cannot create it",
                f"GRANT CREATE ON SCHEMA {schema} to the user, or create the tables once "
                "with a user that may")


def _resolve(configured: str) -> str:
    """The libpq DSN; its password is registered for redaction before any use."""
    dsn = resolve_text(configured, where="sink", key="dsn")
    for prefix in _SQLALCHEMY_PREFIXES:
        if dsn.startswith(prefix):
            dsn = "postgresql://" + dsn[len(prefix):]
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except (psycopg.Error, ValueError):
        raise ConfigError(  # libpq's own message quotes the DSN, often near its password
            "sink.dsn (or $SINK_DSN) is not a valid PostgreSQL URL or keyword string; "
            "percent-encode special characters in the password"
        ) from None
    password = info.get("password")  # libpq's keywords are all text
    register_secret(None if password is None else str(password))
    return dsn


def _embedded(project: Project) -> str:
    # Imports the sink package, and with it Dagster: only for the embedded default.
    from pull_pipeline.sink.embedded import embedded_dsn

    return embedded_dsn(project.state_dir)
