"""Recent windows of a source, computed without Dagster.

`check` needs a recent window to pull a first page from, and `init-source` prints a window
key to preview; importing Dagster for that would double the command's start-up time. The
named cadences are plain calendar arithmetic; tests compare the result with Dagster's own
partitions (`pull_pipeline.defs.partitions`), which stay the authority for `preview`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from pull_pipeline.canonical import parse_instant
from pull_pipeline.config.models import PartitionsConfig

HOURLY_FMT = "%Y-%m-%d-%H:%M"  # Dagster's key formats, as in defs/partitions.py
DAILY_FMT = "%Y-%m-%d"
_MINUTES = {"5min": 5, "10min": 10, "15min": 15, "30min": 30, "hourly": 60}
_DAYS = ("daily", "weekly", "monthly")
CADENCES = (*_MINUTES, *_DAYS)


@dataclass(frozen=True)
class RecentWindow:
    """A window `[start, end)`; `key` is its partition key, None for a cron cadence."""

    key: str | None
    start: datetime
    end: datetime


def last_complete_window(partitions: PartitionsConfig, now: datetime) -> RecentWindow:
    """The newest window that has closed `lag` before `now` (and before `partitions.end`).

    A cron cadence falls back to the last whole UTC hour, without a key: good enough to
    see a first page, which is all `check` needs.
    """
    tz = ZoneInfo(partitions.timezone)
    moment = now - partitions.lag
    if partitions.end:
        moment = min(moment, _instant(partitions.end, tz))
    local = moment.astimezone(tz)
    cadence = partitions.cadence
    if cadence in _MINUTES:
        step = _MINUTES[cadence]
        end = local.replace(minute=local.minute - local.minute % step, second=0, microsecond=0)
        start = (end.astimezone(UTC) - timedelta(minutes=step)).astimezone(tz)  # real minutes
        return RecentWindow(start.strftime(HOURLY_FMT), start, end)
    if cadence in _DAYS:
        day = local.date()
        if cadence == "daily":
            first, last = day - timedelta(days=1), day
        elif cadence == "weekly":
            last = day - timedelta(days=day.weekday())
            first = last - timedelta(days=7)
        else:
            last = day.replace(day=1)
            first = (last - timedelta(days=1)).replace(day=1)
        start, end = (datetime.combine(d, time(0), tzinfo=tz) for d in (first, last))
        return RecentWindow(start.strftime(DAILY_FMT), start, end)
    end = moment.replace(minute=0, second=0, microsecond=0)
    return RecentWindow(None, end - timedelta(hours=1), end)


def _instant(text: str, tz: ZoneInfo) -> datetime:
    """A `partitions.end` as Dagster reads it: a date is midnight in the source's zone."""
    if "T" in text or "+" in text or "Z" in text:
        return parse_instant(text)
    return datetime.fromisoformat(text).replace(tzinfo=tz)
