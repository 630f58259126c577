"""The SQL connector against the real PostgreSQL (COPY and cursor paths) and SQLite.

`pg-copy` is the PostgreSQL fast path (psycopg 3, COPY ... TO STDOUT); `pg-cursor` is the
generic SQLAlchemy path on the same table (psycopg2 driver); `sqlite` is the generic path on
a file. The password tests run on an embedded server switched to scram-sha-256, since the
shared test server trusts every local connection.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import sqlite3
import time
import uuid
from collections.abc import Generator, Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pandas as pd
import psycopg
import pyarrow as pa
import pytest

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import SqlSource
from pull_pipeline.connectors.sql import SqlConnector
from pull_pipeline.errors import ConfigError, PermanentSourceError, TransientSourceError
from pull_pipeline.sink.embedded import embedded_dsn, stop_embedded
from pull_pipeline_tests.servers import free_port

T0 = 1_700_000_000  # 2023-11-14T22:13:20Z
TAGS = {f"s{i}" for i in range(5)}
SECONDS = 1100  # 5 sensors x 1100 s = 5,500 rows
PASSWORD = "Pw-never-shown-7781"
NAME = "plant_sql"


def utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def query(table: str, column: str = "epoch_s", where: str | None = None) -> str:
    where = where or column
    return (
        f"SELECT tag AS sensor_tag, {column} AS relative_time, val AS sensor_value "
        f"FROM {table} WHERE {where} >= :start AND {where} < :end"
    )


def connector(url: str, sql: str, **keys: Any) -> SqlConnector:
    source = SqlSource.model_validate(
        {"kind": "sql", "url": url, "query": sql, "partitions": {"start": "2023-11-14"}, **keys}
    )
    return SqlConnector(NAME, source)


def pull(conn: SqlConnector, start: datetime, end: datetime) -> list[pa.Table]:
    with conn:
        return list(conn.fetch(start, end))


def canonical(conn: SqlConnector, start: datetime, end: datetime) -> pd.DataFrame:
    tables = pull(conn, start, end)
    return to_canonical(pa.concat_tables(tables), conn.config)


# --- fixtures ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> str:
    return f"sqlsrc_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def pg_url(pg_dsn: str, table: str) -> str:
    with psycopg.connect(pg_dsn, autocommit=True) as db:
        db.execute(
            f"CREATE TABLE {table} (tag text, epoch_s bigint, epoch_ms bigint, at timestamptz,"
            " val double precision)"
        )
        db.execute(
            f"INSERT INTO {table} SELECT 's' || i, {T0} + t, ({T0} + t) * 1000::bigint,"
            f" to_timestamp({T0} + t), i + t / 1000.0"
            f" FROM generate_series(0, 4) i, generate_series(0, {SECONDS - 1}) t"
        )
        db.execute(
            f"CREATE FUNCTION {table}_write() RETURNS bigint LANGUAGE sql AS $$"
            f" INSERT INTO {table} (tag, epoch_s, val) VALUES ('intruder', 0, 0)"
            " RETURNING epoch_s $$"
        )
    return pg_dsn


@pytest.fixture(scope="module")
def sqlite_url(tmp_path_factory: pytest.TempPathFactory, table: str) -> str:
    path = tmp_path_factory.mktemp("sqlite") / "source.db"
    rows = [
        (f"s{i}", T0 + t, (T0 + t) * 1000, utc(T0 + t).strftime("%Y-%m-%d %H:%M:%S"), i + t / 1000)
        for i in range(5)
        for t in range(SECONDS)
    ]
    with closing(sqlite3.connect(path)) as db, db:
        db.execute(
            f"CREATE TABLE {table} (tag TEXT, epoch_s INTEGER, epoch_ms INTEGER, at TEXT, val REAL)"
        )
        db.executemany(f"INSERT INTO {table} VALUES (?, ?, ?, ?, ?)", rows)
    return f"sqlite:///{path}"


@pytest.fixture(params=["pg-copy", "pg-cursor", "sqlite"])
def url(request: pytest.FixtureRequest) -> str:
    if request.param == "sqlite":
        sqlite: str = request.getfixturevalue("sqlite_url")
        return sqlite
    dsn: str = request.getfixturevalue("pg_url")
    if request.param == "pg-cursor":
        return dsn.replace("postgresql://", "postgresql+psycopg2://", 1)
    return dsn


def count_intruders(url: str, table: str) -> int:
    if url.startswith("sqlite"):
        with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as db:
            count: int = db.execute(
                f"SELECT count(*) FROM {table} WHERE tag = 'intruder'").fetchone()[0]
            return count
    dsn = url.replace("+psycopg2", "")
    with psycopg.connect(dsn) as db:
        row = db.execute(f"SELECT count(*) FROM {table} WHERE tag = 'intruder'").fetchone()
    assert row is not None
    return int(row[0])


# --- windows, binding, chunks ------------------------------------------------------------


@pytest.mark.parametrize(
    ("time_unit", "column", "keys"),
    [
        ("s", "epoch_s", {}),
        ("ms", "epoch_ms", {}),
        ("iso8601", "at", {}),
        ("s", f"epoch_s - {T0}", {"reference_epoch": utc(T0).isoformat()}),
    ],
    ids=["s", "ms", "iso8601", "s-from-reference-epoch"],
)
def test_window_includes_start_and_excludes_end(
    url: str, table: str, time_unit: str, column: str, keys: dict[str, Any]
) -> None:
    conn = connector(url, query(table, column), time_unit=time_unit, **keys)
    frame = canonical(conn, utc(T0 + 100), utc(T0 + 200))

    assert len(frame) == 500
    assert frame["ts"].min() == utc(T0 + 100)
    assert frame["ts"].max() == utc(T0 + 199)
    assert set(frame["sensor_tag"]) == TAGS


def test_empty_window_yields_no_batches(url: str, table: str) -> None:
    assert pull(connector(url, query(table)), utc(T0 - 100), utc(T0)) == []


@pytest.mark.parametrize(
    ("time_unit", "start", "end"),
    [
        ("s", "1704067201", "1704070800"),  # rounded up to a whole second
        ("ms", "1704067200001", "1704070800000"),
        ("us", "1704067200000500", "1704070800000000"),
        ("ns", "1704067200000500000", "1704070800000000000"),
    ],
)
def test_epoch_units_bind_integer_counts(url: str, time_unit: str, start: str, end: str) -> None:
    sql = "SELECT 'x' AS sensor_tag, :start AS relative_time, :end AS sensor_value"
    [batch] = pull(
        connector(url, sql, time_unit=time_unit),
        datetime(2024, 1, 1, 0, 0, 0, 500, UTC),
        datetime(2024, 1, 1, 1, tzinfo=UTC),
    )
    assert batch.to_pylist() == [{"sensor_tag": "x", "relative_time": start, "sensor_value": end}]


def test_iso8601_binds_utc_instants(url: str) -> None:
    sql = (
        "SELECT 'x' AS sensor_tag, :start AS relative_time, 1 AS sensor_value"
        " WHERE :start < :end"
    )
    conn = connector(url, sql, time_unit="iso8601")
    start = datetime(2024, 1, 1, 0, 0, 0, 500, UTC)
    frame = canonical(conn, start, datetime(2024, 1, 1, 1, tzinfo=UTC))
    assert frame["ts"].tolist() == [start]


def test_percent_signs_in_the_query_are_literal(url: str, table: str) -> None:
    sql = query(table).replace("WHERE", "WHERE tag LIKE 's%' AND tag NOT LIKE '%%x' AND")
    assert sum(t.num_rows for t in pull(connector(url, sql), utc(T0), utc(T0 + 10))) == 50


def test_chunks_hold_at_most_chunk_size_rows_and_every_row_once(url: str, table: str) -> None:
    conn = connector(url, query(table), chunk_size=1000)
    tables = pull(conn, utc(T0), utc(T0 + SECONDS))

    assert [t.num_rows for t in tables] == [1000] * 5 + [500]
    assert all(t.schema.names == ["sensor_tag", "relative_time", "sensor_value"] for t in tables)
    rows = {(r["sensor_tag"], r["relative_time"]) for t in tables for r in t.to_pylist()}
    assert len(rows) == 5500


def test_copy_and_cursor_paths_yield_the_same_text(pg_url: str) -> None:
    name = f"awkward_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(f"CREATE TABLE {name} (tag text, epoch_s bigint, val double precision)")
        db.execute(
            f"INSERT INTO {name} VALUES ('a,b', 1, 0.1), ('say \"hi\"', 2, 22.5), "
            "(E'two\\nlines', 3, -3.25), ('', 4, NULL), (NULL, 5, 1e20), ('ünï', 6, 7)"
        )
    copy = pull(connector(pg_url, query(name), chunk_size=4), utc(0), utc(10))
    cursor = pull(
        connector(pg_url.replace("postgresql://", "postgresql+psycopg2://"), query(name),
                  chunk_size=4),
        utc(0), utc(10),
    )
    assert [t.num_rows for t in copy] == [4, 2]
    assert pa.concat_tables(copy).equals(pa.concat_tables(cursor))
    assert pa.concat_tables(copy).column("sensor_tag").to_pylist() == [
        "a,b", 'say "hi"', "two\nlines", "", None, "ünï"
    ]


def test_copy_chunks_over_a_megabyte_keep_quoted_newlines(pg_url: str) -> None:
    name = f"newlines_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as db:
        db.execute(
            f"CREATE TABLE {name} AS SELECT E'first line\\nsecond line ' || t AS tag,"
            " t::bigint AS epoch_s, 1.0::float8 AS val FROM generate_series(1, 60000) t"
        )
    [batch] = pull(connector(pg_url, query(name), chunk_size=60000), utc(0), utc(10**6))
    tags = batch.column("sensor_tag").to_pylist()
    assert batch.get_total_buffer_size() > 2**20
    assert tags[:2] == ["first line\nsecond line 1", "first line\nsecond line 2"]
    assert batch.num_rows == 60000 and all(tag.count("\n") == 1 for tag in tags)


def test_closing_early_releases_the_connection(pg_url: str, table: str) -> None:
    conn = connector(pg_url, query(table), chunk_size=100)
    batches = conn.fetch(utc(T0), utc(T0 + SECONDS))
    assert isinstance(batches, Generator)  # closable, as `Connector.fetch` returns
    assert next(batches).num_rows == 100
    batches.close()
    with psycopg.connect(pg_url) as db:
        row = db.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s",
            (f"pull_pipeline:{NAME}",),
        ).fetchone()
    assert row == (0,)
    assert sum(t.num_rows for t in pull(conn, utc(T0), utc(T0 + 1))) == 5


# --- read-only --------------------------------------------------------------------------


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg2"], ids=["copy", "cursor"])
def test_a_query_that_writes_fails_and_the_table_is_unchanged(
    pg_url: str, table: str, driver: str
) -> None:
    url = pg_url.replace("postgresql", driver, 1)
    sql = (
        f"SELECT 'x' AS sensor_tag, {table}_write() AS relative_time, 1 AS sensor_value"
        " WHERE :start < :end"
    )
    with pytest.raises(PermanentSourceError, match="read-only transaction") as caught:
        pull(connector(url, sql), utc(T0), utc(T0 + 1))
    assert NAME in str(caught.value)
    assert count_intruders(url, table) == 0


def test_a_data_modifying_cte_fails_under_copy(pg_url: str, table: str) -> None:
    sql = (
        f"WITH w AS (INSERT INTO {table} (tag, epoch_s, val) VALUES ('intruder', 1, 1)"
        " RETURNING tag, epoch_s, val)"
        " SELECT tag AS sensor_tag, epoch_s AS relative_time, val AS sensor_value FROM w"
        " WHERE epoch_s >= :start AND epoch_s < :end"
    )
    with pytest.raises(PermanentSourceError, match="read-only transaction"):
        pull(connector(pg_url, sql), utc(0), utc(T0))
    assert count_intruders(pg_url, table) == 0


def test_sqlite_insert_returning_fails_and_the_table_is_unchanged(
    sqlite_url: str, table: str
) -> None:
    sql = (
        f"INSERT INTO {table} (tag, epoch_s, val) SELECT 'intruder', :start, :end"
        " RETURNING tag AS sensor_tag, epoch_s AS relative_time, val AS sensor_value"
    )
    with pytest.raises(PermanentSourceError, match="readonly database"):
        pull(connector(sqlite_url, sql), utc(T0), utc(T0 + 1))
    assert count_intruders(sqlite_url, table) == 0


# --- errors -----------------------------------------------------------------------------


def test_a_missing_column_names_the_source_the_field_and_the_returned_columns(
    url: str, table: str
) -> None:
    sql = query(table).replace("tag AS sensor_tag", "tag")
    with pytest.raises(PermanentSourceError) as caught:
        pull(connector(url, sql), utc(T0), utc(T0 + 1))
    message = str(caught.value)
    assert NAME in message
    assert "'sensor_tag'" in message
    assert "['tag', 'relative_time', 'sensor_value']" in message


@pytest.mark.parametrize(
    ("sql", "detail"),
    [
        ("SELEC tag FROM t WHERE x >= :start AND x < :end", "syntax error"),
        ("SELECT * FROM no_such_table WHERE x >= :start AND x < :end", "no_such_table"),
    ],
)
def test_sql_errors_are_permanent_with_the_databases_first_line(
    url: str, sql: str, detail: str
) -> None:
    with pytest.raises(PermanentSourceError) as caught:
        pull(connector(url, sql), utc(T0), utc(T0 + 1))
    message = str(caught.value)
    assert message.startswith(f"sql source {NAME!r}: the query failed: ")
    assert detail in message
    assert "[SQL:" not in message and "\n" not in message


def test_an_unknown_database_is_permanent(pg_url: str, table: str) -> None:
    url = pg_url.rsplit("/", 1)[0] + "/pp_no_such_database"
    conn = connector(url, query(table))
    with pytest.raises(PermanentSourceError, match="does not exist"):
        conn.probe()
    with pytest.raises(PermanentSourceError, match="does not exist"):
        pull(conn, utc(T0), utc(T0 + 1))


def test_an_unreachable_port_is_transient_and_never_shows_the_password(
    table: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = f"postgresql://reader:{PASSWORD}@127.0.0.1:{free_port()}/db"
    conn = connector(url, query(table))
    with pytest.raises(TransientSourceError, match="cannot reach the database") as probed:
        conn.probe()
    with pytest.raises(TransientSourceError, match="Connection refused") as fetched:
        pull(conn, utc(T0), utc(T0 + 1))
    for error in (probed.value, fetched.value):
        assert PASSWORD not in str(error)
        assert error.__cause__ is None and error.__suppress_context__
    assert PASSWORD not in caplog.text


def test_a_server_that_never_answers_times_out_as_transient(table: str) -> None:
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        conn = connector(
            f"postgresql://reader@127.0.0.1:{port}/db", query(table),
            connect_args={"connect_timeout": 2},
        )
        began = time.monotonic()
        with pytest.raises(TransientSourceError, match="timeout"):
            conn.probe()
    assert time.monotonic() - began < 8


@pytest.fixture(scope="module")
def scram_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An embedded server where role `reader` must log in with PASSWORD (scram-sha-256)."""
    if importlib.util.find_spec("pgserver") is None:
        pytest.skip("needs pgserver (the embedded PostgreSQL), which has no wheel for this Python")
    state = tmp_path_factory.mktemp("scram")
    dsn = embedded_dsn(state)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SET password_encryption = 'scram-sha-256'")
        admin.execute(f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'")
        admin.execute(
            "CREATE TABLE readings AS SELECT 's1' AS tag, 5::bigint AS epoch_s, 1.5::float8 AS val"
        )
        admin.execute("GRANT SELECT ON readings TO reader")
        (state / "postgres" / "pg_hba.conf").write_text(
            "local all reader scram-sha-256\nlocal all all trust\n"
        )
        admin.execute("SELECT pg_reload_conf()")
    socket_dir = parse_qs(urlparse(dsn).query)["host"][0]
    yield f"postgresql://nobody:wrong-in-url@/postgres?host={socket_dir}"
    stop_embedded(state)


@pytest.mark.parametrize("driver", ["postgresql", "postgresql+psycopg2"], ids=["copy", "cursor"])
def test_username_and_password_keys_override_the_url(scram_url: str, driver: str) -> None:
    sql = (
        "SELECT current_user AS sensor_tag, epoch_s AS relative_time, val AS sensor_value"
        " FROM readings WHERE epoch_s >= :start AND epoch_s < :end"
    )
    url = scram_url.replace("postgresql", driver, 1)
    conn = connector(url, sql, username="reader", password=PASSWORD)
    conn.probe()
    [batch] = pull(conn, utc(0), utc(10))
    assert batch.to_pylist() == [
        {"sensor_tag": "reader", "relative_time": "5", "sensor_value": "1.5"}
    ]


def test_a_wrong_password_is_refused_permanently_without_showing_it(
    scram_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-pw-also-secret-55"
    conn = connector(scram_url, query("readings"), username="reader", password=wrong)
    with pytest.raises(PermanentSourceError, match="credentials refused") as caught:
        pull(conn, utc(0), utc(10))
    assert "password authentication failed" in str(caught.value)
    assert wrong not in str(caught.value) and wrong not in caplog.text
    assert caught.value.__cause__ is None


# --- config checks ----------------------------------------------------------------------


def test_a_placeholder_glued_to_a_cast_is_refused_with_the_fix(sqlite_url: str) -> None:
    with pytest.raises(ConfigError, match=r"missing :start.*CAST\(:start AS type\)"):
        connector(sqlite_url, "SELECT 1 WHERE x >= :start::bigint AND x < :end")


def test_a_missing_sqlite_file_is_refused_and_not_created(tmp_path: Path) -> None:
    path = tmp_path / "nope.db"
    with pytest.raises(PermanentSourceError, match="no SQLite database"):
        connector(f"sqlite:///{path}", query("t"))
    assert not path.exists()
