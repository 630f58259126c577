"""The sink: make a window of the readings hypertable equal to a validated batch.

One class, one job. `TimescaleSink.load(...)` opens a transaction in which the window's
rows are deleted and the batch is streamed in by binary COPY (see `WindowLoad`), the
window's quarantined rows are replaced, and, if the window is over its reject ratio, the
row replacement is rolled back to a savepoint. Either everything commits or nothing does:
a rerun never duplicates and a failed load leaves the previous rows.
"""

from __future__ import annotations

import itertools
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql
from pydantic import BaseModel, ConfigDict

from pull_pipeline.config.env import resolve_text
from pull_pipeline.config.models import Duration, SinkConfig
from pull_pipeline.durations import format_duration
from pull_pipeline.errors import ConfigError, SinkError, SinkUnavailable, first_line
from pull_pipeline.redaction import redact, register_secret
from pull_pipeline.sink import rollups as rollups_mod
from pull_pipeline.sink.pgcopy import write_binary
from pull_pipeline.sink.rollups import Rollup
from pull_pipeline.sink.runs import PreparedRun, Run, RunBuffer, Span
from pull_pipeline.sink.slots import source_slot
from pull_pipeline.windows import Window

log = logging.getLogger("pull_pipeline.sink")
SINK_DSN_ENV = "SINK_DSN"  # used when sources.yaml sets no sink.dsn
_schema_ready: dict[tuple[str, str], bool] = {}  # (dsn, table) -> uses TimescaleDB
_schema_lock = threading.Lock()
_CSV_OPTIONS = pacsv.WriteOptions(include_header=False)
_SPOOL_BYTES = 8 << 20  # rejects beyond this spill from memory to a temporary file
# Per-batch savepoints are subtransactions; past 64 in one transaction PostgreSQL's
# subtransaction cache overflows and slows every other session, so a load uses at most this.
_SAVEPOINT_BUDGET = 32
# Rows sorted together before one COPY: enough for a 1M-row window in one key-ordered run,
# small enough that a 10M-row window needs little more memory than a 1M-row one (README,
# Performance).
_RUN_ROWS = 1_000_000


@dataclass
class LoadResult:
    """What a load did; `add` sums the results of several windows' loads."""

    staged: int = 0
    loaded: int = 0
    rejected: int = 0
    replaced: bool = False
    previous: int = 0  # rows the windows held before (deleted, or kept when not replaced)
    kept_instead_of_empty: int = 0  # rows kept because the new batch had none
    delete_seconds: float = 0.0

    @property
    def deduplicated(self) -> int:
        return self.staged - self.loaded if self.replaced else 0

    def add(self, other: LoadResult) -> None:
        """Count another window's load in (rows deduplicated only where it replaced)."""
        self.staged += other.staged if other.replaced else 0
        self.loaded += other.loaded
        self.rejected += other.rejected
        self.previous += other.previous
        self.kept_instead_of_empty += other.kept_instead_of_empty
        self.delete_seconds += other.delete_seconds
        self.replaced = self.replaced or other.replaced


def normalize_dsn(dsn: str) -> str:
    """Accept SQLAlchemy-style URLs (postgresql+psycopg://) as well as libpq ones."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgres://"):
        if dsn.startswith(prefix):
            return "postgresql://" + dsn[len(prefix):]
    return dsn


class TimescaleSink(BaseModel):
    """TimescaleDB (or plain PostgreSQL) sink for canonical readings.

    `dsn` may hold `${NAME}` placeholders: they are resolved when a connection is opened, so
    the secret never sits in Dagster's resource config. With no `dsn`, `$SINK_DSN` is used
    when set, else the embedded PostgreSQL under `state_dir` is started and used. Durations
    accept what sources.yaml does ("1 day", "86400 seconds") as well as timedeltas.
    """

    model_config = ConfigDict(frozen=True)

    dsn: str | None = None
    table: str = "sensor_readings"
    chunk_interval: Duration = timedelta(days=1)
    compress_after: Duration | None = None
    retention: Duration | None = None
    rollups: list[Duration] = []
    lock_timeout: Duration = timedelta(minutes=1)
    statement_timeout: Duration = timedelta(minutes=15)
    state_dir: Path = Path(".pull_pipeline")

    @classmethod
    def from_config(cls, config: SinkConfig, state_dir: Path) -> TimescaleSink:
        return cls(
            dsn=config.dsn, table=config.table, chunk_interval=config.chunk_interval,
            compress_after=config.compress_after, retention=config.retention,
            rollups=config.rollups, lock_timeout=config.lock_timeout,
            statement_timeout=config.statement_timeout, state_dir=state_dir,
        )

    # --- connections -------------------------------------------------------------------------

    def resolved_dsn(self) -> str:
        """The libpq URL to connect to: the configured DSN, or the embedded server's."""
        configured = self.dsn or os.environ.get(SINK_DSN_ENV)
        if not configured:
            from pull_pipeline.sink.embedded import embedded_dsn

            return embedded_dsn(self.state_dir)

        dsn = normalize_dsn(resolve_text(configured, where="sink", key="dsn"))
        try:
            info = psycopg.conninfo.conninfo_to_dict(dsn)
        except (psycopg.Error, ValueError):  # ValueError: text that is not UTF-8
            # libpq's message quotes the text near the fault, which is often the password.
            form = "URL" if "://" in dsn else "keyword string"
            raise ConfigError(
                f"sink.dsn (or ${SINK_DSN_ENV}) is not a valid PostgreSQL URL or keyword string "
                f"(libpq cannot parse it as a {form}; its message is not shown, it quotes the "
                "DSN); percent-encode special characters in the password, e.g. with python -c "
                "'import urllib.parse;print(urllib.parse.quote(input(), safe=\"\"))', or, in a "
                "keyword string, quote a value holding spaces: password='...'"
            ) from None
        password = info.get("password")
        register_secret(password if isinstance(password, str) else None)
        return dsn

    def connect(self, dsn: str | None = None, **kwargs: Any) -> psycopg.Connection:
        """A bare connection; a failure to connect becomes a transient `SinkUnavailable`."""
        dsn = dsn or self.resolved_dsn()
        try:
            return psycopg.connect(dsn, connect_timeout=10, application_name="pull_pipeline",
                                   options=self._session_options(dsn), **kwargs)
        except psycopg.Error as exc:
            raise SinkUnavailable(
                f"cannot connect to the sink ({first_line(exc)}); the previous data is untouched. "
                "Check sink.dsn / SINK_DSN and that the database is up"
            ) from None

    def _session_options(self, dsn: str) -> str:
        """libpq `options` bounding every wait of a session, after any the DSN sets itself."""
        own = psycopg.conninfo.conninfo_to_dict(dsn).get("options") or ""
        bounds = (f"-c lock_timeout={_millis(self.lock_timeout)} "
                  f"-c statement_timeout={_millis(self.statement_timeout)}")
        return f"{own} {bounds}".strip()

    def source_slot(
        self, source: str, slots: int, log: Callable[[str], None], max_wait: float = 3600.0
    ) -> AbstractContextManager[int]:
        """Hold one of the source's `concurrency:` slots while calling it; see `slots`."""
        return source_slot(self.connect, source, slots, log, max_wait=max_wait)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection]:
        """A connection with the schema in place; connection failures become `SinkError`."""
        with self._opened() as (conn, _):
            yield conn

    @contextmanager
    def _opened(self) -> Iterator[tuple[psycopg.Connection, bool]]:
        """A connection with the schema in place, and whether the table is a hypertable."""
        dsn = self.resolved_dsn()
        conn = self.connect(dsn)
        try:
            yield conn, self._ensure_schema(conn, dsn)
        finally:
            conn.close()

    # --- schema --------------------------------------------------------------------------------

    @property
    def names(self) -> TableNames:
        return TableNames.parse(self.table)

    @property
    def rollup_list(self) -> list[Rollup]:
        return [Rollup(width) for width in self.rollups]

    def _ensure_schema(self, conn: psycopg.Connection, dsn: str) -> bool:
        key = (dsn, self.table)
        with _schema_lock:
            if key in _schema_ready:
                return _schema_ready[key]
            timescale = _schema_ready[key] = create_schema(conn, self)
        if not timescale:
            log.warning(
                "TimescaleDB extension not available in this database: %s is a plain "
                "PostgreSQL table (no hypertable, compression or retention policies)",
                self.table,
            )
        return timescale

    # --- loads ----------------------------------------------------------------------------------

    @contextmanager
    def load(
        self, source: str, windows: Sequence[Window], run_id: str = "", *,
        replace_rejects: bool = True, allow_empty: bool = False,
    ) -> Iterator[WindowLoad]:
        """Open one transaction that replaces `windows` of `source`; see `WindowLoad`.

        `replace_rejects=False` keeps the windows' quarantined rows (a restore from the
        archive brings back loaded rows only, so the rejects of the original pull stay).
        """
        with self.session() as session, session.load(
            source, windows, run_id, replace_rejects=replace_rejects, allow_empty=allow_empty
        ) as load:
            yield load

    @contextmanager
    def session(self) -> Iterator[SinkSession]:
        """One connection for many loads (a ranged run commits window by window on it)."""
        with self._opened() as (conn, timescale):
            yield SinkSession(conn, self, timescale)


class SinkSession:
    """Loads over one open connection, each in a transaction of its own."""

    def __init__(self, conn: psycopg.Connection, sink: TimescaleSink, timescale: bool) -> None:
        self.conn, self.sink, self.timescale = conn, sink, timescale

    @contextmanager
    def load(
        self, source: str, windows: Sequence[Window], run_id: str = "", *,
        replace_rejects: bool = True, allow_empty: bool = False,
    ) -> Iterator[WindowLoad]:
        """One transaction replacing `windows` of `source`; see `WindowLoad`.

        A window whose new batch has no row while it holds rows keeps them unless
        `allow_empty` (`LoadResult.kept_instead_of_empty` says how many were kept).
        """
        rollups = self.sink.rollup_list
        try:
            with self.conn.transaction():
                load = WindowLoad(self.conn, self.sink.names, source, windows, run_id,
                                  replace_rejects=replace_rejects, allow_empty=allow_empty,
                                  rollups=[] if self.timescale else rollups)
                try:
                    yield load
                    load.finish()
                finally:
                    load.close()
            if load.replace_data and self.timescale and rollups:
                self._refresh(rollups, windows)
        except psycopg.Error as exc:
            raise sink_error(exc, source, f"loading {_describe(windows)}", self.sink) from None


    def _refresh(self, rollups: Sequence[Rollup], windows: Sequence[Window]) -> None:
        """Re-materialize the continuous aggregates' buckets that `windows` touch."""
        self.conn.autocommit = True  # a refresh cannot run inside a transaction
        try:
            for rollup in rollups:
                name = self.sink.names.regclass_of(rollup.name(self.sink.names.name))
                for window in windows:
                    rollups_mod.refresh(self.conn, name, *rollup.span(window.start, window.end))
        finally:
            self.conn.autocommit = False


def sink_error(exc: psycopg.Error, source: str, what: str, sink: TimescaleSink) -> SinkError:
    """The error for a failed statement: which bound was hit, or the database's first line."""
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return SinkUnavailable(
            f"{source}: {what} waited longer than sink.lock_timeout "
            f"({format_duration(sink.lock_timeout)}) for a lock on {sink.table}; another session "
            "holds it (see pg_locks). The previous rows are intact; retry later or raise "
            "sink.lock_timeout")
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return SinkUnavailable(
            f"{source}: {what} ran longer than sink.statement_timeout "
            f"({format_duration(sink.statement_timeout)}); the transaction was rolled back and "
            "the previous rows are intact. Raise sink.statement_timeout, or use a shorter "
            "partition cadence")
    error = SinkUnavailable if _is_transient(exc) else SinkError
    return error(
        f"{source}: {what} failed ({first_line(exc)}); "
        "the transaction was rolled back and the previous rows are intact"
    )

@dataclass(frozen=True)
class TableNames:
    """Quoted identifiers for the readings table, its rejects table and their indexes."""

    schema: str | None
    name: str

    @classmethod
    def parse(cls, qualified: str) -> TableNames:
        schema, _, name = qualified.rpartition(".")
        return cls(schema or None, name)

    def ident(self, name: str) -> sql.Composable:
        return sql.Identifier(self.schema, name) if self.schema else sql.Identifier(name)

    @property
    def table(self) -> sql.Composable:
        return self.ident(self.name)

    @property
    def rejects(self) -> sql.Composable:
        return self.ident(self.rejects_name)

    @property
    def rejects_name(self) -> str:
        return f"{self.name}_rejects"

    @property
    def regclass(self) -> str:
        return self.regclass_of(self.name)

    def regclass_of(self, name: str) -> str:
        """A relation of this table's schema, as text for `::regclass` / `to_regclass`."""
        return f"{self.schema}.{name}" if self.schema else name


class WindowLoad:
    """Stream valid rows and rejects of one load into the open transaction.

    The window's old rows are deleted under a savepoint; then the rows are buffered into
    runs of up to `_RUN_ROWS`, each sorted by (sensor_tag, ts) with repeated keys dropped
    (first copy wins; see `runs`), and binary-COPYed straight into the readings table.
    Sorted rows fill the primary-key index leaf by leaf, and COPY beats an unindexed
    staging table plus `INSERT ... SELECT`, most of all as one sorted run (README,
    Performance, "How the load keeps up with COPY"). A run's COPY goes on a worker thread
    while the caller reads and validates the next run's rows, so a window bigger than one
    run uses both cores; the last run (a small window's only one) is COPYed on the caller's
    thread, which would only wait for the worker. Windows sorted and encoded ahead
    (`stage_prepared`, one run each) go in together, as one COPY.

    A run whose time and key ranges both overlap an earlier run's may repeat one of its
    keys: it is COPYed under its own savepoint, and if it does repeat one, it and later such
    runs go through a staging table and `INSERT ... ON CONFLICT DO NOTHING` (the earlier
    copy wins). Rejects are spooled client-side and written last, so that
    `keep_previous_rows` can roll the replacement back to the savepoint and keep them.
    """

    def __init__(
        self,
        conn: psycopg.Connection,
        names: TableNames,
        source: str,
        windows: Sequence[Window],
        run_id: str,
        replace_rejects: bool = True,
        allow_empty: bool = False,
        rollups: Sequence[Rollup] = (),
    ) -> None:
        self.conn, self.names, self.source, self.windows, self.run_id = (
            conn, names, source, list(windows), run_id)
        self.rollups = rollups  # kept by this load: the plain-PostgreSQL rollup tables
        self.result = LoadResult()
        self.replace_data = True
        self.allow_empty = allow_empty
        self._direct = _COPY_DIRECT.format(names.table)
        self._spans: list[Span] = []  # the runs so far, to tell which may repeat a key
        self._savepoints = 0
        self._repeats = False  # a run repeated an earlier one's key: overlaps go to staging
        self._staged = 0  # rows in the staging table
        self._buffer = RunBuffer()  # validated rows not yet sorted and sent
        self._rejects = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)  # noqa: SIM115
        # One run's COPY goes on this thread while the caller reads and validates the next:
        # the server's index work and the client's Python work overlap (two cores, not one).
        # Started by a window's first full run only: most windows are one run.
        self._worker: ThreadPoolExecutor | None = None
        self._pending: Future[int] | None = None
        self._prepared: list[PreparedRun] = []  # windows sorted and encoded ahead
        self._streamed = False  # rows came through `stage`
        started = time.perf_counter()
        # Pipelined: the statements before the rows go to the server in one round trip (a
        # small window's transaction is mostly round trips); an error still raises here.
        with conn.pipeline():
            if replace_rejects:
                conn.execute(
                    sql.SQL("DELETE FROM {} WHERE source = %s AND partition_key = ANY(%s)")
                    .format(names.rejects),
                    (source, [w.key for w in self.windows]),
                )
            # A rerun into a compressed chunk decompresses the window's rows; TimescaleDB caps
            # that at 100k rows per transaction by default, which a day's chunk easily passes.
            # (A dotted custom setting is accepted, and ignored, by plain PostgreSQL.)
            conn.execute("SET LOCAL timescaledb.max_tuples_decompressed_per_dml_transaction = 0")
            conn.execute("SAVEPOINT pp_replace")
            deletes = [conn.execute(
                sql.SQL("DELETE FROM {} WHERE source = %s AND ts >= %s AND ts < %s").format(
                    names.table),
                (source, window.start, window.end),
            ) for window in self.windows]
        # Rows each window held before: a load of several windows reports them one by one.
        self.previous_by_window = [max(deleted.rowcount, 0) for deleted in deletes]
        self.result.previous = sum(self.previous_by_window)
        self.result.delete_seconds = time.perf_counter() - started

    def stage(self, valid: pd.DataFrame) -> None:
        """Load validated rows (`sensor_tag`, `ts`, `sensor_value`) into the window.

        Rows are buffered up to `_RUN_ROWS` and sorted together before their COPY (see
        `runs`): a window of up to that many rows goes in as one run in key order.
        """
        if valid.empty:
            return
        if self._prepared:  # `finish` sends the prepared runs alone
            raise self._mixed()
        self._streamed = True
        self.result.staged += len(valid)
        self._buffer.add(valid)
        if self._buffer.rows >= _RUN_ROWS:
            self._flush(last=False)

    def stage_prepared(self, prepared: PreparedRun) -> None:
        """Load a window's whole batch, sorted and encoded ahead (`runs.prepare`).

        A load of several windows takes one per window, and `finish` sends them all in one
        COPY; prepared runs must be all the load stages, and no two may share a key.
        """
        if self._streamed:
            raise self._mixed()
        if prepared.source != self.source:  # its rows carry their source: never load them
            raise ValueError(f"{self.source}: rows prepared for source {prepared.source}")
        span = prepared.run.span
        if any(span.meets(earlier.run.span) for earlier in self._prepared):
            raise ValueError(f"{self.source}: two prepared runs of one load share keys")
        self.result.staged += prepared.staged
        self._prepared.append(prepared)

    def _mixed(self) -> ValueError:
        return ValueError(f"{self.source}: prepared runs must be a load's only rows")

    def _flush(self, last: bool) -> None:
        """Load the buffered rows as one sorted run (on the worker unless it is the `last`)."""
        run = self._buffer.take()
        if run is not None:
            self._send(run, last)

    def _send(self, run: Run, last: bool) -> None:
        """COPY `run` (on the worker unless it is the `last`)."""
        span = run.span
        overlaps = any(span.meets(earlier) for earlier in self._spans)
        self._spans.append(span)
        self._settle()
        if not overlaps:  # no key of this run can be in an earlier one
            if last:
                self.result.loaded += self._copy(self._direct, run.encoded(self.source))
                return
            if self._worker is None:
                self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pp-copy")
            self._pending = self._worker.submit(self._copy, self._direct,
                                                run.encoded(self.source))
            return
        if not self._repeats and self._savepoints < _SAVEPOINT_BUDGET:
            self._savepoints += 1
            try:
                with self.conn.transaction():
                    self.result.loaded += self._copy(self._direct, run.encoded(self.source))
                return
            except psycopg.errors.UniqueViolation:
                self._repeats = True
                log.info("%s: a run repeats readings; keeping the first copy of each",
                         self.source)
        if not self._staged:
            self.conn.execute(
                "CREATE TEMP TABLE pp_stage (sensor_tag text, ts timestamptz, sensor_value float8)"
                " ON COMMIT DROP"
            )
        self._staged += self._copy(_COPY_STAGE, run.encoded())

    def quarantine(self, rejects: pd.DataFrame, window: Window) -> None:
        """Keep rejected rows, with their raw record and reason, for `<table>_rejects`."""
        if rejects.empty:
            return
        n = len(rejects)
        table = pa.table(
            {
                "source": pa.array([self.source] * n, type=pa.string()),
                "partition_key": pa.array([window.key] * n, type=pa.string()),
                "window_start": pa.array([window.start.isoformat()] * n, type=pa.string()),
                "window_end": pa.array([window.end.isoformat()] * n, type=pa.string()),
                "raw_row": pa.array(rejects["raw_row"].to_numpy(), type=pa.string()),
                "reason": pa.array(rejects["reason"].to_numpy(), type=pa.string()),
                "run_id": pa.array([self.run_id] * n, type=pa.string()),
            }
        )
        pacsv.write_csv(table, self._rejects, write_options=_CSV_OPTIONS)
        self.result.rejected += n

    def keep_previous_rows(self) -> None:
        """Record the rejects but leave the window's rows as they were (ratio exceeded)."""
        self.replace_data = False

    def finish(self) -> None:
        """Settle the window's rows (or restore them), then write the rejects.

        A batch without a single valid row never replaces rows the windows held, unless
        `allow_empty`: a source that keeps less history than a backfill reaches back would
        otherwise delete good data (the caller reports `kept_instead_of_empty`).
        """
        if self.replace_data and not self.result.staged and self.result.previous and (
                not self.allow_empty):
            self.replace_data = False
            self.result.kept_instead_of_empty = self.result.previous
        if self.replace_data and self._prepared:
            self.result.loaded += self._copy(self._direct, itertools.chain.from_iterable(
                prepared.payload for prepared in self._prepared))
        elif self.replace_data:
            self._flush(last=True)
        else:  # the window keeps its previous rows: the buffered ones are never sent
            self._buffer.clear()
        self._settle()
        if not self.replace_data:
            self.conn.execute("ROLLBACK TO SAVEPOINT pp_replace")
            self.result.loaded = 0
        elif self._staged:
            cur = self.conn.execute(
                sql.SQL(
                    "INSERT INTO {} (source, sensor_tag, ts, sensor_value) "
                    "SELECT %s, sensor_tag, ts, sensor_value FROM pp_stage "
                    "ON CONFLICT (source, sensor_tag, ts) DO NOTHING"
                ).format(self.names.table),
                (self.source,),
            )
            self.result.loaded += cur.rowcount
        self.result.replaced = self.replace_data
        if self.replace_data:
            for rollup in self.rollups:
                target = self.names.ident(rollup.name(self.names.name))
                for window in self.windows:
                    rollups_mod.recompute(self.conn, self.names.table, target, rollup.width,
                                          self.source, *rollup.span(window.start, window.end))
        if self.result.rejected:
            self._rejects.seek(0)
            statement = sql.SQL(
                "COPY {} (source, partition_key, window_start, window_end, raw_row, reason, "
                "run_id) FROM STDIN (FORMAT csv)"
            ).format(self.names.rejects)
            with self.conn.cursor().copy(statement) as copy:
                while chunk := self._rejects.read(_SPOOL_BYTES):
                    copy.write(chunk)

    def close(self) -> None:
        """Release the spool and the worker; a COPY still in flight is waited for first."""
        if self._pending is not None:
            self._pending.exception()  # its error, if any, is already on its way: the load failed
        if self._worker is not None:
            self._worker.shutdown()
        self._rejects.close()

    def _settle(self) -> None:
        """Wait for the COPY in flight (raising its error, if any) and count its rows."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self.result.loaded += pending.result()

    def _copy(self, statement: str | sql.Composed, rows: Iterable[pa.Buffer]) -> int:
        with self.conn.cursor() as cursor:
            with cursor.copy(statement) as copy:
                write_binary(copy, rows)
            return cursor.rowcount


_COPY_DIRECT = sql.SQL(
    "COPY {} (source, sensor_tag, ts, sensor_value) FROM STDIN (FORMAT binary)")
_COPY_STAGE = "COPY pp_stage FROM STDIN (FORMAT binary)"


def create_schema(conn: psycopg.Connection, sink: TimescaleSink) -> bool:
    """Create the tables (and hypertable/policies where TimescaleDB exists) idempotently.

    An advisory lock serialises concurrent first runs. Returns True if TimescaleDB is used.
    """
    names = sink.names
    ready = _schema_in_place(conn, sink)
    if ready is not None:
        return ready
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"pull_pipeline:{sink.table}",))
        if names.schema:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(names.schema)))
        timescale = _enable_timescale(conn)
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " source text NOT NULL, sensor_tag text NOT NULL, ts timestamptz NOT NULL,"
                " sensor_value double precision NOT NULL,"
                " ingested_at timestamptz NOT NULL DEFAULT now(),"
                " PRIMARY KEY (source, sensor_tag, ts))"
            ).format(names.table)
        )
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} ("
                " id bigserial PRIMARY KEY, source text NOT NULL, partition_key text NOT NULL,"
                " window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,"
                " raw_row text, reason text NOT NULL, run_id text,"
                " rejected_at timestamptz NOT NULL DEFAULT now())"
            ).format(names.rejects)
        )
        # raw_row was jsonb before; jsonb cannot hold a NUL (\u0000), and a reject must be
        # kept exactly as received, so it is the record's JSON text now.
        conn.execute(sql.SQL(
            "DO $$ BEGIN IF (SELECT atttypid = 'jsonb'::regtype FROM pg_attribute WHERE "
            "attrelid = {}::regclass AND attname = 'raw_row') THEN ALTER TABLE {} ALTER COLUMN "
            "raw_row TYPE text; END IF; END $$").format(
                sql.Literal(names.regclass_of(names.rejects_name)), names.rejects))
        conn.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (source, partition_key)").format(
                sql.Identifier(f"{names.name}_rejects_window_idx"), names.rejects)
        )
        if timescale:
            _hypertable(conn, sink)
        else:
            # Without chunks, a window's delete (and the gap check, the archive export) would
            # scan every row of the source: the primary key leads with source and sensor_tag.
            # A B-tree on (source, ts) reads just the window's rows however often history is
            # re-pulled. (A BRIN index on ts, used before, decays: re-pulled rows fill holes
            # all over the heap, so each block range's min/max widens; figures in the README,
            # Sink.) New windows append at the index's right edge, so it costs the load little.
            conn.execute(sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (source, ts)").format(
                sql.Identifier(f"{names.name}_source_ts_idx"), names.table))
            conn.execute(sql.SQL("DROP INDEX IF EXISTS {}").format(
                names.ident(f"{names.name}_ts_brin")))
        new_aggregates = _create_rollups(conn, sink, timescale)
    if new_aggregates:  # a new continuous aggregate starts empty: fill it from the history
        conn.autocommit = True
        try:
            for name in new_aggregates:
                conn.execute("CALL refresh_continuous_aggregate(%s::regclass, NULL, NULL)",
                             (name,))
        finally:
            conn.autocommit = False
    return timescale


def _create_rollups(conn: psycopg.Connection, sink: TimescaleSink, timescale: bool) -> list[str]:
    """Create the configured rollups; return the continuous aggregates made just now.

    A rollup table left from plain PostgreSQL (before the table became a hypertable) holds
    only derived data: it is dropped and comes back as a continuous aggregate.
    """
    names, created = sink.names, []
    for rollup in sink.rollup_list:
        name = names.regclass_of(rollup.name(names.name))
        kind = conn.execute("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)",
                            (name,)).fetchone()
        target = names.ident(rollup.name(names.name))
        if timescale and kind and kind[0] == "r":
            conn.execute(sql.SQL("DROP TABLE {}").format(target))
            kind = None
        rollups_mod.create(conn, names.table, target, rollup.width, timescale)
        if timescale and not kind:
            created.append(name)
    return created


def _schema_in_place(conn: psycopg.Connection, sink: TimescaleSink) -> bool | None:
    """Whether TimescaleDB is used, when the schema is complete already; else None.

    Read from the catalogs only, so a process starting next to in-flight loads does not
    queue behind them: `CREATE INDEX IF NOT EXISTS` takes its table lock before it looks.
    Hypertable settings and policies are (re)applied only when the schema is incomplete.
    """
    names = sink.names
    row = conn.execute(
        "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL"
        " AND to_regclass(%s) IS NOT NULL,"
        " (SELECT atttypid = 'text'::regtype FROM pg_attribute"
        "   WHERE attrelid = to_regclass(%s) AND attname = 'raw_row'),"
        " EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " to_regclass(%s) IS NOT NULL,"
        " (SELECT bool_and(to_regclass(r) IS NOT NULL) FROM unnest(%s::text[]) AS r)",
        (names.regclass, names.regclass_of(names.rejects_name),
         names.regclass_of(f"{names.name}_rejects_window_idx"),
         names.regclass_of(names.rejects_name), names.regclass_of(f"{names.name}_source_ts_idx"),
         [names.regclass_of(r.name(names.name)) for r in sink.rollup_list]),
    ).fetchone()
    conn.rollback()  # end the catalog read's transaction before the next one
    if not row or not row[0] or not row[1] or row[4] is False:
        return None
    if row[2]:
        settled = conn.execute(
            "SELECT d.time_interval = %s::interval,"
            " (%s::interval IS NULL) = NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs j"
            "   WHERE j.hypertable_schema = d.hypertable_schema"
            "   AND j.hypertable_name = d.hypertable_name AND j.proc_name = 'policy_compression'),"
            " (%s::interval IS NULL) = NOT EXISTS (SELECT 1 FROM timescaledb_information.jobs j"
            "   WHERE j.hypertable_schema = d.hypertable_schema"
            "   AND j.hypertable_name = d.hypertable_name AND j.proc_name = 'policy_retention')"
            " FROM timescaledb_information.dimensions d"
            " WHERE d.hypertable_schema = coalesce(%s, current_schema())"
            " AND d.hypertable_name = %s AND d.column_name = 'ts'",
            (_interval(sink.chunk_interval), _interval(sink.compress_after),
             _interval(sink.retention), names.schema, names.name)).fetchone()
        conn.rollback()
        # Anything else, a plain table included, goes through the DDL: it converts a table
        # that started on plain PostgreSQL once TimescaleDB is there (no silent dual mode).
        return True if settled and all(settled) else None
    return False if row[3] else None


def _enable_timescale(conn: psycopg.Connection) -> bool:
    """Use TimescaleDB when this database has it or can create it; else a plain table."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return True
    available = conn.execute(
        "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
    ).fetchone()
    if not available:
        return False
    preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if not preload or "timescaledb" not in preload[0]:
        # CREATE EXTENSION would end the session with FATAL: it must be preloaded.
        log.warning("TimescaleDB is installed but not in shared_preload_libraries; not using it")
        return False
    try:
        with conn.transaction():  # a savepoint: a failure here must not abort the DDL
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as exc:
        log.warning("TimescaleDB is installed but cannot be enabled (%s)",
                    redact(first_line(exc)))
        return False
    return True


def _hypertable(conn: psycopg.Connection, sink: TimescaleSink) -> None:
    names = sink.names
    regclass = names.regclass
    conn.execute(
        "SELECT create_hypertable(%s::regclass, 'ts', chunk_time_interval => %s::interval,"
        " if_not_exists => TRUE, migrate_data => TRUE)",
        (regclass, _interval(sink.chunk_interval)),
    )
    conn.execute("SELECT set_chunk_time_interval(%s::regclass, %s::interval)",
                 (regclass, _interval(sink.chunk_interval)))
    if sink.compress_after:
        enabled = conn.execute(
            "SELECT compression_enabled FROM timescaledb_information.hypertables"
            " WHERE hypertable_schema = coalesce(%s, current_schema()) AND hypertable_name = %s",
            (names.schema, names.name),
        ).fetchone()
        if not (enabled and enabled[0]):
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} SET (timescaledb.compress,"
                    " timescaledb.compress_segmentby = 'source, sensor_tag',"
                    " timescaledb.compress_orderby = 'ts')"
                ).format(names.table)
            )
        conn.execute(
            "SELECT add_compression_policy(%s::regclass, %s::interval, if_not_exists => TRUE)",
            (regclass, _interval(sink.compress_after)),
        )
    if sink.retention:
        conn.execute(
            "SELECT add_retention_policy(%s::regclass, %s::interval, if_not_exists => TRUE)",
            (regclass, _interval(sink.retention)),
        )


def _millis(value: timedelta) -> int:
    return int(value / timedelta(milliseconds=1))


def _interval(value: timedelta | None) -> str | None:
    """A PostgreSQL interval literal in whole seconds, as policies and chunks have always had."""
    return format_duration(value) if value else None


def _is_transient(exc: psycopg.Error) -> bool:
    """Lost connections, deadlocks and serialization failures succeed when retried later."""
    return isinstance(exc, (psycopg.OperationalError, psycopg.errors.DeadlockDetected,
                            psycopg.errors.SerializationFailure))


def _describe(windows: Sequence[Window]) -> str:
    if not windows:
        return "no window"
    if len(windows) == 1:
        return f"window {windows[0].key}"
    return f"windows {windows[0].key}...{windows[-1].key}"
