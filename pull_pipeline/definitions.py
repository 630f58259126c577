"""The code location: `Definitions` built from sources.yaml (or $PULL_PIPELINE_CONFIG)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from pull_pipeline.config.loader import Project, load_project
from pull_pipeline.defs.archive import build_archive_and_replay
from pull_pipeline.defs.assets import build_source_assets
from pull_pipeline.defs.checks import utc_now
from pull_pipeline.defs.operations import build_operations
from pull_pipeline.defs.resources import build_resources
from pull_pipeline.defs.sink_health import build_sink_health


def build_definitions(project: Project, clock: Callable[[], datetime] = utc_now) -> dg.Definitions:
    """Compose every source's assets, checks, schedules, sensors and jobs.

    `clock` is what the sensors take as now (tests set it)."""
    assets: list[dg.AssetsDefinition] = []
    for name, source in project.config.sources.items():
        assets.extend(build_source_assets(name, source))
    core = dg.Definitions(
        assets=assets,
        resources=build_resources(project),
        # A source's raw -> readings chain is sequential: one process per run, not per step.
        executor=dg.in_process_executor,
    )
    # Operations: pull jobs, schedules, recovery/freshness/alert sensors, gap/freshness checks.
    # Archive: replay_<source> jobs; <source>/archive assets, export_<source> jobs and
    # archive_<source> sensors, restore_<source> jobs.
    return dg.Definitions.merge(core, build_operations(project, clock),
                                build_archive_and_replay(project, clock),
                                build_sink_health(project, clock))


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by Dagster (workspace.yaml, `-m pull_pipeline.definitions`) on demand."""
    return build_definitions(load_project())
