"""SQL sources: one SELECT per window, streamed in chunks over a read-only session.

Binding rule. The query binds the window as `:start` (included) and `:end` (excluded):

- `time_unit: iso8601` binds timezone-aware UTC datetimes (on SQLite, which has no datetime
  type, UTC text `YYYY-MM-DD HH:MM:SS`, the format of its `datetime()` and
  `CURRENT_TIMESTAMP`);
- `s`, `ms`, `us`, `ns` bind integers: the count of that unit since `reference_epoch`,
  rounded up to a whole unit (exact for integer time columns), so
  `WHERE epoch_col >= :start AND epoch_col < :end` works on numeric time columns.

Write `CAST(:start AS timestamptz)` rather than `:start::timestamptz`: SQLAlchemy does not
see a placeholder glued to `::`, and the query is refused with that hint.

Never a write. The configured query can change nothing, whatever its text:

- One statement. A second statement is refused when the config loads and again when the
  connector is built (`single_sql_statement`), and, exactly, by the database or driver: on
  PostgreSQL the server parses the whole COPY text as one command (Parse message, extended
  protocol) before it runs over the simple protocol, which would run every statement in it;
  sqlite3 runs one statement per call; pymysql connects without CLIENT_MULTI_STATEMENTS, so
  the server refuses a second one. Other drivers (psycopg2, mysqlclient) may send several
  statements in one call, so with them the query may hold no `;` at all.
- A read-only session. PostgreSQL connects with `-c default_transaction_read_only=on` (so
  even a transaction opened after a COMMIT could not write) and runs `SET TRANSACTION READ
  ONLY`; SQLite `PRAGMA query_only`; MySQL/MariaDB `SET SESSION TRANSACTION READ ONLY`.
  Nothing is ever committed.

Bounded waits. `lock_timeout` bounds a wait for a lock another session holds (PostgreSQL
`lock_timeout`, MySQL/MariaDB `lock_wait_timeout` and `innodb_lock_wait_timeout` in whole
seconds, SQLite `busy_timeout`); `statement_timeout` bounds the query (PostgreSQL
`statement_timeout`, MariaDB `max_statement_time`, MySQL `max_execution_time`, SQLite a
progress handler). The query streams its rows while they are loaded, so the statement bound
covers the whole pull. Hitting either is a TransientSourceError naming the bound.

On PostgreSQL the session also runs in UTC, so `timestamp without time zone` columns compare
and map as UTC, as naive values do everywhere else in the pipeline.

Streaming. Rows come through a server-side cursor, `chunk_size` rows per raw batch. On
PostgreSQL with psycopg 3 the query runs as `COPY (query) TO STDOUT (FORMAT csv)` instead
(faster: no Python object per value) and each chunk of CSV rows is parsed by Arrow.
Both paths yield the same text for text and numbers; timestamps keep PostgreSQL's text form
(`2024-01-01 00:00:00+00`) on COPY, ISO-8601 with `T` on the cursor path.
"""

from __future__ import annotations

import csv
import logging
import math
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import pq
from sqlalchemy import URL, Connection, Dialect, create_engine, event, make_url, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.pool import NullPool

from pull_pipeline.canonical import UNIT_NS, parse_instant
from pull_pipeline.config.models import SINGLE_SELECT, SqlSource, single_sql_statement
from pull_pipeline.connectors.base import Connector, raw_schema, to_text_array
from pull_pipeline.errors import (
    ConfigError,
    PermanentSourceError,
    SourceError,
    TransientSourceError,
    first_line,
)
from pull_pipeline.redaction import register_secret

logger = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10
_READ_ONLY_BACKENDS = {"postgresql", "sqlite", "mysql", "mariadb"}
_PG_READ_ONLY = "-c default_transaction_read_only=on"
# Drivers that send one statement per call (see the module docstring); others may send more.
_ONE_STATEMENT_DRIVERS = {"psycopg", "pysqlite", "pymysql"}
_MULTI_STATEMENTS = 1 << 16  # MySQL protocol capability CLIENT_MULTI_STATEMENTS
# Error codes as `_code` spells them: SQLSTATE, mysql:<errno>, sqlite:<primary result code>.
_LOCK_WAIT = {"55P03", "mysql:1205", "sqlite:5", "sqlite:6"}
_TOO_LONG = {"mysql:1969", "mysql:3024", "sqlite:9"}  # and 57014 naming the statement timeout
_WRITE_REFUSED = {"25006", "mysql:1792", "sqlite:8"}
_SYNTAX_ERROR = {"42601", "mysql:1064"}  # with a ';' in the query: a second statement
# A second statement (PostgreSQL Parse, sqlite3), or a write psycopg2's DECLARE CURSOR refuses.
_NOT_ONE_READ = re.compile(r"multiple commands|one statement at a time|data-modifying")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")
_URL_FIX = (
    "percent-encode special characters in the password (% as %25, @ as %40, / as %2F, "
    "a space as %20), or use the username/password keys"
)
_CREDENTIALS = re.compile(
    r"authentication failed|no password supplied|no pg_hba\.conf entry"
    r"|role \S+ does not exist|access denied",
    re.IGNORECASE,
)
_NO_DATABASE = re.compile(r"database \S+ does not exist|unknown database", re.IGNORECASE)
# SQLSTATE classes worth a retry: connection, resources, operator intervention (restart,
# statement timeout), system error, transaction rollback (deadlock, serialization).
_TRANSIENT_SQLSTATE = {"08", "53", "57", "58", "40"}


class SqlConnector(Connector):
    """Pull a window from a database through SQLAlchemy; see the module docstring."""

    def __init__(self, name: str, config: SqlSource) -> None:
        """`config` must have its `${NAME}` placeholders resolved already."""
        super().__init__(name)
        self.config = config
        url = _engine_url(name, config)
        self._query = _checked_query(name, config.query, url)
        self._copy = url.get_backend_name() == "postgresql" and url.get_driver_name() == "psycopg"
        if url.get_backend_name() == "sqlite":
            _require_sqlite_file(name, url)
        elif url.get_backend_name() not in _READ_ONLY_BACKENDS:
            logger.warning(
                "sql source %r: %s cannot be made read-only by pull_pipeline; pulls are never "
                "committed, but use a read-only account", name, url.get_backend_name(),
            )
        try:
            self._engine = create_engine(
                url, poolclass=NullPool, connect_args=_connect_args(name, url, config)
            )
        except (ImportError, sa_exc.ArgumentError) as exc:
            raise ConfigError(
                f"sql source {name!r}: cannot use {url.drivername!r} ({exc}); "
                "install its driver or fix the url"
            ) from None
        if url.get_driver_name() == "pymysql":
            event.listen(self._engine, "do_connect", _one_statement_per_query)

    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        """Yield the rows of `[start, end)`, at most `chunk_size` per table (none if empty)."""
        params = self._window(start, end)
        rows = chunks = 0
        try:
            with self._session() as conn:
                stream = self._fetch_copy if self._copy else self._fetch_cursor
                for table in stream(conn, params):
                    rows += table.num_rows
                    chunks += 1
                    yield table
        except (sa_exc.SQLAlchemyError, psycopg.Error) as exc:
            raise self._error(exc) from None
        logger.info(
            "sql source %r: %d rows in %d chunks for [%s, %s)", self.name, rows, chunks,
            start.isoformat(), end.isoformat(),
        )

    def probe(self) -> None:
        """Run `SELECT 1`; raise TransientSourceError while the database cannot be reached."""
        try:
            with self._engine.connect() as conn:
                conn.exec_driver_sql("SELECT 1")
        except sa_exc.SQLAlchemyError as exc:
            raise self._error(exc) from None

    def close(self) -> None:
        self._engine.dispose()

    # --- internals ----------------------------------------------------------------------

    @contextmanager
    def _session(self) -> Iterator[Connection]:
        """A connection inside a read-only, bounded transaction; closing it rolls back."""
        with self._engine.connect() as conn:
            for statement in _session_statements(conn.dialect, self.config):
                conn.exec_driver_sql(statement)
            if conn.dialect.name == "sqlite":  # SQLite has no statement timeout of its own
                deadline = time.monotonic() + self.config.statement_timeout.total_seconds()
                raw = _driver_connection(conn)
                raw.set_progress_handler(lambda: time.monotonic() > deadline, 10_000)
            yield conn

    def _window(self, start: datetime, end: datetime) -> dict[str, Any]:
        """The values bound to `:start` and `:end` (the binding rule in the module docstring)."""
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("start and end must be timezone-aware")
        unit = self.config.time_unit
        if unit == "iso8601":
            if self._engine.dialect.name == "sqlite":
                return {k: _sqlite_text(v) for k, v in (("start", start), ("end", end))}
            return {"start": start.astimezone(UTC), "end": end.astimezone(UTC)}
        epoch = parse_instant(self.config.reference_epoch)
        return {"start": _count(start - epoch, unit), "end": _count(end - epoch, unit)}

    def _fetch_cursor(self, conn: Connection, params: dict[str, Any]) -> Iterator[pa.Table]:
        """The generic path: a server-side cursor read `chunk_size` rows at a time."""
        result = conn.execute(
            text(self._query), params, execution_options={"yield_per": self.config.chunk_size}
        )
        with result:
            positions = self._positions(list(result.keys()))
            schema = raw_schema(self.config.fields)
            for rows in result.partitions(self.config.chunk_size):
                columns = list(zip(*rows))
                yield pa.Table.from_arrays(
                    [to_text_array(columns[i]) for i in positions], schema=schema
                )

    def _fetch_copy(self, conn: Connection, params: dict[str, Any]) -> Iterator[pa.Table]:
        """The PostgreSQL path: COPY ... TO STDOUT, one CopyData message per row.

        The window is bound client-side as quoted literals (psycopg's own adaptation), since
        COPY takes no parameters. Rows are gathered `chunk_size` at a time, so every chunk is
        whole rows and parses on its own.
        """
        raw = _driver_connection(conn)
        compiled = str(text(self._query).compile(dialect=conn.dialect))  # :start -> %(start)s
        with psycopg.ClientCursor(raw) as client:
            query = client.mogrify(compiled, params)
        statement = f"COPY (\n{query}\n) TO STDOUT (FORMAT csv, HEADER, ENCODING 'UTF8')"
        _parse_as_one_command(raw, statement)
        with raw.cursor() as cursor, cursor.copy(statement) as copy:
            read = copy.read
            header = next(csv.reader([bytes(read()).decode()]))
            self._positions(header)
            convert = _csv_options(self.config)
            size = self.config.chunk_size
            buffer = bytearray()
            count = 0
            while row := read():
                buffer += row
                count += 1
                if count == size:
                    yield _parse_csv(buffer, header, convert)
                    buffer = bytearray()
                    count = 0
            if count:
                yield _parse_csv(buffer, header, convert)

    def _positions(self, columns: list[str]) -> list[int]:
        """Where the three mapped fields are among the result's columns."""
        positions = []
        for key, field in self.config.fields.model_dump().items():
            if field not in columns:
                hint = ""
                if field.lower() in (c.lower() for c in columns):
                    hint = " (names differ in case: PostgreSQL lowers unquoted aliases)"
                raise PermanentSourceError(
                    f"sql source {self.name!r}: the query returned no column {field!r} "
                    f"(fields.{key}); it returned {columns}{hint}. Alias it in the query "
                    f"(... AS {field}) or set fields.{key}"
                )
            positions.append(columns.index(field))
        return positions

    def _error(self, exc: Exception) -> SourceError:
        """Classify a driver error: worth retrying, or a problem a person must fix."""
        orig = getattr(exc, "orig", None) or exc
        detail = first_line(orig)
        sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None) or ""
        code = _code(orig) or sqlstate
        where = f"sql source {self.name!r}"
        if code in _LOCK_WAIT:
            return TransientSourceError(
                f"{where}: the query waited longer than lock_timeout="
                f"{_shown(self.config.lock_timeout)} for a lock on the source; another session "
                f"holds a lock — raise lock_timeout or retry later ({detail})"
            )
        if code in _TOO_LONG or (code == "57014" and "statement timeout" in detail):
            return TransientSourceError(
                f"{where}: the query ran longer than statement_timeout="
                f"{_shown(self.config.statement_timeout)} and was cancelled — make it cheaper "
                f"(an index on the time column, a shorter cadence) or raise statement_timeout "
                f"({detail})"
            )
        if (
            code in _WRITE_REFUSED
            or _NOT_ONE_READ.search(detail)
            or (code in _SYNTAX_ERROR and ";" in self._query)
        ):
            return PermanentSourceError(
                f"{where}: {SINGLE_SELECT}; the database refused it: {detail}"
            )
        if sqlstate.startswith("28") or _CREDENTIALS.search(detail):
            return PermanentSourceError(
                f"{where}: credentials refused by the database ({detail}); "
                "check username and password"
            )
        if _NO_DATABASE.search(detail):
            return PermanentSourceError(f"{where}: {detail}; check the database in url")
        if _is_transient(exc, orig, sqlstate):
            return TransientSourceError(
                f"{where}: cannot reach the database ({detail}); the pull will be retried"
            )
        return PermanentSourceError(f"{where}: the query failed: {detail}")


def _engine_url(name: str, config: SqlSource) -> URL:
    """The SQLAlchemy URL: plain postgresql:// goes to psycopg 3; username/password override.

    A URL that does not parse is never quoted back, nor is the parser's message: either may
    hold part of a password that was not percent-encoded.
    """
    where = f"sql source {name!r}: url"
    if _BAD_PERCENT.search(config.url):
        raise ConfigError(f"{where} has a '%' that starts no percent-encoded character; {_URL_FIX}")
    try:
        url = make_url(config.url)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(
            f"{where} is not a database URL such as postgresql://user@host:5432/db or "
            f"sqlite:///path/to/file.db; {_URL_FIX}"
        ) from None
    if "@" in (url.host or ""):  # a raw @ in the password: the rest of it became the host
        raise ConfigError(f"{where} has more than one '@' before the host; {_URL_FIX}")
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg")
    try:
        url.get_dialect()  # an unknown database name fails here, not as SQLAlchemy's own error
    except sa_exc.ArgumentError as exc:
        raise ConfigError(f"{where}: cannot use {url.drivername!r} ({exc}); install its "
                          "driver or fix the url") from None
    if config.username is not None:
        url = url.set(username=config.username)
    if config.password is not None:
        url = url.set(password=config.password)
    register_secret(url.password)
    return url


def _connect_args(name: str, url: URL, config: SqlSource) -> dict[str, Any]:
    """Driver arguments: PostgreSQL gets a connect timeout, names itself to the DBA and starts
    every transaction read-only (added to any `options` the url or connect_args give)."""
    args = dict(config.connect_args)
    if url.get_backend_name() == "postgresql":
        for key, value in (
            ("connect_timeout", CONNECT_TIMEOUT_S),
            ("application_name", f"pull_pipeline:{name}"),
        ):
            if key not in url.query:
                args.setdefault(key, value)
        options = args.get("options") or url.query.get("options") or ""
        args["options"] = f"{options} {_PG_READ_ONLY}".strip()
    return args


def _one_statement_per_query(
    dialect: Dialect, record: Any, cargs: Any, cparams: dict[str, Any]
) -> None:
    """pymysql: never ask for CLIENT_MULTI_STATEMENTS, so the server refuses a second statement."""
    cparams["client_flag"] = int(cparams.get("client_flag", 0)) & ~_MULTI_STATEMENTS


def _session_statements(dialect: Dialect, config: SqlSource) -> list[str]:
    """What opens each pull's transaction: read-only first, then the bounds on every wait."""
    statement_s = config.statement_timeout.total_seconds()
    lock_s = config.lock_timeout.total_seconds()
    if dialect.name == "postgresql":
        return [
            "SET TRANSACTION READ ONLY",
            f"SET LOCAL statement_timeout = {_ms(statement_s)}",
            f"SET LOCAL lock_timeout = {_ms(lock_s)}",
            "SET LOCAL TimeZone = 'UTC'",
            "SET LOCAL DateStyle = 'ISO'",
        ]
    if dialect.name == "sqlite":
        return ["PRAGMA query_only = ON", f"PRAGMA busy_timeout = {_ms(lock_s)}"]
    if dialect.name in ("mysql", "mariadb"):
        limit = (
            f"max_statement_time = {statement_s}"  # MariaDB: seconds
            if getattr(dialect, "is_mariadb", False)
            else f"max_execution_time = {_ms(statement_s)}"  # MySQL: milliseconds
        )
        return [
            "SET SESSION TRANSACTION READ ONLY",
            f"SET SESSION {limit}",
            f"SET SESSION lock_wait_timeout = {math.ceil(lock_s)}",
            f"SET SESSION innodb_lock_wait_timeout = {math.ceil(lock_s)}",
        ]
    return []


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


def _shown(value: timedelta) -> str:
    return f"{value.total_seconds():g}s"


def _driver_connection(conn: Connection) -> Any:
    """The DBAPI driver's own connection under `conn` (sqlite3's, psycopg's, ...).

    SQLAlchemy types it as optional: it is None only once the connection was invalidated,
    which a connection checked out by `_session` never is.
    """
    raw = conn.connection.driver_connection
    if raw is None:
        raise RuntimeError("the SQL connection was invalidated; it has no driver connection")
    return raw


def _parse_as_one_command(raw: psycopg.Connection[Any], statement: str) -> None:
    """Have the server parse `statement` as exactly one command, running nothing.

    `cursor.copy()` sends its text over the simple query protocol, which runs every statement
    in it; a Parse message (extended protocol) refuses more than one. Same text, same parser.
    """
    encoding = raw.info.encoding
    result = raw.pgconn.prepare(b"", statement.encode(encoding))
    if result.status != pq.ExecStatus.COMMAND_OK:
        raise psycopg.errors.error_from_result(result, encoding=encoding)


def _require_sqlite_file(name: str, url: URL) -> None:
    """Refuse a missing SQLite file: connecting would create an empty one."""
    database = url.database or ""
    in_file = database and database != ":memory:" and not database.startswith("file:")
    if in_file and not Path(database).is_file():
        raise PermanentSourceError(f"sql source {name!r}: no SQLite database at {database}")


def _checked_query(name: str, query: str, url: URL) -> str:
    """One statement without its trailing `;`, binding exactly :start and :end."""
    try:
        query = single_sql_statement(query, mysql=url.get_backend_name() in ("mysql", "mariadb"))
    except ValueError as exc:
        raise ConfigError(f"sql source {name!r}: {exc}") from None
    driver = url.get_driver_name()
    if driver not in _ONE_STATEMENT_DRIVERS and ";" in query:
        raise ConfigError(
            f"sql source {name!r}: {SINGLE_SELECT}, and with the {driver} driver it may hold no "
            "';', not even in a string or comment: that driver sends text in which the database "
            "would run a second statement. Write chr(59) for a ';', or use a driver that sends "
            "one statement per call (postgresql://, mysql+pymysql://, sqlite://)"
        )
    found = set(text(query).compile().params)
    missing = sorted({"start", "end"} - found)
    extra = sorted(found - {"start", "end"})
    if missing or extra:
        problems = [f"missing :{p}" for p in missing] + [f"unexpected :{p}" for p in extra]
        raise ConfigError(
            f"sql source {name!r}: the query must bind exactly :start and :end "
            f"({', '.join(problems)}); write CAST(:start AS type) instead of :start::type "
            "and escape a literal colon as \\:"
        )
    return query


def _count(delta: timedelta, unit: str) -> int:
    """Whole units in `delta`, rounded up: `col >= :start` stays exact for integer columns."""
    ns = (delta // timedelta(microseconds=1)) * 1000
    return -(-ns // UNIT_NS[unit])


def _sqlite_text(value: datetime) -> str:
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ")


def _csv_options(config: SqlSource) -> pacsv.ConvertOptions:
    """Read the mapped fields as text; an unquoted empty field is NULL, `""` an empty string."""
    names = raw_schema(config.fields).names
    return pacsv.ConvertOptions(
        include_columns=names,
        column_types={name: pa.large_string() for name in names},
        null_values=[""],
        strings_can_be_null=True,
        quoted_strings_can_be_null=False,
    )


_QUOTED_NEWLINES = pacsv.ParseOptions(newlines_in_values=True)


def _parse_csv(data: bytearray, header: list[str], convert: pacsv.ConvertOptions) -> pa.Table:
    """Parse whole rows as one block, so no block boundary can fall inside a quoted value."""
    read = pacsv.ReadOptions(column_names=header, use_threads=False, block_size=len(data) + 1)
    return pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(data)),
        read_options=read,
        parse_options=_QUOTED_NEWLINES,
        convert_options=convert,
    )


def _code(orig: BaseException) -> str:
    """mysql:<errno> for MySQL drivers, sqlite:<primary result code> for sqlite3, else ''."""
    sqlite_code = getattr(orig, "sqlite_errorcode", None)
    if sqlite_code is not None:
        return f"sqlite:{sqlite_code & 0xFF}"
    if orig.args and isinstance(orig.args[0], int):
        return f"mysql:{orig.args[0]}"
    return ""


def _is_transient(exc: Exception, orig: BaseException, sqlstate: str) -> bool:
    if isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, sa_exc.TimeoutError):
        return True
    if sqlstate:
        return sqlstate[:2] in _TRANSIENT_SQLSTATE
    if getattr(orig, "sqlite_errorcode", None) is not None:
        return False
    # No SQLSTATE from PostgreSQL drivers means the failure came before the server ran SQL.
    return isinstance(exc, (sa_exc.OperationalError, psycopg.OperationalError))


