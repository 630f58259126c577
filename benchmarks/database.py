"""The benchmark's databases: a dedicated database per server, the SQL source table, the
COPY baseline and the checksum that proves a table holds exactly the generated rows."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import numpy as np
import psycopg
import pyarrow as pa
from psycopg import sql

from benchmarks.workload import CHECKSUM_SQL, PRIME, Checksum, Workload
from pull_pipeline.sink.pgcopy import encode_readings, write_binary

SOURCE_TABLE = "bench_source"


def with_database(dsn: str, name: str) -> str:
    """`dsn` pointing at database `name` instead, as a URL (what sources.yaml takes)."""
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    user = quote(str(params.get("user", "")), safe="")
    if params.get("password"):
        user += ":" + quote(str(params["password"]), safe="")
    host = params.get("host", "localhost")
    port = params.get("port", "5432")
    return f"postgresql://{user}{'@' if user else ''}{host}:{port}/{quote(name)}"


@contextmanager
def scratch_database(admin_dsn: str, name: str, keep: bool = False) -> Iterator[str]:
    """Create database `name` afresh (dropping a leftover one) and drop it afterwards."""
    with psycopg.connect(admin_dsn, autocommit=True) as admin:
        _drop(admin, name)
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(admin_dsn, name)
    finally:
        if not keep:
            with psycopg.connect(admin_dsn, autocommit=True) as admin:
                _drop(admin, name)


def _drop(admin: psycopg.Connection, name: str) -> None:
    admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def has_timescale(dsn: str) -> bool:
    """Whether TimescaleDB is preloaded on this server (so the sink makes hypertables)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    return bool(row and "timescaledb" in row[0])


def columns(workload: Workload) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """The generated rows as the columns a binary COPY takes (tags, epoch µs, values)."""
    return (pa.array(workload.tag_array(), type=pa.large_string()),
            workload.epoch_seconds * 1_000_000, workload.values)


def fill_source(dsn: str, workload: Workload) -> None:
    """The SQL source: a historian-like table with a time index, holding the workload."""
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {SOURCE_TABLE}")
        conn.execute(f"CREATE TABLE {SOURCE_TABLE} (sensor_tag text NOT NULL, "
                     "recorded_at timestamptz NOT NULL, sensor_value double precision NOT NULL)")
        _copy(conn, SOURCE_TABLE, workload)
        conn.execute(f"CREATE INDEX ON {SOURCE_TABLE} (recorded_at)")
        conn.commit()
        conn.execute(f"ANALYZE {SOURCE_TABLE}")


def copy_baseline(dsn: str, workload: Workload, table: str, ddl: str,
                  hypertable_interval: str | None = None) -> float:
    """Seconds to binary-COPY the rows (already in memory) into a fresh `table` and commit.

    `ddl` is the column list and constraints; with `hypertable_interval` the table becomes a
    TimescaleDB hypertable on `ts` first. The encoding is inside the timing: it is part of
    any real COPY of columnar data.
    """
    tags, micros, values = columns(workload)
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} ({ddl})")
        if hypertable_interval:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            conn.execute("SELECT create_hypertable(%s::regclass, 'ts', "
                         "chunk_time_interval => %s::interval)", (table, hypertable_interval))
        conn.commit()
        conn.execute("CHECKPOINT")
        started = time.perf_counter()
        _copy(conn, table, workload, (tags, micros, values))
        conn.commit()
        return time.perf_counter() - started


def _copy(conn: psycopg.Connection, table: str, workload: Workload,
          data: tuple[pa.Array, np.ndarray, np.ndarray] | None = None) -> None:
    tags, micros, values = data or columns(workload)
    rows = encode_readings(tags, micros, values)
    with conn.cursor().copy(f"COPY {table} FROM STDIN (FORMAT binary)") as copy:
        write_binary(copy, rows)


def table_checksum(dsn: str, relation: str, where: str = "",
                   params: tuple[object, ...] = ()) -> Checksum:
    """Count and digest of `relation` (a table or a subquery with sensor_tag, ts, sensor_value)."""
    query = CHECKSUM_SQL.format(prime=PRIME, table=relation, where=where)
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query, params).fetchone()
    assert row is not None  # an aggregate without GROUP BY returns one row
    count, digest = row
    return Checksum(int(count), int(digest))
