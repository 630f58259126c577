"""The code location: `Definitions` built from sources.yaml (or $PULL_PIPELINE_CONFIG)."""

from __future__ import annotations

import os
import sys
from dataclasses import replace

import dagster as dg

from pull_pipeline.config.loader import BrokenSource, Project, load_project
from pull_pipeline.defs.archive import build_archive_resource
from pull_pipeline.defs.broken import build_broken_source
from pull_pipeline.defs.context import Clock, SourceContext, utc_now
from pull_pipeline.defs.dagster_warnings import silence_known_warnings
from pull_pipeline.defs.executor import build_executor
from pull_pipeline.defs.long_lived import once_per_load
from pull_pipeline.defs.resources import build_resources
from pull_pipeline.defs.run_scope import scoped_to_this_run
from pull_pipeline.defs.sensors import build_location_sensors
from pull_pipeline.defs.sink_health import build_sink_health
from pull_pipeline.defs.source import build_source
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.redaction import redact


def build_definitions(project: Project, clock: Clock = utc_now) -> dg.Definitions:
    """Every source's definitions (see `defs/source.py`), plus what the location has once:
    resources, the run-failure alert and pool-limit sensors, and the sink's health.

    A broken source (`project.broken`, or a block Dagster refuses here) gets only its
    `<source>/config` stand-in (see `defs/broken.py`); the others build as usual.
    `clock` is what the sensors take as now (tests set it)."""
    silence_known_warnings()
    built, refused = build_sources(project, clock)
    project = replace(project, broken=(*project.broken, *refused))
    shared = dg.Definitions(
        resources={**build_resources(project), **build_archive_resource(project)},
        sensors=build_location_sensors(project, [ctx for ctx, _ in built]),
        # In process by default (a source's raw -> readings chain is sequential: one process
        # per run, not per step); PULL_PIPELINE_EXECUTOR=celery sends steps to Celery workers.
        executor=build_executor(),
    )
    return dg.Definitions.merge(
        shared, *(defs for _, defs in built),
        *(build_broken_source(broken, project.config.alerts) for broken in project.broken),
        build_sink_health(project, clock))


def build_sources(
    project: Project, clock: Clock
) -> tuple[list[tuple[SourceContext, dg.Definitions]], list[BrokenSource]]:
    """Each valid source's context and definitions, in config order, and the sources whose
    block Dagster refuses (an impossible cron, say): those are broken, not the location."""
    built: list[tuple[SourceContext, dg.Definitions]] = []
    refused: list[BrokenSource] = []
    for name, config in project.config.sources.items():
        try:
            ctx = SourceContext.build(project, name, config, clock)
            built.append((ctx, build_source(ctx)))
        except (PullPipelineError, dg.DagsterInvalidDefinitionError) as exc:
            problem = redact(str(exc)).removeprefix(f"source {name!r}: ")
            refused.append(BrokenSource(name, str(project.path), (f"source {name!r}: {problem}",)))
    return built, refused


def build_location(project: Project) -> dg.Definitions:
    """What a Dagster process loads: every source, but in a run worker only the sources of
    its run (`defs/run_scope.py`)."""
    return build_definitions(scoped_to_this_run(project, sys.argv, os.environ))


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by Dagster (workspace.yaml, `-m pull_pipeline.definitions`) on demand, built
    once per load and kept for the process (`defs/long_lived.py`).

    `contain=True`: an invalid source is shown as broken and the others load (defs/broken.py)."""
    return once_per_load(__name__, lambda: build_location(load_project(contain=True)))
