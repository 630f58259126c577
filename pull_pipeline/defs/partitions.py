"""One `TimeWindowPartitionsDefinition` per source, from its `partitions:` block.

`PartitionCalendar` adapts it to `scheduling.Calendar`, so the decisions of what is due
stay free of Dagster; `complete_windows` and `newest_windows` are them on a definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from pull_pipeline import scheduling
from pull_pipeline.canonical import parse_instant
from pull_pipeline.config.models import PartitionsConfig
from pull_pipeline.errors import ConfigError
from pull_pipeline.windows import Window

HOURLY_FMT = "%Y-%m-%d-%H:%M"
DAILY_FMT = "%Y-%m-%d"

_DAY_KEYED = ("daily", "weekly", "monthly")
# cadence name -> (cron schedule, partition key format); anything else is a cron string.
CADENCES = {
    cadence: (cron, DAILY_FMT if cadence in _DAY_KEYED else HOURLY_FMT)
    for cadence, cron in scheduling.CADENCE_CRONS.items()
}


def cron_and_format(cadence: str) -> tuple[str, str]:
    """The cron schedule and partition key format of a cadence name or cron string."""
    if cadence in CADENCES:
        return CADENCES[cadence]
    fields = cadence.split()
    if len(fields) != 5:
        raise ConfigError(
            f"partitions.cadence {cadence!r} is not one of {', '.join(CADENCES)} nor a "
            "5-field cron string such as '0 */6 * * *'"
        )
    return cadence, HOURLY_FMT


def build_partitions(
    config: PartitionsConfig, name: str, where: str | None = None
) -> dg.TimeWindowPartitionsDefinition:
    """Windows `[start, next tick)` in `timezone` (UTC by default), keyed in Dagster's formats.

    `where` names the source in errors (`Project.where`: the file, then the source);
    without it they name the source alone.
    """
    where = where or f"source {name!r}"
    key = "partitions.cadence"
    try:
        cron, fmt = cron_and_format(config.cadence)
        key = "partitions.timezone"
        tz = ZoneInfo(config.timezone)
        key = "partitions.start"
        start = _instant(config.start, tz)
        key = "partitions.end"
        end = _instant(config.end, tz) if config.end else None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"{where}: {key}: {exc}") from None
    return dg.TimeWindowPartitionsDefinition(
        start=start.astimezone(tz).strftime(fmt),
        end=end.astimezone(tz).strftime(fmt) if end else None,
        cron_schedule=cron,
        fmt=fmt,
        timezone=config.timezone,
    )


def backfill_policy(config: PartitionsConfig) -> dg.BackfillPolicy:
    """How a backfill launched from the UI splits into runs: `partitions.windows_per_run`
    windows each, else the whole range in one run. Either way each window is loaded and
    committed on its own (`defs/handoff.py`)."""
    if config.windows_per_run is None:
        return dg.BackfillPolicy.single_run()
    return dg.BackfillPolicy.multi_run(config.windows_per_run)


def _instant(text: str, tz: ZoneInfo) -> datetime:
    value = parse_instant(text) if ("T" in text or "+" in text or "Z" in text) else None
    if value is None:
        value = datetime.fromisoformat(text).replace(tzinfo=tz)
    return value


@dataclass(frozen=True)
class PartitionCalendar:
    """A `scheduling.Calendar` over a Dagster time-window partitions definition."""

    partitions_def: dg.TimeWindowPartitionsDefinition

    @property
    def start(self) -> datetime:
        return self.partitions_def.start

    def keys_between(self, since: datetime, until: datetime) -> list[str]:
        return list(self.partitions_def.get_partition_keys_in_time_window(
            dg.TimeWindow(since, until)))

    def end_of(self, key: str) -> datetime:
        return self.partitions_def.end_time_for_partition_key(key)

    def window_before(self, moment: datetime) -> Window | None:
        span = self.partitions_def.get_prev_partition_window(moment, respect_bounds=False)
        if span is None:
            return None
        key = self.partitions_def.get_partition_key_for_timestamp(span.start.timestamp())
        return Window(key, span.start, span.end)


def complete_windows(
    partitions_def: dg.TimeWindowPartitionsDefinition, since: datetime, until: datetime
) -> list[str]:
    """`scheduling.complete_windows` of the partitions."""
    return scheduling.complete_windows(PartitionCalendar(partitions_def), since, until)


def newest_windows(
    partitions_def: dg.TimeWindowPartitionsDefinition, until: datetime, count: int
) -> list[str]:
    """`scheduling.newest_windows` of the partitions."""
    return scheduling.newest_windows(PartitionCalendar(partitions_def), until, count)
