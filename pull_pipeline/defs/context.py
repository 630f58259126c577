"""What every builder of one source needs, built once per source.

The partitions definition, the names and the clock used to be rebuilt or passed along in
each module; here they are computed once, so the assets, checks, jobs, schedule and sensors
of a source cannot disagree about them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from pull_pipeline.config.loader import Project
from pull_pipeline.config.models import AlertsConfig, ArchiveConfig, SourceBase
from pull_pipeline.defs.naming import SourceNames
from pull_pipeline.defs.partitions import build_partitions

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class SourceContext:
    """One source as the Dagster builders see it.

    `clock` is what sensors take as now (the tests' daemon harness sets it); schedules get
    their tick time from Dagster instead.
    """

    name: str
    config: SourceBase
    partitions_def: dg.TimeWindowPartitionsDefinition
    names: SourceNames
    clock: Clock
    project: Project

    @classmethod
    def build(
        cls, project: Project, name: str, config: SourceBase, clock: Clock = utc_now
    ) -> SourceContext:
        partitions_def = build_partitions(config.partitions, name, project.where(name))
        return cls(name, config, partitions_def, SourceNames(name), clock, project)

    @property
    def where(self) -> str:
        """How messages name this source: the config file, then the source."""
        return self.project.where(self.name)

    @property
    def alerts(self) -> AlertsConfig:
        return self.project.config.alerts

    @property
    def archive(self) -> ArchiveConfig | None:
        return self.project.config.archive
