"""Deciding what automatic recovery does on one evaluation, without Dagster.

The recovery sensor gathers facts (each window's status within the horizon, whether its
last failure was transient, the previous cursor) and `plan_recovery` turns them into
actions: which windows to request, which alerts to send, the next cursor. Rules:

- Only missing windows and windows whose last run failed *transiently* are candidates.
  A permanent failure (401, schema error, reject ratio) is held for a person: it is
  announced once and never requested again by recovery, so nothing loops on it.
- Nothing is requested unless the source answers its probe, and the probe is only called
  when there is something to request (it is cheap, but not free for the source).
- At most `cap` windows are in flight at once (requested and not yet loaded or failed),
  newest first: a week-long outage drains in bounded steps instead of one flood.
- A source that answers its probe but whose requested windows fail again (it flaps) is
  retried at once after the first such round, then after 1, 2, 4 ... minutes, at most
  an hour apart, until one of them loads.
- When every window recovery requested has loaded and nothing is left to do, the
  recovery alert goes out once ("plant_a is back; 7 windows backfilled" after failures,
  "plant_a caught up; ..." when the windows had simply never been pulled).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from enum import Enum

# A requested window that neither shows as in progress nor as done after this long was
# never launched (e.g. the run request was dropped); it becomes a candidate again.
LAUNCH_GRACE_SECONDS = 600.0
BACKOFF_SECONDS = 60.0  # after the second failed round in a row; doubles each round
MAX_BACKOFF_SECONDS = 3600.0


def backoff(failed_rounds: int) -> float:
    """Seconds to wait before requesting again after `failed_rounds` failed rounds in a row."""
    if failed_rounds < 2:
        return 0.0
    return min(BACKOFF_SECONDS * 2 ** (failed_rounds - 2), MAX_BACKOFF_SECONDS)


class Status(Enum):
    MISSING = "missing"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    MATERIALIZED = "materialized"


@dataclass(frozen=True)
class Window:
    """One window of the source within the horizon; `permanent` only matters when FAILED."""

    key: str
    status: Status
    permanent: bool = False


@dataclass(frozen=True)
class Probe:
    """The answer of the source's cheap probe."""

    ok: bool
    permanent: bool = False
    message: str = ""


@dataclass
class Cursor:
    """What recovery remembers between evaluations (stored as the sensor's cursor).

    `generation` makes run keys unique per request round but stable if the same evaluation
    is retried; `pending` maps requested windows to when they were requested; `loaded` lists
    windows recovery requested that have since loaded; `held` lists windows already
    announced as needing a person; `outage` says whether any requested window had failed
    (an outage, rather than windows that were simply never pulled); `failed_rounds` counts
    rounds in a row in which a requested window failed again, and nothing is requested
    before `retry_at`.
    """

    generation: int = 0
    pending: dict[str, float] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    outage: bool = False
    failed_rounds: int = 0
    retry_at: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(
            generation=int(data.get("generation", 0)),
            pending={str(k): float(v) for k, v in data.get("pending", {}).items()},
            loaded=[str(k) for k in data.get("loaded", [])],
            held=[str(k) for k in data.get("held", [])],
            outage=bool(data.get("outage", False)),
            failed_rounds=int(data.get("failed_rounds", 0)),
            retry_at=float(data.get("retry_at", 0.0)),
        )

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class Plan:
    """The actions of one evaluation."""

    cursor: Cursor
    request: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    after_outage: bool = False
    newly_held: list[str] = field(default_factory=list)
    probe: Probe | None = None
    waiting: int = 0
    backing_off: float = 0.0  # seconds until recovery may request again

    def run_key(self, key: str) -> str:
        return f"recover:{key}:{self.cursor.generation}"

    def describe(self) -> str:
        """One line for the sensor tick: what was done and why."""
        if self.request:
            return f"requested {len(self.request)} window(s); {self.waiting} more waiting"
        if self.backing_off:
            return (f"{self.waiting} window(s) waiting; requested windows failed again "
                    f"{self.cursor.failed_rounds} rounds in a row, next try in "
                    f"{self.backing_off:.0f} s")
        if self.probe is not None and not self.probe.ok:
            return f"{self.waiting} window(s) waiting; source not answering: {self.probe.message}"
        if self.cursor.pending:
            return f"{len(self.cursor.pending)} requested window(s) still loading"
        if self.recovered:
            return f"caught up: {len(self.recovered)} window(s) backfilled"
        return "nothing to recover"


def plan_recovery(
    cursor: Cursor,
    windows: Sequence[Window],
    cap: int,
    now: float,
    probe: Callable[[], Probe],
) -> Plan:
    """Decide this evaluation's requests and alerts; `windows` are the horizon's windows."""
    by_key = {w.key: w for w in windows}
    cursor = replace(cursor, pending=dict(cursor.pending), loaded=list(cursor.loaded),
                     held=list(cursor.held))  # the caller's cursor stays as it was
    plan = Plan(cursor=cursor)

    failed_again = loaded = False
    for key, requested_at in list(cursor.pending.items()):
        window = by_key.get(key)
        status = window.status if window else None
        if status is Status.MATERIALIZED:
            del cursor.pending[key]
            cursor.loaded.append(key)
            loaded = True
        elif status is Status.FAILED or status is None:
            del cursor.pending[key]  # failed again (or left the horizon): judged afresh below
            failed_again = failed_again or status is Status.FAILED
        elif status is Status.MISSING and now - requested_at > LAUNCH_GRACE_SECONDS:
            del cursor.pending[key]
    if loaded:
        cursor.failed_rounds, cursor.retry_at = 0, 0.0
    elif failed_again:
        cursor.failed_rounds += 1
        cursor.retry_at = now + backoff(cursor.failed_rounds)

    held = [w.key for w in windows if w.status is Status.FAILED and w.permanent]
    plan.newly_held = [key for key in held if key not in cursor.held]
    cursor.held = held

    candidates = [
        w.key for w in windows
        if w.key not in cursor.pending
        and (w.status is Status.MISSING or (w.status is Status.FAILED and not w.permanent))
    ]
    candidates.reverse()  # newest first: the freshest data matters most to readers
    room = max(0, cap - len(cursor.pending))
    plan.waiting = len(candidates)

    if candidates and room and now < cursor.retry_at:
        plan.backing_off = cursor.retry_at - now
    elif candidates and room:
        plan.probe = probe()
        if plan.probe.ok:
            plan.request = candidates[:room]
            plan.waiting -= len(plan.request)
            cursor.generation += 1
            cursor.pending.update({key: now for key in plan.request})
            cursor.outage = cursor.outage or any(
                by_key[key].status is Status.FAILED for key in plan.request)

    if not candidates and not cursor.pending and cursor.loaded:
        plan.recovered, plan.after_outage = cursor.loaded, cursor.outage
        cursor.loaded, cursor.outage = [], False
    return plan
