"""The shape of sources.yaml, as pydantic models.

Every model forbids unknown keys, so a typo fails loudly with the key's name instead of
being ignored. Strings may hold `${NAME}` placeholders: they stay unresolved here and are
filled from the environment only when a source runs (see `pull_pipeline.config.env`).
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from pull_pipeline.durations import parse_duration

Duration = Annotated[timedelta, BeforeValidator(parse_duration)]
SOURCE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


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


class PartitionsConfig(Strict):
    """One partition per window: its cadence, first window, time zone and schedule lag."""

    cadence: str = "hourly"
    start: str
    end: str | None = None
    timezone: str = "UTC"
    lag: Duration = timedelta(0)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # YAML turns an unquoted 2024-01-01 into a date; keep the text, parse it later.
        return None if value is None else str(value)


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
    max_windows_per_tick: int = Field(default=24, ge=1)


class RetryConfig(Strict):
    """In-step retries for transient failures (connection errors, 429, 5xx)."""

    attempts: int = Field(default=5, ge=1, le=50)
    backoff: Duration = timedelta(seconds=1)
    max_backoff: Duration = timedelta(seconds=60)


class SourceBase(Strict):
    """Keys every source kind shares: mapping, time, partitions and operations."""

    description: str | None = None
    fields: FieldMap = FieldMap()
    time_unit: Literal["s", "ms", "us", "ns", "iso8601"] = "s"
    reference_epoch: str = "1970-01-01T00:00:00Z"
    partitions: PartitionsConfig
    max_reject_ratio: float = Field(default=0.05, ge=0.0, le=1.0)
    paused: bool = False
    lookback: int = Field(default=0, ge=0)
    expected_interval: Duration | None = None
    gaps_blocking: bool = False
    freshness: FreshnessConfig | None = None
    recovery: RecoveryConfig = RecoveryConfig()
    concurrency: int = Field(default=1, ge=1)
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


# --- REST ------------------------------------------------------------------------------------


class ApiKeyAuth(Strict):
    type: Literal["api_key"]
    value: str
    header: str | None = None
    query_param: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKeyAuth:
        if (self.header is None) == (self.query_param is None):
            raise ValueError("api_key auth needs exactly one of 'header' or 'query_param'")
        return self


class BearerAuth(Strict):
    type: Literal["bearer"]
    token: str


class BasicAuth(Strict):
    type: Literal["basic"]
    username: str
    password: str


AuthConfig = Annotated[ApiKeyAuth | BearerAuth | BasicAuth, Field(discriminator="type")]


class PageNumberPagination(Strict):
    type: Literal["page_number"]
    param: str = "page"
    size_param: str | None = "page_size"
    size: int = Field(default=1000, ge=1)
    first_page: int = 1


class OffsetPagination(Strict):
    type: Literal["offset"]
    param: str = "offset"
    size_param: str = "limit"
    size: int = Field(default=1000, ge=1)


class CursorPagination(Strict):
    type: Literal["cursor"]
    param: str = "cursor"
    cursor_path: str = "next_cursor"


class NextLinkPagination(Strict):
    type: Literal["next_link"]
    link_path: str | None = None  # None: follow the `Link: <...>; rel="next"` header


class NoPagination(Strict):
    type: Literal["none"]


PaginationConfig = Annotated[
    PageNumberPagination | OffsetPagination | CursorPagination | NextLinkPagination | NoPagination,
    Field(discriminator="type"),
]


class TlsConfig(Strict):
    verify: bool = True
    ca_bundle: str | None = None
    client_cert: str | None = None
    client_key: str | None = None


class WindowParams(Strict):
    start: str = "start"
    end: str = "end"


class RestSource(SourceBase):
    kind: Literal["rest"]
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = {}
    params: dict[str, str | int | float | bool] = {}
    auth: AuthConfig | None = None
    window_params: WindowParams = WindowParams()
    window_format: Literal["epoch_s", "epoch_ms", "iso8601"] = "epoch_s"
    pagination: PaginationConfig = NoPagination(type="none")
    records_path: str | None = None  # None: a top-level list, or an object's only list field
    max_requests_per_second: float | None = Field(default=None, gt=0)
    max_pages: int = Field(default=100_000, ge=1)
    timeout: Duration = timedelta(seconds=30)
    proxy: str | None = None
    tls: TlsConfig = TlsConfig()


# --- SQL -------------------------------------------------------------------------------------


class SqlSource(SourceBase):
    kind: Literal["sql"]
    url: str
    username: str | None = None
    password: str | None = None
    query: str
    chunk_size: int = Field(default=50_000, ge=1)
    connect_args: dict[str, Any] = {}

    @field_validator("query")
    @classmethod
    def _binds_window(cls, value: str) -> str:
        missing = [p for p in (":start", ":end") if p not in value]
        if missing:
            raise ValueError(
                f"the query must bind the window with :start and :end (missing {', '.join(missing)})"
            )
        return value


# --- files and python ------------------------------------------------------------------------


class FilesSource(SourceBase):
    kind: Literal["files"]
    path: str
    format: Literal["csv", "parquet", "json", "jsonl"] = "csv"
    pattern: str | None = None
    s3: S3Config | None = None
    csv_delimiter: str = ","
    chunk_size: int = Field(default=100_000, ge=1)


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


SourceConfig = Annotated[
    RestSource | SqlSource | FilesSource | PythonSource, Field(discriminator="kind")
]


# --- project-wide blocks ---------------------------------------------------------------------


class SinkConfig(Strict):
    dsn: str | None = None
    table: str = "sensor_readings"
    chunk_interval: Duration = timedelta(days=1)
    compress_after: Duration | None = None
    retention: Duration | None = None
    # Every wait on the sink is bounded: a lock held by another session, a statement that
    # runs away. Both fail the window as transient, naming the bound.
    lock_timeout: Duration = timedelta(minutes=1)
    statement_timeout: Duration = timedelta(minutes=15)

    @field_validator("table")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.match(r"^([A-Za-z_][A-Za-z0-9_]*\.)?[A-Za-z_][A-Za-z0-9_]*$", value):
            raise ValueError("table must be a name such as sensor_readings or metrics.sensor_readings")
        return value


class LandingConfig(Strict):
    path: str = ".pull_pipeline/landing"
    s3: S3Config | None = None


class WebhookConfig(Strict):
    url: str
    headers: dict[str, str] = {}


class EmailConfig(Strict):
    smtp_host: str
    smtp_port: int = 587
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
    windows_per_run: int = Field(default=168, ge=1)


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
            if not SOURCE_NAME.match(name):
                raise ValueError(
                    f"source name {name!r} must be letters, digits and underscores "
                    "(it becomes the asset key prefix and part of job names)"
                )
        return value
