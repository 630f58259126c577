"""Hostile SQL sources: queries that try to write, waits that would hang, URLs that leak.

Run against the real PostgreSQL (`pg-copy`: psycopg 3 and COPY; `pg-cursor`: psycopg2 and a
server-side cursor), a SQLite file and the real MariaDB through pymysql (skipped, saying why,
when pymysql or the server is missing; `PULL_PIPELINE_TEST_MYSQL_URL` names another server).
Every hostile query is followed by a check that the target table (and sequence) is unchanged.

A query is checked in three places: when the config loads, when the connector is built, and
by the database or driver itself. The `*_whatever_the_text` tests skip the first two (they
set the connector's query after it is built) to show the last one holds on its own.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
import pyarrow as pa
import pytest

from pull_pipeline.config.loader import parse_config
from pull_pipeline.config.models import SINGLE_SELECT, SqlSource
from pull_pipeline.connectors.sql import SqlConnector
from pull_pipeline.errors import ConfigError, PermanentSourceError, TransientSourceError

NAME = "plant_hostile"
ROWS = 10  # epoch_s 0..9
ROW_VALUES = [(f"s{t}", t, t / 2) for t in range(ROWS)]
MYSQL_URL = os.environ.get(
    "PULL_PIPELINE_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test"
)
FIELDS = "tag AS sensor_tag, epoch_s AS relative_time, val AS sensor_value"


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def select(table: str) -> str:
    return f"SELECT {FIELDS} FROM {table} WHERE epoch_s >= :start AND epoch_s < :end"


def source(url: str, sql: str, **keys: Any) -> dict[str, Any]:
    return {"kind": "sql", "url": url, "query": sql, "partitions": {"start": "2024-01-01"}, **keys}


def connector(url: str, sql: str, **keys: Any) -> SqlConnector:
    return SqlConnector(NAME, SqlSource.model_validate(source(url, sql, **keys)))


def pull(conn: SqlConnector) -> list[dict[str, Any]]:
    with conn:
        tables = list(conn.fetch(utc(0), utc(100)))
    return pa.concat_tables(tables).to_pylist() if tables else []


# --- the databases ------------------------------------------------------------------------


@dataclass
class Db:
    """One database holding `table` (ROWS rows) and, except SQLite, the sequence `table_seq`."""

    kind: str  # pg-copy, pg-cursor, sqlite, mariadb
    url: str
    table: str
    snapshot: Callable[[], list[Any]]  # every row and the sequence's state
    lock: Callable[[], AbstractContextManager[None]]  # another session holding a lock on table

    @property
    def family(self) -> str:
        return self.kind.split("-")[0]


@pytest.fixture(scope="module")
def pg_db(pg_dsn: str) -> Db:
    table = f"hostile_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(f"CREATE TABLE {table} (tag text, epoch_s bigint, val double precision)")
        db.execute(
            f"INSERT INTO {table} SELECT 's' || t, t, t / 2.0"
            f" FROM generate_series(0, {ROWS - 1}) t"
        )
        db.execute(f"CREATE SEQUENCE {table}_seq")

    def snapshot() -> list[Any]:
        with psycopg.connect(pg_dsn) as db:
            rows = db.execute(f"SELECT * FROM {table} ORDER BY epoch_s").fetchall()
            return [*rows, db.execute(f"SELECT last_value, is_called FROM {table}_seq").fetchone()]

    @contextmanager
    def lock() -> Iterator[None]:
        with psycopg.connect(pg_dsn) as db:
            db.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
            yield
            db.rollback()

    return Db("pg-copy", pg_dsn, table, snapshot, lock)


@pytest.fixture(scope="module")
def sqlite_db(tmp_path_factory: pytest.TempPathFactory) -> Db:
    path = tmp_path_factory.mktemp("hostile") / "source.db"
    table = "readings"
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(f"CREATE TABLE {table} (tag TEXT, epoch_s INTEGER, val REAL)")
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?)", ROW_VALUES)

    def snapshot() -> list[Any]:
        with closing(sqlite3.connect(path)) as db:
            return db.execute(f"SELECT * FROM {table} ORDER BY epoch_s").fetchall()

    @contextmanager
    def lock() -> Iterator[None]:
        with closing(sqlite3.connect(path, isolation_level=None)) as db:
            db.execute("BEGIN EXCLUSIVE")
            yield
            db.execute("ROLLBACK")

    return Db("sqlite", f"sqlite:///{path}", table, snapshot, lock)


@pytest.fixture(scope="module")
def mariadb_db() -> Iterator[Db]:
    pymysql = pytest.importorskip("pymysql", reason="the MariaDB tests need pymysql")
    from sqlalchemy import make_url

    url = make_url(MYSQL_URL)
    params = {"host": url.host, "port": url.port or 3306, "user": url.username,
              "password": url.password or "", "database": url.database}

    def connect() -> Any:
        return pymysql.connect(**params, connect_timeout=3)

    try:
        admin = connect()
    except pymysql.err.OperationalError as exc:
        pytest.skip(f"no MariaDB/MySQL at {url.host}:{url.port}: {exc.args[-1]}")
    table = f"hostile_{uuid.uuid4().hex[:8]}"
    with admin, admin.cursor() as cur:
        cur.execute(
            f"CREATE TABLE {table} (tag VARCHAR(20), epoch_s BIGINT, val DOUBLE) ENGINE=InnoDB"
        )
        cur.executemany(f"INSERT INTO {table} VALUES (%s, %s, %s)", ROW_VALUES)
        cur.execute(f"CREATE SEQUENCE {table}_seq")
        admin.commit()

    def snapshot() -> list[Any]:
        with connect() as db, db.cursor() as cur:
            cur.execute(f"SELECT * FROM {table} ORDER BY epoch_s")
            rows = list(cur.fetchall())
            cur.execute(f"SELECT next_not_cached_value FROM {table}_seq")
            return [*rows, cur.fetchone()]

    @contextmanager
    def lock() -> Iterator[None]:
        with connect() as db, db.cursor() as cur:
            cur.execute(f"LOCK TABLES {table} WRITE")
            yield
            cur.execute("UNLOCK TABLES")

    yield Db("mariadb", MYSQL_URL, table, snapshot, lock)
    with connect() as db, db.cursor() as cur:
        cur.execute(f"DROP TABLE IF EXISTS {table}")
        cur.execute(f"DROP SEQUENCE IF EXISTS {table}_seq")


# The databases reached through a driver that sends one statement per call, by fixture.
ONE_STATEMENT_DRIVERS = {"pg-copy": "pg_db", "sqlite": "sqlite_db", "mariadb": "mariadb_db"}


@pytest.fixture(params=["pg-copy", "pg-cursor", "sqlite", "mariadb"])
def db(request: pytest.FixtureRequest) -> Db:
    if request.param in ("sqlite", "mariadb"):
        other: Db = request.getfixturevalue(f"{request.param}_db")
        return other
    pg: Db = request.getfixturevalue("pg_db")
    if request.param == "pg-cursor":
        url = pg.url.replace("postgresql://", "postgresql+psycopg2://", 1)
        return Db("pg-cursor", url, pg.table, pg.snapshot, pg.lock)
    return pg


# --- hostile queries ------------------------------------------------------------------------


def more_statements(db: Db) -> dict[str, str]:
    """Texts that carry a second statement after the SELECT, for this database's dialect."""
    t = db.table
    window = "WHERE epoch_s >= :start AND epoch_s < :end"
    reopen = {
        "pg": "SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE",
        "mariadb": "SET SESSION TRANSACTION READ WRITE",
        "sqlite": "PRAGMA query_only = OFF",
    }[db.family]
    texts = {
        "semicolon-delete": f"{select(t)}; DELETE FROM {t}",
        "commit-delete": f"{select(t)}; COMMIT; DELETE FROM {t}",
        "read-write-delete": f"{reopen}; DELETE FROM {t} {window}",
    }
    if db.family == "pg":
        texts["copy-closing"] = (
            f"{select(t)}) TO STDOUT; COMMIT; DELETE FROM {t}; COPY (SELECT 1"
        )
    return texts


def single_writes(db: Db) -> dict[str, str]:
    """One statement each, which only the read-only session stops."""
    t = db.table
    window = "WHERE epoch_s >= :start AND epoch_s < :end"
    if db.family == "pg":
        return {
            "writable-cte":
                f"WITH d AS (DELETE FROM {t} RETURNING *) SELECT {FIELDS} FROM d {window}",
            "nextval": f"SELECT 'x' AS sensor_tag, nextval('{t}_seq') AS relative_time,"
                       " 1 AS sensor_value WHERE :start < :end",
        }
    returning = f"DELETE FROM {t} {window} RETURNING {FIELDS}"
    if db.family == "sqlite":
        return {"delete-returning": returning}
    return {
        "delete-returning": returning,
        "nextval": f"SELECT 'x' AS sensor_tag, NEXTVAL({t}_seq) AS relative_time,"
                   " 1 AS sensor_value FROM DUAL WHERE :start < :end",
    }


def assert_refused(message: str) -> None:
    assert NAME in message
    assert SINGLE_SELECT in message


def test_a_second_statement_is_refused_when_the_config_loads(db: Db) -> None:
    before = db.snapshot()
    for label, sql in more_statements(db).items():
        with pytest.raises(ConfigError) as caught:
            parse_config({"sources": {NAME: source(db.url, sql)}})
        assert_refused(str(caught.value))
        assert "remove the ';'" in str(caught.value), label
    assert db.snapshot() == before


def test_a_second_statement_is_refused_again_when_the_connector_is_built(db: Db) -> None:
    before = db.snapshot()
    for sql in more_statements(db).values():
        valid = SqlSource.model_validate(source(db.url, select(db.table)))
        unchecked = valid.model_copy(update={"query": sql})  # as if validation were skipped
        with pytest.raises(ConfigError) as caught:
            SqlConnector(NAME, unchecked)
        assert_refused(str(caught.value))
    assert db.snapshot() == before


@pytest.mark.parametrize("kind", ONE_STATEMENT_DRIVERS)
def test_the_database_refuses_a_second_statement_whatever_the_text(
    request: pytest.FixtureRequest, kind: str
) -> None:
    db: Db = request.getfixturevalue(ONE_STATEMENT_DRIVERS[kind])
    before = db.snapshot()
    # On MariaDB, even a connect_args that asks for multi-statements does not get them.
    keys = {"connect_args": {"client_flag": 1 << 16}} if kind == "mariadb" else {}
    for label, sql in more_statements(db).items():
        if label == "copy-closing":
            continue  # the next test: it is a syntax error outside COPY
        conn = connector(db.url, select(db.table), **keys)
        conn._query = sql  # past the text checks: only the database stands in the way
        with pytest.raises(PermanentSourceError) as caught:
            pull(conn)
        assert_refused(str(caught.value))
        assert db.snapshot() == before, label


def test_the_copy_closing_query_is_refused_by_the_server_whatever_the_text(pg_db: Db) -> None:
    before = pg_db.snapshot()
    conn = connector(pg_db.url, select(pg_db.table))
    conn._query = more_statements(pg_db)["copy-closing"]
    with pytest.raises(PermanentSourceError, match="multiple commands") as caught:
        pull(conn)
    assert_refused(str(caught.value))
    assert pg_db.snapshot() == before


def test_a_single_statement_that_writes_is_refused_by_the_read_only_session(db: Db) -> None:
    before = db.snapshot()
    for label, sql in single_writes(db).items():
        with pytest.raises(PermanentSourceError) as caught:
            pull(connector(db.url, sql))
        assert_refused(str(caught.value))
        assert db.snapshot() == before, label


def test_psycopg2_queries_may_hold_no_semicolon_at_all(pg_db: Db) -> None:
    sql = (f"SELECT tag || ';' AS sensor_tag, epoch_s AS relative_time, val AS sensor_value "
           f"FROM {pg_db.table} WHERE epoch_s >= :start AND epoch_s < :end -- a; comment")
    before = pg_db.snapshot()
    with pytest.raises(ConfigError, match=r"with the psycopg2 driver it may hold no ';'") as caught:
        connector(pg_db.url.replace("postgresql://", "postgresql+psycopg2://"), sql)
    assert_refused(str(caught.value))
    assert "chr(59)" in str(caught.value)
    assert pull(connector(pg_db.url, sql))[0]["sensor_tag"] == "s0;"  # psycopg 3 may
    assert pg_db.snapshot() == before


@pytest.mark.parametrize("kind", ONE_STATEMENT_DRIVERS)
def test_a_semicolon_inside_quotes_or_comments_is_no_second_statement(
    request: pytest.FixtureRequest, kind: str
) -> None:
    db: Db = request.getfixturevalue(ONE_STATEMENT_DRIVERS[kind])
    concat = "CONCAT(tag, ';')" if kind == "mariadb" else "tag || ';'"
    sql = (f"/* a; b */ SELECT {concat} AS sensor_tag, epoch_s AS relative_time,"
           f" val AS sensor_value FROM {db.table}\n-- c; d\n"
           "WHERE epoch_s >= :start AND epoch_s < :end;  -- trailing; fine")
    parse_config({"sources": {NAME: source(db.url, sql)}})
    tags = [row["sensor_tag"] for row in pull(connector(db.url, sql))]
    assert tags == [f"s{t};" for t in range(ROWS)]


# --- read-only and bounded sessions ---------------------------------------------------------


def test_postgresql_sessions_are_read_only_from_the_connection_on(pg_db: Db) -> None:
    sql = (
        "SELECT current_setting('default_transaction_read_only') || ' '"
        " || current_setting('transaction_read_only') || ' ' || current_setting('work_mem')"
        " AS sensor_tag, current_setting('statement_timeout') AS relative_time,"
        " current_setting('lock_timeout') AS sensor_value WHERE :start < :end"
    )
    for url in (pg_db.url, pg_db.url.replace("postgresql://", "postgresql+psycopg2://")):
        # connect_args' own options are kept beside the read-only one.
        conn = connector(url, sql, statement_timeout="2min", lock_timeout="1.5s",
                         connect_args={"options": "-c work_mem=7MB"})
        assert pull(conn) == [
            {"sensor_tag": "on on 7MB", "relative_time": "2min", "sensor_value": "1500ms"}
        ]


def test_mariadb_sessions_are_read_only_and_bounded(mariadb_db: Db) -> None:
    sql = (
        "SELECT CONCAT(@@session.tx_read_only, ' ', @@session.max_statement_time) AS sensor_tag,"
        " @@session.lock_wait_timeout AS relative_time,"
        " @@session.innodb_lock_wait_timeout AS sensor_value FROM DUAL WHERE :start < :end"
    )
    conn = connector(mariadb_db.url, sql, statement_timeout="2min", lock_timeout="1.5s")
    assert pull(conn) == [
        {"sensor_tag": "ON 120.000000", "relative_time": "2", "sensor_value": "2"}
    ]


def test_sqlite_sessions_are_query_only_and_bounded(sqlite_db: Db) -> None:
    sql = (
        "SELECT q.query_only AS sensor_tag, b.timeout AS relative_time, 1 AS sensor_value"
        " FROM pragma_query_only() q, pragma_busy_timeout() b WHERE :start < :end"
    )
    conn = connector(sqlite_db.url, sql, lock_timeout="1.5s")
    assert pull(conn) == [{"sensor_tag": "1", "relative_time": "1500", "sensor_value": "1"}]


def timed_failure(conn: SqlConnector) -> tuple[TransientSourceError, float]:
    began = time.monotonic()
    with pytest.raises(TransientSourceError) as caught:
        pull(conn)
    return caught.value, time.monotonic() - began


def test_a_locked_table_fails_after_lock_timeout(db: Db) -> None:
    conn = connector(db.url, select(db.table), lock_timeout="1s")
    with db.lock():
        error, elapsed = timed_failure(conn)
    print(f"{db.kind}: lock_timeout=1s failed after {elapsed:.2f}s")
    assert 0.9 <= elapsed < 3, elapsed
    assert str(error).startswith(
        f"sql source {NAME!r}: the query waited longer than lock_timeout=1s for a lock on the "
        "source; another session holds a lock — raise lock_timeout or retry later ("
    )
    assert pull(conn)[0]["sensor_tag"] == "s0"  # the lock is gone: the next pull works


def test_a_long_query_fails_after_statement_timeout(db: Db) -> None:
    sleep = {
        "pg": "SELECT 'x' AS sensor_tag, pg_sleep(10)::text AS relative_time, 1 AS sensor_value"
              " WHERE :start < :end",
        "mariadb": "SELECT 'x' AS sensor_tag, SLEEP(10) AS relative_time, 1 AS sensor_value"
                   " FROM DUAL WHERE :start < :end",
        "sqlite": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c)"
                  " SELECT 'x' AS sensor_tag, max(x) AS relative_time, 1 AS sensor_value"
                  " FROM c WHERE :start < :end",
    }[db.family]
    error, elapsed = timed_failure(connector(db.url, sleep, statement_timeout="1s"))
    print(f"{db.kind}: statement_timeout=1s failed after {elapsed:.2f}s")
    assert 0.9 <= elapsed < 3, elapsed
    assert str(error).startswith(
        f"sql source {NAME!r}: the query ran longer than statement_timeout=1s and was cancelled"
    )
    assert "raise statement_timeout" in str(error)


def test_the_bounds_default_and_must_be_positive() -> None:
    parsed = SqlSource.model_validate(source("sqlite:///x.db", "SELECT :start, :end"))
    bounds = (parsed.statement_timeout.total_seconds(), parsed.lock_timeout.total_seconds())
    assert bounds == (600, 30)
    for key in ("statement_timeout", "lock_timeout"):
        with pytest.raises(ConfigError, match=rf"{key}: must be longer than 0"):
            parse_config({"sources": {NAME: source("sqlite:///x.db", "SELECT :start, :end",
                                                   **{key: "0s"})}})


# --- connection strings ---------------------------------------------------------------------


def secret_forms(password: str) -> list[str]:
    pieces = [p for p in re.split(r"[^A-Za-z0-9%]+", password) if len(p) >= 3]
    return [
        password, quote(password), quote(password, safe=""), quote_plus(password),
        base64.b64encode(password.encode()).decode(),
        base64.urlsafe_b64encode(password.encode()).decode(), *pieces,
    ]


@pytest.mark.parametrize(
    ("password", "template", "why"),
    [
        ("Tr0ub4dor %zz horse", "postgresql://reader:{}@127.0.0.1:5432/db", "has a '%'"),
        ("Tr0ub@dor:horse9", "postgresql://reader:{}@127.0.0.1:5432/db", "is not a database URL"),
        ("Tr0ub@dor horse", "postgresql://reader:{}@127.0.0.1/db", "has more than one '@'"),
    ],
    ids=["bad-percent", "unparsable", "raw-at-sign"],
)
def test_a_url_that_cannot_be_read_never_shows_its_password(
    password: str, template: str, why: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ConfigError) as caught:
        connector(template.format(password), "SELECT 1 WHERE :start < :end")
    message = str(caught.value)
    assert message.startswith(f"sql source {NAME!r}: url {why}")
    assert "percent-encode special characters in the password" in message
    assert "or use the username/password keys" in message
    for form in secret_forms(password):
        assert form not in message, form
        assert form not in caplog.text, form
    assert caught.value.__cause__ is None


def test_the_password_key_takes_what_the_url_cannot(pg_db: Db) -> None:
    conn = connector(pg_db.url, select(pg_db.table), password="Tr0ub4dor %zz horse")
    assert len(pull(conn)) == ROWS  # the test server trusts local logins: any password works
