"""A partition's time window: the unit that is fetched, landed, loaded and archived."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta


@dataclass(frozen=True)
class Window:
    """One partition's window: rows with `start <= ts < end` belong to `key`."""

    key: str
    start: datetime
    end: datetime


def beyond_retention(
    windows: Sequence[Window], retention: timedelta | None, now: datetime
) -> list[Window]:
    """The windows that end before `now - retention`: the sink's retention policy would drop
    them again, so they are neither pulled nor loaded (none without a retention)."""
    if retention is None:
        return []
    horizon = now - retention
    return [window for window in windows if window.end <= horizon]
