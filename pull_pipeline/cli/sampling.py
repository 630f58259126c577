"""One sample of a source's own answer, before any mapping.

The connectors yield only the three mapped fields, which is right for a pull but hides what
a person setting up a source needs to see: the whole first record, where the lists are, the
columns of a query. `check` and `init-source` get that here, through the REST client the
connector uses (same auth, TLS, bounds and error messages) or a read-only SQL session.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from pull_pipeline.canonical import UNIT_NS, parse_instant
from pull_pipeline.config.models import RestSource, SqlSource
from pull_pipeline.connectors.rest.body import parse_json
from pull_pipeline.connectors.rest.client import RestClient
from pull_pipeline.connectors.rest.connector import WINDOW_FORMATS
from pull_pipeline.connectors.rest.pagination import build_paginator
from pull_pipeline.errors import PermanentSourceError, first_line
from pull_pipeline.redaction import register_secret

SQL_TIME_UNITS = ("iso8601", "s", "ms", "us", "ns")
_STATEMENT_TIMEOUT_MS = 30_000


@dataclass(frozen=True)
class FirstPage:
    """The parsed body of a window's first page, and how the server answered."""

    body: Any
    status: str  # "HTTP 200 OK"
    millis: float


def rest_first_page(name: str, config: RestSource, start: datetime, end: datetime) -> FirstPage:
    """Request the first page of `[start, end)` once (no retries); raise as a fetch would."""
    client = RestClient(name, config)
    try:
        fmt = WINDOW_FORMATS[config.window_format]
        params = {**config.params, config.window_params.start: fmt(start),
                  config.window_params.end: fmt(end)}
        page = build_paginator(config.pagination, name).first(config.url, params)
        began = time.perf_counter()
        answer = client.send(page, client.window(), attempts=1)
        millis = (time.perf_counter() - began) * 1000
        response = answer.response
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        return FirstPage(parse_json(name, answer), status, millis)
    finally:
        client.close()


@dataclass(frozen=True)
class SqlSample:
    """The first rows a query returns for a window, and the time unit that found them."""

    columns: list[str]
    rows: list[dict[str, Any]]
    time_unit: str


def sql_sample(url: str, query: str, start: datetime, end: datetime, limit: int = 50) -> SqlSample:
    """Run `query` for `[start, end)` with each way of binding the window until one returns
    rows: datetimes (time_unit iso8601), then counts of s, ms, us, ns since 1970.

    A binding of the wrong type fails or matches nothing, so the one that returns rows tells
    the time column's unit. The session is read-only and nothing is ever committed.
    """
    engine = _engine(url)
    errors: list[str] = []
    try:
        with engine.connect() as conn:
            for unit in SQL_TIME_UNITS:
                _read_only(conn)
                try:
                    result = conn.execute(sa.text(query), _bind(conn, unit, start, end))
                    columns = list(result.keys())
                    rows = result.fetchmany(limit)
                except sa_exc.DBAPIError as exc:
                    errors.append(f"{unit}: {first_line(exc.orig)}")
                    continue
                finally:
                    conn.rollback()
                if rows:
                    return SqlSample(columns, [dict(zip(columns, row)) for row in rows], unit)
    except sa_exc.SQLAlchemyError as exc:
        detail = first_line(getattr(exc, "orig", None) or exc)
        raise PermanentSourceError(f"cannot run the query: {detail}") from None
    finally:
        engine.dispose()
    tried = "; ".join(errors) or "each returned no row"
    raise PermanentSourceError(
        f"the query returned no row for [{start.isoformat()}, {end.isoformat()}) with the window "
        f"bound as datetimes or as s/ms/us/ns since 1970 ({tried}); check the query, or sample "
        "a window that has data (--sample-window)"
    )


def sql_url(config: SqlSource) -> str:
    """The source's url with its `username`/`password` keys applied (resolved source)."""
    url = sa.make_url(config.url)
    if config.username is not None:
        url = url.set(username=config.username)
    if config.password is not None:
        url = url.set(password=config.password)
    return url.render_as_string(hide_password=False)


def _engine(url: str) -> sa.Engine:
    try:
        parsed = sa.make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise PermanentSourceError(
            "the url is not a database URL such as postgresql://user@host:5432/db or "
            "sqlite:///path/to/file.db"
        ) from None
    register_secret(parsed.password)
    args: dict[str, Any] = {}
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() == "postgresql":
        args = {"connect_timeout": 10, "options": "-c default_transaction_read_only=on "
                f"-c statement_timeout={_STATEMENT_TIMEOUT_MS} -c TimeZone=UTC"}
    try:
        return sa.create_engine(parsed, poolclass=NullPool, connect_args=args)
    except (ImportError, sa_exc.ArgumentError) as exc:
        raise PermanentSourceError(f"cannot use {parsed.drivername!r} ({exc})") from None


def _read_only(conn: sa.Connection) -> None:
    """PostgreSQL is read-only by its connect options; the others by a statement."""
    name = conn.dialect.name
    if name == "sqlite":
        conn.exec_driver_sql("PRAGMA query_only = ON")
    elif name in ("mysql", "mariadb"):
        conn.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")


def _bind(conn: sa.Connection, unit: str, start: datetime, end: datetime) -> dict[str, Any]:
    """The window as the SQL connector binds it for `unit` (see connectors/sql.py)."""
    if unit == "iso8601":
        if conn.dialect.name == "sqlite":
            return {k: v.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")
                    for k, v in (("start", start), ("end", end))}
        return {"start": start, "end": end}
    epoch = parse_instant("1970-01-01T00:00:00Z")
    return {k: -(-((v - epoch) // timedelta(microseconds=1)) * 1000 // UNIT_NS[unit])
            for k, v in (("start", start), ("end", end))}
