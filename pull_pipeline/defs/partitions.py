"""One `TimeWindowPartitionsDefinition` per source, from its `partitions:` block."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from pull_pipeline.canonical import parse_instant
from pull_pipeline.config.models import PartitionsConfig
from pull_pipeline.errors import ConfigError

HOURLY_FMT = "%Y-%m-%d-%H:%M"
DAILY_FMT = "%Y-%m-%d"

# cadence name -> (cron schedule, partition key format); anything else is a cron string.
CADENCES = {
    "5min": ("*/5 * * * *", HOURLY_FMT),
    "10min": ("*/10 * * * *", HOURLY_FMT),
    "15min": ("*/15 * * * *", HOURLY_FMT),
    "30min": ("*/30 * * * *", HOURLY_FMT),
    "hourly": ("0 * * * *", HOURLY_FMT),
    "daily": ("0 0 * * *", DAILY_FMT),
    "weekly": ("0 0 * * 1", DAILY_FMT),
    "monthly": ("0 0 1 * *", DAILY_FMT),
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


def build_partitions(config: PartitionsConfig, source: str) -> dg.TimeWindowPartitionsDefinition:
    """Windows `[start, next tick)` in `timezone` (UTC by default), keyed in Dagster's formats."""
    cron, fmt = cron_and_format(config.cadence)
    try:
        tz = ZoneInfo(config.timezone)
        start = _instant(config.start, tz)
        end = _instant(config.end, tz) if config.end else None
    except (ValueError, KeyError) as exc:
        raise ConfigError(f"source {source!r}: partitions: {exc}") from None
    return dg.TimeWindowPartitionsDefinition(
        start=start.astimezone(tz).strftime(fmt),
        end=end.astimezone(tz).strftime(fmt) if end else None,
        cron_schedule=cron,
        fmt=fmt,
        timezone=config.timezone,
    )


def _instant(text: str, tz: ZoneInfo) -> datetime:
    value = parse_instant(text) if ("T" in text or "+" in text or "Z" in text) else None
    if value is None:
        value = datetime.fromisoformat(text).replace(tzinfo=tz)
    return value
