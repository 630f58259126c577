"""Is a source fresh? Judged on the newest window that should have landed, not on any window.

Dagster's built-in freshness counts the last materialization of *any* partition, so a
backfill of an old window makes a stale source look fresh. Here the question is precise:
the newest window whose `end + fail_after` has passed must have landed (ERROR otherwise);
the newest whose `end + warn_after` has passed should have (WARN otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from pull_pipeline.config.models import FreshnessConfig


class State(Enum):
    FRESH = "fresh"
    WARN = "warn"
    STALE = "stale"
    NOT_DUE = "not_due"  # no window has reached its deadline yet


@dataclass(frozen=True)
class Due:
    """A window that should have landed by `deadline` (its end plus the allowed delay)."""

    key: str
    deadline: datetime


@dataclass(frozen=True)
class Verdict:
    state: State
    window: Due | None
    landed_at: datetime | None
    description: str

    @property
    def passed(self) -> bool:
        return self.state in (State.FRESH, State.NOT_DUE)


def judge(
    source: str,
    config: FreshnessConfig,
    now: datetime,
    newest_complete: Callable[[datetime], tuple[str, datetime] | None],
    landed: Callable[[str], datetime | None],
) -> Verdict:
    """Judge freshness at `now`.

    `newest_complete(t)` returns (key, end) of the newest window complete at `t`;
    `landed(key)` returns when that window's readings last landed, or None.
    """
    levels: list[tuple[State, timedelta]] = [(State.STALE, config.fail_after)]
    if config.warn_after is not None:
        levels.append((State.WARN, config.warn_after))
    newest: tuple[Due, datetime] | None = None
    for state, after in levels:
        found = newest_complete(now - after)
        if found is None:
            continue
        key, end = found
        due = Due(key, end + after)
        landed_at = landed(key)
        if landed_at is None:
            return Verdict(
                state, due, None,
                f"{source}: window {key} (closed {_hm(end)}) has not landed; it was due by "
                f"{_hm(due.deadline)} ({_delay(after)} after it closed)",
            )
        newest = (due, landed_at)
    if newest is None:
        return Verdict(State.NOT_DUE, None, None, f"{source}: no window has reached its deadline yet")
    due, landed_at = newest
    return Verdict(State.FRESH, due, landed_at,
                   f"{source}: window {due.key} has landed (due by {_hm(due.deadline)})")


def _hm(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M %Z").strip()


def _delay(value: timedelta) -> str:
    minutes = int(value.total_seconds() // 60)
    return f"{minutes // 60}h{minutes % 60:02d}" if minutes >= 60 else f"{minutes} min"
