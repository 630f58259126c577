"""Everything that runs a source unattended, composed per source from sources.yaml.

Per source: the `pull_<source>` job, its schedule, the gap and freshness checks, the
freshness and recovery sensors. Once: the run-failure alert sensor and the sensor that
applies each source's `concurrency:` to its pool.
"""

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from pull_pipeline.config.loader import Project
from pull_pipeline.defs.checks import build_freshness_check, build_gap_check, utc_now
from pull_pipeline.defs.jobs import build_pull_job
from pull_pipeline.defs.partitions import build_partitions
from pull_pipeline.defs.recovery import build_recovery_sensor
from pull_pipeline.defs.schedules import build_schedule
from pull_pipeline.defs.sensors import (
    build_failure_alert_sensor,
    build_freshness_sensor,
    build_pool_limits_sensor,
)


def build_operations(project: Project, clock: Callable[[], datetime] = utc_now) -> dg.Definitions:
    """Jobs, schedules, sensors and checks for every source (no assets, no resources)."""
    jobs, schedules, sensors, checks = [], [], [], []
    partitions = {}
    for name, source in project.config.sources.items():
        partitions_def = build_partitions(source.partitions, name)
        partitions[name] = partitions_def
        job = build_pull_job(name, has_freshness_check=source.freshness is not None)
        jobs.append(job)
        schedules.append(build_schedule(name, source, partitions_def, job))
        sensors.append(build_recovery_sensor(name, source, partitions_def, job, project, clock))
        freshness_sensor = build_freshness_sensor(name, source, partitions_def, project, clock)
        sensors.extend([freshness_sensor] if freshness_sensor else [])
        for check in (build_gap_check(name, source, partitions_def),
                      build_freshness_check(name, source, partitions_def, clock)):
            checks.extend([check] if check else [])
    sensors.append(build_failure_alert_sensor(project, partitions))
    sensors.append(build_pool_limits_sensor(project))
    return dg.Definitions(jobs=jobs, schedules=schedules, sensors=sensors, asset_checks=checks)
