"""Resources shared by every source: the sink and the landing store."""

from __future__ import annotations

import dagster as dg

from pull_pipeline.config.loader import Project
from pull_pipeline.landing import LandingStore, LocalLanding
from pull_pipeline.s3 import S3Landing, is_s3_url
from pull_pipeline.sink.timescale import TimescaleSink


class LandingResource(dg.ConfigurableResource):
    """Where raw windows are kept: a local folder or an `s3://bucket/prefix`.

    `s3_json` holds the landing `s3:` block (with `${NAME}` placeholders unresolved), so no
    credential is ever part of Dagster's resource config.
    """

    path: str
    s3_json: str | None = None

    def store(self) -> LandingStore:
        if is_s3_url(self.path):
            return S3Landing.from_settings(self.path, self.s3_json)
        return LocalLanding(self.path)


def build_resources(project: Project) -> dict[str, dg.ConfigurableResource]:
    config = project.config
    landing_path = project.resolve_path(config.landing.path)
    return {
        "sink": TimescaleSink.from_config(config.sink, project.state_dir),
        "landing": LandingResource(
            path=landing_path,
            s3_json=config.landing.s3.model_dump_json() if config.landing.s3 else None,
        ),
    }
