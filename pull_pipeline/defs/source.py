"""Everything one source gets, built in one place from its `SourceContext`.

Per source: assets `<source>/raw` and `<source>/readings` with their checks (has_rows,
valid_rows, gaps, freshness), the asset jobs (pull, replay, export), the pull schedule, the
recovery and freshness sensors, and with `archive:` the archive asset, its export sensor
and the restore job. Adding something every source gets means adding it here.
"""

from __future__ import annotations

import dagster as dg

from pull_pipeline.defs.archive import build_archive
from pull_pipeline.defs.assets import build_source_assets
from pull_pipeline.defs.checks import build_freshness_check, build_gap_check
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.jobs import build_asset_jobs
from pull_pipeline.defs.recovery import build_recovery_sensor
from pull_pipeline.defs.schedules import build_schedule
from pull_pipeline.defs.sensors import build_freshness_sensor


def build_source(ctx: SourceContext) -> dg.Definitions:
    """The assets, checks, jobs, schedule and sensors of one source (resources are shared)."""
    jobs = build_asset_jobs(ctx)
    checks = [check for check in (build_gap_check(ctx), build_freshness_check(ctx)) if check]
    freshness = build_freshness_sensor(ctx)
    defs = dg.Definitions(
        assets=build_source_assets(ctx),
        asset_checks=checks,
        jobs=jobs.all(),
        schedules=[build_schedule(ctx, jobs.pull)],
        sensors=[build_recovery_sensor(ctx, jobs.pull), *([freshness] if freshness else [])],
    )
    if ctx.archive is None:
        return defs
    return dg.Definitions.merge(defs, build_archive(ctx, ctx.archive))
