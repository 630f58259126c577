"""Resources shared by every source: the sink and the landing store, from sources.yaml.

Each is a thin `ConfigurableResource` that builds a plain object (`TimescaleSink`,
`LandingStore`) which knows nothing about Dagster. Values keep their `${NAME}` placeholders
unresolved, so no secret is ever part of what Dagster stores or shows: they are resolved
when a connection or client is made. Durations are seconds here and timedeltas again in the
objects built.

They are handed to Dagster as resources without run config (`fixed`), their settings shown
as the resource's description: a resource's config schema is repeated in every job's
run-config schema and snapshot, and with three jobs a source that was a third of each job's
snapshot, paid when the code location loads and each time it is served (README,
Performance). The settings come from sources.yaml, never from a run's config.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import dagster as dg

from pull_pipeline.config.loader import Project
from pull_pipeline.config.models import S3Config, SinkConfig
from pull_pipeline.landing import LandingStore
from pull_pipeline.redaction import redact, shown_settings
from pull_pipeline.sink.timescale import TimescaleSink


class S3Settings(dg.Config):
    """An `s3:` block. `verify` is split in two: Dagster config takes no bool-or-path field."""

    endpoint_url: str | None = None
    region_name: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: str | None = None
    aws_session_token: str | None = None
    profile_name: str | None = None
    use_ssl: bool = True
    verify: bool | None = None
    ca_bundle: str | None = None

    @classmethod
    def from_config(cls, config: S3Config | None) -> S3Settings | None:
        if config is None:
            return None
        verify = config.verify
        return cls(**config.model_dump(exclude={"verify"}),
                   verify=verify if not isinstance(verify, str) else None,
                   ca_bundle=verify if isinstance(verify, str) else None)

    def to_config(self) -> S3Config:
        return S3Config(**self.model_dump(exclude={"verify", "ca_bundle"}),
                        verify=self.ca_bundle or self.verify)


class SinkResource(dg.ConfigurableResource[TimescaleSink]):
    """The sink's settings; assets and sensors get the `TimescaleSink` it builds.

    Ask for it as `sink: dg.ResourceParam[TimescaleSink]`.
    """

    dsn: str | None
    table: str
    chunk_interval_seconds: float
    compress_after_seconds: float | None
    retention_seconds: float | None
    rollup_seconds: list[float]
    lock_timeout_seconds: float
    statement_timeout_seconds: float
    state_dir: str

    @classmethod
    def from_config(cls, config: SinkConfig, state_dir: Path) -> SinkResource:
        return cls(
            dsn=config.dsn, table=config.table,
            chunk_interval_seconds=config.chunk_interval.total_seconds(),
            compress_after_seconds=_seconds(config.compress_after),
            retention_seconds=_seconds(config.retention),
            rollup_seconds=[width.total_seconds() for width in config.rollups],
            lock_timeout_seconds=config.lock_timeout.total_seconds(),
            statement_timeout_seconds=config.statement_timeout.total_seconds(),
            state_dir=str(state_dir),
        )

    def create_resource(self, context: dg.InitResourceContext) -> TimescaleSink:
        return self.sink()

    def sink(self) -> TimescaleSink:
        return TimescaleSink(
            dsn=self.dsn, table=self.table,
            chunk_interval=timedelta(seconds=self.chunk_interval_seconds),
            compress_after=_duration(self.compress_after_seconds),
            retention=_duration(self.retention_seconds),
            rollups=[timedelta(seconds=width) for width in self.rollup_seconds],
            lock_timeout=timedelta(seconds=self.lock_timeout_seconds),
            statement_timeout=timedelta(seconds=self.statement_timeout_seconds),
            state_dir=Path(self.state_dir),
        )


class LandingResource(dg.ConfigurableResource):
    """Where raw windows are kept: a local folder or an `s3://bucket/prefix`."""

    path: str
    s3: S3Settings | None = None

    def store(self) -> LandingStore:
        return LandingStore.open(self.path, self.s3.to_config() if self.s3 else None)


def build_resources(project: Project) -> dict[str, dg.ResourceDefinition]:
    config = project.config
    sink = SinkResource.from_config(config.sink, project.state_dir)
    landing = LandingResource(path=project.resolve_path(config.landing.path),
                              s3=S3Settings.from_config(config.landing.s3))
    return {
        "sink": fixed(sink, sink.sink, "The sink (sources.yaml `sink:`)."),
        "landing": fixed(landing, lambda: landing, "The landing store (sources.yaml `landing:`)."),
    }


def fixed(settings: dg.ConfigurableResource, make: Callable[[], object], what: str
          ) -> dg.ResourceDefinition:
    """A resource with no run config that gives each run `make()`; the UI shows `settings`
    as its description: placeholders as written, a credential written literally masked."""
    shown = json.dumps(shown_settings(settings.model_dump(exclude_none=True)), default=str)
    return dg.ResourceDefinition(resource_fn=lambda _: make(),
                                 description=f"{what} Settings: {redact(shown)}")


def _seconds(value: timedelta | None) -> float | None:
    return value.total_seconds() if value is not None else None


def _duration(seconds: float | None) -> timedelta | None:
    return timedelta(seconds=seconds) if seconds is not None else None
