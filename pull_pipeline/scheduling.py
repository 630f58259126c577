"""Which windows are due when: the schedule's cron after `lag`, and complete windows.

A window `[start, end)` is complete at `end`, but the source may need `lag` to publish it,
so the schedule ticks at `end + lag`. Dagster derives a schedule's cron from partitions
but cannot offset it by an arbitrary duration, so `shift_cron` does that for the cron
shapes that cadences use (minute and hour lists, with day-of-week or day-of-month days).

The decisions work on a `Calendar` of plain windows; `defs.partitions` adapts Dagster's
partitions to it, so what is due is decided (and tested) without Dagster.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta
from typing import Protocol

from pull_pipeline.errors import ConfigError
from pull_pipeline.windows import Window

_DAY = 24 * 60
_RANGES = {"minute": (0, 59), "hour": (0, 23), "dom": (1, 31), "dow": (0, 7)}

# cadence name -> the cron of its window starts; any other cadence is a cron string itself.
CADENCE_CRONS = {
    "5min": "*/5 * * * *",
    "10min": "*/10 * * * *",
    "15min": "*/15 * * * *",
    "30min": "*/30 * * * *",
    "hourly": "0 * * * *",
    "daily": "0 0 * * *",
    "weekly": "0 0 * * 1",
    "monthly": "0 0 1 * *",
}


def cadence_cron(cadence: str) -> str:
    """The cron of a cadence name, or the cadence itself when it is a cron string."""
    return CADENCE_CRONS.get(cadence, cadence)


def shift_cron(cron: str, lag: timedelta) -> str:
    """The cron string whose ticks are those of `cron` moved `lag` later (rounded up to minutes).

    >>> shift_cron("0 * * * *", timedelta(minutes=5))
    '5 * * * *'
    >>> shift_cron("0 0 * * 1", timedelta(hours=25))
    '0 1 * * 2'
    """
    shift = math.ceil(lag.total_seconds() / 60)
    if shift == 0:
        return cron
    minute, hour, dom, month, dow = cron.split()
    try:
        times = {h * 60 + m + shift
                 for h in _expand(hour, "hour") for m in _expand(minute, "minute")}
        weekdays = _expand(dow, "dow")
        days = _expand(dom, "dom")
    except ValueError:
        raise _unshiftable(cron, lag) from None
    new_minutes = sorted({t % 60 for t in times})
    new_hours = sorted({(t // 60) % 24 for t in times})
    if len({t % _DAY for t in times}) != len(new_minutes) * len(new_hours):
        raise _unshiftable(cron, lag)  # the shifted ticks are not a minutes x hours grid
    if dom != "*" or dow != "*":  # ticks on some days only: they must all move by whole days
        carries = {t // _DAY for t in times}
        if len(carries) != 1:
            raise _unshiftable(cron, lag)
        (carry,) = carries
        if carry and dom == "*":
            dow = _join(sorted({(d + carry) % 7 for d in weekdays}), "dow")
        elif carry and dow == "*" and month == "*" and max(days) + carry <= 28:
            dom = _join([d + carry for d in days], "dom")
        elif carry:
            raise _unshiftable(cron, lag)
    return " ".join([_join(new_minutes, "minute"), _join(new_hours, "hour"), dom, month, dow])


class Calendar(Protocol):
    """A source's consecutive windows, from `start` (the first window's start) on."""

    @property
    def start(self) -> datetime: ...

    def keys_between(self, since: datetime, until: datetime) -> list[str]:
        """Keys of the windows overlapping `[since, until)`, oldest first, within the bounds."""
        ...

    def end_of(self, key: str) -> datetime: ...

    def window_before(self, moment: datetime) -> Window | None:
        """The newest window ending at or before `moment`, ignoring the bounds."""
        ...


def complete_windows(calendar: Calendar, since: datetime, until: datetime) -> list[str]:
    """Keys of the windows with `since <= start` and `end <= until`, oldest first."""
    since = max(since, calendar.start)
    if since >= until:
        return []
    keys = calendar.keys_between(since, until)
    while keys and calendar.end_of(keys[-1]) > until:
        keys.pop()
    return keys


def newest_windows(calendar: Calendar, until: datetime, count: int) -> list[str]:
    """The newest `count` complete windows at `until` (fewer near the first partition)."""
    keys: list[str] = []
    moment = until
    while len(keys) < count:
        window = calendar.window_before(moment)
        if window is None or window.start < calendar.start:
            break
        keys.append(window.key)
        moment = window.start
    return keys


def _expand(field: str, kind: str) -> list[int]:
    low, high = _RANGES[kind]
    values: set[int] = set()
    for part in field.split(","):
        body, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if body == "*":
            start, stop = low, high
        elif "-" in body:
            start_text, stop_text = body.split("-")
            start, stop = int(start_text), int(stop_text)
        else:
            start = int(body)
            stop = high if step_text else start
        values.update(range(start, stop + 1, step))
    return sorted({v % 7 for v in values} if kind == "dow" else values)


def _join(values: list[int], kind: str) -> str:
    low, high = _RANGES[kind]
    if values == list(range(low, 7 if kind == "dow" else high + 1)):
        return "*"
    return ",".join(str(v) for v in values)


def _unshiftable(cron: str, lag: timedelta) -> ConfigError:
    return ConfigError(
        f"a lag of {lag} cannot be added to the cadence {cron!r} as a cron schedule; "
        "use a lag shorter than one window, or a cadence with fixed minutes and hours"
    )
