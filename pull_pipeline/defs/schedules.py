"""The schedule of a source: tick after the window closes plus `lag`, pull it and `lookback` more."""

from datetime import UTC

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.jobs import run_tags
from pull_pipeline.defs.partitions import newest_windows
from pull_pipeline.scheduling import shift_cron


def default_status(paused: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.STOPPED if paused else dg.DefaultScheduleStatus.RUNNING


def build_schedule(ctx: SourceContext, job: UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    """Each tick requests the newest complete window and the `lookback` windows before it.

    One run per window, each with a run key made of the window and the tick time: a tick
    evaluated twice launches nothing twice, while the next tick may pull a window again
    (that is what `lookback` is for: rows the source adds late).
    """
    name, config, partitions_def = ctx.name, ctx.config, ctx.partitions_def
    lag = config.partitions.lag
    count = 1 + config.lookback

    @dg.schedule(
        name=ctx.names.pull_schedule,
        cron_schedule=shift_cron(partitions_def.cron_schedule, lag),
        execution_timezone=config.partitions.timezone,
        job=job,
        default_status=default_status(config.paused),
        description=f"Pull each {config.partitions.cadence} window of {name} {lag} after it "
        f"closes, with the {config.lookback} window(s) before it.",
    )
    def pull_schedule(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
        if config.paused:
            return dg.SkipReason(f"{name} is paused in the config (paused: true)")
        tick = context.scheduled_execution_time  # Dagster sets it on every tick
        keys = newest_windows(partitions_def, tick - lag, count)
        if not keys:
            return dg.SkipReason(f"{name}: no window is complete yet")
        stamp = tick.astimezone(UTC).strftime("%Y%m%dT%H%M")
        return [
            dg.RunRequest(run_key=f"{key}@{stamp}", partition_key=key,
                          tags=run_tags(name, "schedule"))
            for key in keys
        ]

    return pull_schedule
