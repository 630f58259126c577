"""One schedule per source: tick after the window closes plus `lag`, pull it and `lookback` more."""

from datetime import UTC, datetime

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.config.models import SourceBase
from pull_pipeline.defs.jobs import pull_job_name, run_tags
from pull_pipeline.scheduling import newest_windows, shift_cron


def default_status(paused: bool) -> dg.DefaultScheduleStatus:
    return dg.DefaultScheduleStatus.STOPPED if paused else dg.DefaultScheduleStatus.RUNNING


def build_schedule(
    name: str,
    source: SourceBase,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    job: UnresolvedAssetJobDefinition,
) -> dg.ScheduleDefinition:
    """Each tick requests the newest complete window and the `lookback` windows before it.

    One run per window, each with a run key made of the window and the tick time: a tick
    evaluated twice launches nothing twice, while the next tick may pull a window again
    (that is what `lookback` is for: rows the source adds late).
    """
    lag = source.partitions.lag
    count = 1 + source.lookback

    @dg.schedule(
        name=f"{pull_job_name(name)}_schedule",
        cron_schedule=shift_cron(partitions_def.cron_schedule, lag),
        execution_timezone=source.partitions.timezone,
        job=job,
        default_status=default_status(source.paused),
        description=f"Pull each {source.partitions.cadence} window of {name} {lag} after it "
        f"closes, with the {source.lookback} window(s) before it.",
    )
    def pull_schedule(context: dg.ScheduleEvaluationContext) -> dg.SkipReason | list[dg.RunRequest]:
        if source.paused:
            return dg.SkipReason(f"{name} is paused in the config (paused: true)")
        tick = context.scheduled_execution_time or datetime.now(UTC)
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
