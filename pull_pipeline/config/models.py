"""The shape of sources.yaml, as pydantic models.

Every model forbids unknown keys, so a typo fails loudly with the key's name instead of
being ignored. Strings may hold `${NAME}` placeholders: they stay unresolved here and are
filled from the environment only when a source runs (see `pull_pipeline.config.env`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from pull_pipeline.config.registry import Registry
from pull_pipeline.durations import parse_duration
from pull_pipeline.errors import ConfigError
from pull_pipeline.scheduling import CADENCE_CRONS, cadence_cron, shift_cron

if TYPE_CHECKING:
    from pull_pipeline.connectors.base import Connector
    from pull_pipeline.connectors.rest import auth, pagination

    # The old names of the built-in REST classes, as `__getattr__` serves them at run time.
    ApiKeyAuth = auth.ApiKey
    BearerAuth = auth.Bearer
    BasicAuth = auth.Basic
    PageNumberPagination = pagination.PageNumber
    OffsetPagination = pagination.Offset
    CursorPagination = pagination.Cursor
    NextLinkPagination = pagination.NextLink
    NoPagination = pagination.Single

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]


def _not_a_boolean(value: Any) -> Any:
    """YAML's true and false are not 1 and 0: a count or a ratio given as one is an error."""
    if isinstance(value, bool):
        raise ValueError("expected a number, not true or false")  # noqa: TRY004 - pydantic reports ValueError
    return value


Count = Annotated[int, BeforeValidator(_not_a_boolean)]
Number = Annotated[float, BeforeValidator(_not_a_boolean)]
SOURCE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Dagster allows 63 characters in a tag value, and every asset and run of a source carries
# its name in the `pull_pipeline/source` tag. (Job, schedule, sensor and pool names made from
# it, such as `pull_<source>_schedule` or `pull_pipeline_<source>`, have no length limit.)
MAX_SOURCE_NAME = 63
# PostgreSQL keeps 63 bytes of an identifier (NAMEDATALEN - 1) and silently cuts the rest, so
# every name the sink derives from the table's must fit: `<table>_rejects`, `_rejects_pkey`,
# `_rejects_id_seq`, `_rejects_window_idx`, `_pkey`, `_source_ts_idx`, `_ts_idx` (TimescaleDB) and
# `<table>_rollup_<label>` with its `_pkey`, the longest (`_rollup_10079min_pkey`, 21).
# Suffixes get 23 characters: a new derived name must fit in them, since lowering
# MAX_TABLE_NAME would reject tables that exist.
MAX_IDENTIFIER = 63
TABLE_SUFFIX_ROOM = 23
MAX_TABLE_NAME = MAX_IDENTIFIER - TABLE_SUFFIX_ROOM


class Strict(BaseModel):
    """Base for every config block: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


# --- shared blocks -------------------------------------------------------------------------


class S3Config(Strict):
    """Connection settings for S3 or an S3-compatible store (MinIO, moto, ...)."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    profile_name: str | None = None
    use_ssl: bool = True
    verify: bool | str | None = None


class FieldMap(Strict):
    """Which field of a source record holds each canonical column."""

    sensor_tag: str = "sensor_tag"
    relative_time: str = "relative_time"
    sensor_value: str = "sensor_value"


# The cadence names; their crons are in `scheduling`, their partition keys in `defs/partitions.py`.
CADENCES = tuple(CADENCE_CRONS)


class PartitionsConfig(Strict):
    """One partition per window: its cadence, first window, time zone and schedule lag."""

    cadence: str = "hourly"
    start: str
    end: str | None = None
    timezone: str = "UTC"
    lag: Duration = timedelta(0)
    # The most windows one run of a backfill launched from the UI takes; None: the whole
    # range in one run (what `dagster asset materialize --partition-range` needs).
    windows_per_run: Count | None = Field(default=None, ge=1)
    # Small windows of one run (one page each) load this many to a transaction, in one COPY:
    # a transaction's round trips are most of a small window's load. 1: one each.
    windows_per_transaction: Count = Field(default=24, ge=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML turns an unquoted 2024-01-01 into a date; keep the text, parse it later.
        return None if value is None else str(value)

    @field_validator("start", "end")
    @classmethod
    def _instant(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                datetime.fromisoformat(value.replace("Z", "+00:00"))  # noqa: FURB162 - as parse_instant
            except ValueError:
                raise ValueError("expected a date such as 2024-01-01 or an instant such as "
                                 "2024-01-01T00:00:00Z") from None
        return value

    @field_validator("cadence")
    @classmethod
    def _cadence(cls, value: str) -> str:
        if value not in CADENCES and len(value.split()) != 5:
            raise ValueError(f"must be one of {', '.join(CADENCES)} or a 5-field cron string "
                             "such as '0 */6 * * *'")
        return value

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ValueError, ZoneInfoNotFoundError):
            raise ValueError("not a time zone name such as UTC or Europe/Berlin") from None
        return value

    @field_validator("lag")
    @classmethod
    def _shiftable(cls, value: timedelta, info: ValidationInfo) -> timedelta:
        # The schedule ticks `lag` after each window; checked here so the error names the file.
        cadence = info.data.get("cadence")  # absent when the cadence itself is invalid
        if cadence is not None:
            try:
                shift_cron(cadence_cron(cadence), value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value


class FreshnessConfig(Strict):
    """The newest window must land within this time after it closes."""

    warn_after: Duration | None = None
    fail_after: Duration

    @model_validator(mode="after")
    def _ordered(self) -> FreshnessConfig:
        if self.warn_after is not None and self.warn_after > self.fail_after:
            raise ValueError("warn_after must not be longer than fail_after")
        return self


class RecoveryConfig(Strict):
    """Automatic catch-up after an outage: how far back to look, how much per tick."""

    enabled: bool = True
    horizon: Duration = timedelta(days=7)
    # Recovery requests ranges: one run per unbroken stretch, cut at `max_windows_per_run`.
    max_windows_per_run: Count = Field(default=48, ge=1)
    max_runs_in_flight: Count = Field(default=1, ge=1)  # queued or running, per source
    max_windows_per_tick: Count = Field(default=96, ge=1)  # windows in flight, per source


class RetryConfig(Strict):
    """In-step retries for transient failures (connection errors, 429, 5xx)."""

    attempts: Count = Field(default=5, ge=1, le=50)
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(seconds=60)
    # REST: the longest Retry-After honoured; a server asking for more fails the window at once.
    max_retry_after: Duration = timedelta(minutes=5)


class SourceBase(Strict):
    """Keys every source kind shares: mapping, time, partitions and operations.

    A kind is a subclass declaring `kind: Literal["<name>"]` and its own keys, registered
    with `@SOURCE_KINDS.register`; `connector` says what fetches its windows.
    """

    kind: str
    description: str | None = None
    fields: FieldMap = FieldMap()
    time_unit: Literal["s", "ms", "us", "ns", "iso8601"] = "s"
    reference_epoch: str = "1970-01-01T00:00:00Z"
    partitions: PartitionsConfig
    max_reject_ratio: Number = Field(default=0.05, ge=0.0, le=1.0)
    paused: bool = False
    lookback: Count = Field(default=0, ge=0)
    expected_interval: Duration | None = None
    gaps_blocking: bool = False
    freshness: FreshnessConfig | None = None
    recovery: RecoveryConfig = RecoveryConfig()
    concurrency: Count = Field(default=1, ge=1)
    slot_timeout: Duration = timedelta(hours=1)  # longest wait for a free concurrency slot
    retries: RetryConfig = RetryConfig()
    allow_empty_replace: bool = False  # may a window with 0 rows replace one that has rows?

    @field_validator("reference_epoch", mode="before")
    @classmethod
    def _epoch_text(cls, value: Any) -> Any:
        text = str(value)  # YAML reads an unquoted date or timestamp as one
        try:
            datetime.fromisoformat(text.replace("Z", "+00:00"))  # noqa: FURB162 - as parse_instant
        except ValueError:
            raise ValueError(
                f"{text!r} is not an ISO-8601 instant or date; write it like "
                "2000-01-01T00:00:00Z (a value without zone is UTC)") from None
        return text

    def connector(self, name: str) -> Connector:
        """The connector for source `name`; its `${NAME}` placeholders are resolved already."""
        raise NotImplementedError(f"source kind {self.kind!r} defines no connector()")


SOURCE_KINDS: Registry[SourceBase] = Registry("kind", SourceBase)


# --- REST ------------------------------------------------------------------------------------


class AuthConfig(Strict):
    """An `auth:` block. Its types live in `connectors/rest/auth.py`, one class each."""

    type: str


class PaginationConfig(Strict):
    """A `pagination:` block. Its types live in `connectors/rest/pagination.py`, one class each."""

    type: str


_REST = "pull_pipeline.connectors.rest"
AUTH_TYPES: Registry[AuthConfig] = Registry("type", AuthConfig, {
    "api_key": f"{_REST}.auth:ApiKey",
    "bearer": f"{_REST}.auth:Bearer",
    "basic": f"{_REST}.auth:Basic",
})
PAGINATORS: Registry[PaginationConfig] = Registry("type", PaginationConfig, {
    "page_number": f"{_REST}.pagination:PageNumber",
    "offset": f"{_REST}.pagination:Offset",
    "cursor": f"{_REST}.pagination:Cursor",
    "next_link": f"{_REST}.pagination:NextLink",
    "none": f"{_REST}.pagination:Single",
})


# The built-in auth and pagination classes under the names they had when they lived here.
_MOVED = {"ApiKeyAuth": (AUTH_TYPES, "api_key"), "BearerAuth": (AUTH_TYPES, "bearer"),
          "BasicAuth": (AUTH_TYPES, "basic"), "PageNumberPagination": (PAGINATORS, "page_number"),
          "OffsetPagination": (PAGINATORS, "offset"), "CursorPagination": (PAGINATORS, "cursor"),
          "NextLinkPagination": (PAGINATORS, "next_link"), "NoPagination": (PAGINATORS, "none")}

if not TYPE_CHECKING:  # mypy sees the imports above, so a misspelt name stays an error

    def __getattr__(name: str) -> type[BaseModel]:
        """`from pull_pipeline.config.models import BasicAuth` still works (imported when used)."""
        registry, tag = _MOVED.get(name, (None, ""))
        found = registry.get(tag) if registry is not None else None
        if found is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        return found


class TlsConfig(Strict):
    verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class WindowParams(Strict):
    start: str = "start"
    end: str = "end"


@SOURCE_KINDS.register
class RestSource(SourceBase):
    kind: Literal["rest"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = {}
    params: dict[str, str | int | float | bool] = {}
    auth: Annotated[AuthConfig, AUTH_TYPES] | None = None
    window_params: WindowParams = WindowParams()
    window_format: Literal["epoch_s", "epoch_ms", "iso8601"] = "epoch_s"
    pagination: Annotated[PaginationConfig, PAGINATORS] = Field(
        default_factory=lambda: {"type": "none"}, validate_default=True)
    records_path: str | None = None  # None: a top-level list, or an object's only list field
    max_requests_per_second: Number | None = Field(default=None, gt=0)
    max_pages: Count = Field(default=100_000, ge=1)
    timeout: Duration = timedelta(seconds=30)  # the longest wait for a connection or any read
    request_deadline: Duration = timedelta(minutes=2)  # one request: connect, headers, body
    window_deadline: Duration = timedelta(minutes=30)  # one window: all its pages and retries
    max_response_bytes: Count = Field(default=256 * 1024 * 1024, ge=1)  # after decompression
    proxy: str | None = None
    tls: TlsConfig = TlsConfig()

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        # Checked again once `${NAME}` is filled in; here, so the error names the file.
        if "${" not in value and urlsplit(value).scheme.lower() not in ("http", "https"):
            raise ValueError("url must start with http:// or https://")
        return value

    @field_validator("timeout", "request_deadline", "window_deadline")
    @classmethod
    def _positive(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0 s")
        return value

    def connector(self, name: str) -> Connector:
        from pull_pipeline.connectors.rest import RestConnector  # its libraries load when used

        return RestConnector(name, self)


# --- SQL -------------------------------------------------------------------------------------

SINGLE_SELECT = "the query must be a single SELECT that only reads"
# What can hide a `;`: comments, quoted text, PostgreSQL E'' strings and $tag$ bodies; MySQL
# also has # comments and backslash escapes. Words are matched whole, so `a$b$` is no $ quote.
_SQL_BLANK = r"\s+|--[^\n]*|/\*.*?\*/"
_SQL_REST = r"\w[\w$]*|(?P<end>;)|."
_SQL_LEXEMES = {
    False: re.compile(
        rf"(?P<blank>{_SQL_BLANK})|[Ee]'(?:''|\\.|[^'\\])*'"
        r"|\$(?P<tag>(?:[A-Za-z_]\w*)?)\$.*?\$(?P=tag)\$"
        rf"""|'(?:''|[^'])*'|"(?:""|[^"])*"|`[^`]*`|{_SQL_REST}""",
        re.DOTALL,
    ),
    True: re.compile(
        rf"(?P<blank>{_SQL_BLANK}|#[^\n]*)"
        rf"""|'(?:''|\\.|[^'\\])*'|"(?:""|\\.|[^"\\])*"|`[^`]*`|{_SQL_REST}""",
        re.DOTALL,
    ),
}


def single_sql_statement(query: str, mysql: bool) -> str:
    """The one statement of `query`, without a trailing `;`; ValueError if it holds more.

    An early, readable check only: the SQL connector also has the database (or a driver that
    sends one statement per call) refuse a second statement, whatever the text.
    """
    statements: list[str] = []
    start, content = 0, False
    for match in _SQL_LEXEMES[mysql].finditer(query):
        if match["end"]:
            if content:
                statements.append(query[start:match.start()].strip())
            start, content = match.end(), False
        elif not match["blank"]:
            content = True
    if content:
        statements.append(query[start:].strip())
    if len(statements) > 1:
        raise ValueError(
            f"{SINGLE_SELECT}: found {len(statements)} statements separated by ';' (the "
            f"second begins {statements[1][:40]!r}); remove the ';' and what follows it"
        )
    return statements[0] if statements else ""


@SOURCE_KINDS.register
class SqlSource(SourceBase):
    kind: Literal["sql"]
    url: str
    username: str | None = None
    password: str | None = None
    query: str
    chunk_size: Count = Field(default=50_000, ge=1)
    connect_args: dict[str, Any] = {}
    # Every wait on the source is bounded, so a locked table cannot hang a run forever.
    statement_timeout: Duration = timedelta(minutes=10)
    lock_timeout: Duration = timedelta(seconds=30)

    @field_validator("query")
    @classmethod
    def _binds_window(cls, value: str) -> str:
        missing = [p for p in (":start", ":end") if p not in value]
        if missing:
            raise ValueError(
                f"the query must bind the window with :start and :end (missing {', '.join(missing)})"
            )
        return value

    @field_validator("query")
    @classmethod
    def _one_statement(cls, value: str, info: ValidationInfo) -> str:
        url = str(info.data.get("url", ""))
        single_sql_statement(value, mysql=url.startswith(("mysql", "mariadb")))
        return value

    @field_validator("statement_timeout", "lock_timeout")
    @classmethod
    def _bounded(cls, value: timedelta) -> timedelta:
        if value <= timedelta(0):
            raise ValueError("must be longer than 0 (it bounds a wait on the source)")
        return value

    def connector(self, name: str) -> Connector:
        from pull_pipeline.connectors.sql import SqlConnector  # its libraries load when used

        return SqlConnector(name, self)


# --- files and python ------------------------------------------------------------------------


@SOURCE_KINDS.register
class FilesSource(SourceBase):
    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet", "json", "jsonl"] = "csv"
    pattern: str | None = None
    s3: S3Config | None = None
    csv_delimiter: str = ","
    chunk_size: Count = Field(default=100_000, ge=1)

    def connector(self, name: str) -> Connector:
        from pull_pipeline.connectors.files import FilesConnector  # its libraries load when used

        return FilesConnector(name, self)


@SOURCE_KINDS.register
class PythonSource(SourceBase):
    kind: Literal["python"]
    function: str
    options: dict[str, Any] = {}

    @field_validator("function")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", value):
            raise ValueError("function must look like 'my_package.module:fetch'")
        return value

    def connector(self, name: str) -> Connector:
        from pull_pipeline.connectors.python import PythonConnector

        return PythonConnector(name, self)


# A `sources:` entry: the registered kind its `kind:` names.
SourceConfig = Annotated[SourceBase, SOURCE_KINDS]


# --- project-wide blocks ---------------------------------------------------------------------


class SinkConfig(Strict):
    dsn: str | None = None
    table: str = "sensor_readings"
    chunk_interval: Duration = timedelta(days=1)
    compress_after: Duration | None = None
    retention: Duration | None = None
    # Every wait on the sink is bounded: a lock held by another session, a statement that
    # runs away. Both fail the window as transient, naming the bound.
    # Per-sensor aggregates per bucket for dashboards, e.g. [1 hour, 1 day] (see sink/rollups).
    rollups: list[Duration] = []
    # Run failing or overdue TimescaleDB policy jobs from the sink_health sensor (run_job).
    repair_policies: bool = True
    lock_timeout: Duration = timedelta(minutes=1)

    @field_validator("rollups")
    @classmethod
    def _rollup_widths(cls, value: list[timedelta]) -> list[timedelta]:
        for width in value:
            if width <= timedelta(0) or width > timedelta(days=7) or width % timedelta(seconds=1):
                raise ValueError(f"rollup width {width} must be whole seconds, from 1s to 7 days")
        if len(set(value)) != len(value):
            raise ValueError("rollups lists a width twice")
        return value
    statement_timeout: Duration = timedelta(minutes=15)

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError("table must be a name such as sensor_readings or metrics.sensor_readings")
        schema, _, name = value.rpartition(".")
        if len(name) > MAX_TABLE_NAME:
            raise ValueError(
                f"table name {name!r} is {len(name)} characters long; at most {MAX_TABLE_NAME} "
                "are allowed, so that the names derived from it, such as <table>_rejects_window_idx "
                f"and <table>_rollup_<width>_pkey, fit PostgreSQL's {MAX_IDENTIFIER}-character limit"
            )
        if len(schema) > MAX_IDENTIFIER:
            raise ValueError(f"schema name {schema!r} is {len(schema)} characters long; "
                             f"PostgreSQL allows at most {MAX_IDENTIFIER}")
        return value


class LandingConfig(Strict):
    path: str = ".pull_pipeline/landing"
    s3: S3Config | None = None


class WebhookConfig(Strict):
    url: str
    headers: dict[str, str] = {}


class EmailConfig(Strict):
    smtp_host: str
    smtp_port: Count = 587
    starttls: bool = True
    ssl: bool = False
    username: str | None = None
    password: str | None = None
    sender: str
    to: list[str]


class AlertsConfig(Strict):
    webui_url: str = "http://localhost:3000"
    throttle: Duration = timedelta(minutes=30)
    webhooks: list[WebhookConfig] = []
    email: EmailConfig | None = None


class ArchiveConfig(Strict):
    path: str
    s3: S3Config | None = None
    export_after: Duration = timedelta(days=90)
    drop_after_export: bool = False
    auto_export: bool = True
    windows_per_run: Count = Field(default=168, ge=1)


class PipelineConfig(Strict):
    sink: SinkConfig = SinkConfig()
    landing: LandingConfig = LandingConfig()
    sources: dict[str, SourceConfig] = {}
    alerts: AlertsConfig = AlertsConfig()
    archive: ArchiveConfig | None = None

    @field_validator("alerts", mode="before")
    @classmethod
    def _empty_alerts(cls, value: Any) -> Any:
        return {} if value is None else value  # an empty `alerts:` line means the defaults

    @field_validator("sources")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not SOURCE_NAME.fullmatch(name):
                raise ValueError(
                    f"source name {name!r} must be letters, digits and underscores "
                    "(it becomes the asset key prefix and part of job names)"
                )
            if len(name) > MAX_SOURCE_NAME:
                raise ValueError(
                    f"source {name!r}: the name is {len(name)} characters long; at most "
                    f"{MAX_SOURCE_NAME} are allowed (Dagster's limit for a tag value, and "
                    "runs carry the name in the pull_pipeline/source tag)"
                )
        return value
