"""Repeats of the same alert are sent at most once per `alerts.throttle`.

The state must outlive a process (a sensor tick may run in a fresh one), so it lives in a
`ThrottleStore` the caller provides: the Dagster wiring keeps it in the instance's storage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol


class ThrottleStore(Protocol):
    """Remembers when an alert key was last sent (seconds since the epoch)."""

    def last_sent(self, key: str) -> float | None: ...

    def mark_sent(self, key: str, when: float) -> None: ...


class Throttle:
    """Decides whether an alert key may be sent now, and records that it was."""

    def __init__(
        self, store: ThrottleStore, period: timedelta, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.period = period.total_seconds()
        self.clock = clock

    def allows(self, key: str) -> bool:
        last = self.store.last_sent(key)
        return last is None or self.clock() - last >= self.period

    def record(self, key: str) -> None:
        self.store.mark_sent(key, self.clock())
