"""Deciding what automatic recovery does on one evaluation, without Dagster.

The recovery sensor gathers facts (each window's status within the horizon, whether its
last failure was transient, the previous cursor) and `plan_recovery` turns them into
actions: which ranges of windows to request, which alerts to send, the next cursor. Rules:

- Only missing windows and windows whose last run failed *transiently* are candidates.
  A permanent failure (401, schema error, reject ratio) is held for a person: it is
  announced once and never requested again by recovery, so nothing loops on it.
- Candidates are requested as ranges: each unbroken stretch of candidates is one run of at
  most `Caps.windows_per_run` windows (a run per window cost seconds of Dagster start-up
  each, and a week of hourly windows queued 168 runs). A range never spans a window that
  is loaded, loading or held, so nothing is pulled twice.
- Nothing is requested unless the source answers its probe, and the probe is only called
  when there is something to request (it is cheap, but not free for the source).
- At most `Caps.runs_in_flight` runs and `Caps.windows_in_flight` windows are in flight at
  once (requested and not yet loaded or failed), newest first: a long outage drains in
  bounded steps, and across a fleet each source holds at most that many queued runs, so a
  FIFO run queue serves the sources in turn and none starves another.
- A source that answers its probe but whose requested windows fail again (it flaps) is
  retried at once after the first such round, then after 1, 2, 4 ... minutes, at most
  an hour apart, until one of them loads.
- When every window recovery requested has loaded and nothing is left to do, the
  recovery alert goes out once ("plant_a is back; 7 windows backfilled" after failures,
  "plant_a caught up; ..." when the windows had simply never been pulled).
- Windows about to leave the horizon are requested before any other; those that still
  cannot be (held, or the source down) are announced once: past the horizon recovery no
  longer sees them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
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
    return min(BACKOFF_SECONDS * 2.0 ** (failed_rounds - 2), MAX_BACKOFF_SECONDS)


class Status(Enum):
    MISSING = "missing"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    MATERIALIZED = "materialized"


@dataclass(frozen=True)
class WindowState:
    """One window of the source within the horizon, oldest first in a plan's input.

    `permanent` only matters when FAILED; `expiring` says the window leaves the horizon soon.
    """

    key: str
    status: Status
    permanent: bool = False
    expiring: bool = False


@dataclass(frozen=True)
class Caps:
    """How much recovery may have in flight for one source, and how long one run may be."""

    windows_per_run: int
    runs_in_flight: int
    windows_in_flight: int


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
    is retried; `pending` maps requested windows to when they were requested and `runs`
    groups them by the run that carries them (a run is in flight while one of its windows
    is pending); `loaded` lists windows recovery requested that have since loaded; `held`
    lists windows already announced as needing a person, `expiring` those announced as
    leaving the horizon; `outage` says whether any requested window had failed (an outage,
    rather than windows that were simply never pulled); `failed_rounds` counts rounds in a
    row in which a requested window failed again, and nothing is requested before `retry_at`.
    """

    generation: int = 0
    pending: dict[str, float] = field(default_factory=dict)
    runs: dict[str, list[str]] = field(default_factory=dict)
    loaded: list[str] = field(default_factory=list)
    held: list[str] = field(default_factory=list)
    expiring: list[str] = field(default_factory=list)
    outage: bool = False
    failed_rounds: int = 0
    retry_at: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        if not text:
            return cls()
        data = json.loads(text)
        pending = {str(k): float(v) for k, v in data.get("pending", {}).items()}
        # a cursor written before ranges: each pending window was a run of its own
        runs = data.get("runs", {f"recover:{key}": [key] for key in pending})
        return cls(
            generation=int(data.get("generation", 0)),
            pending=pending,
            runs={str(k): [str(w) for w in v] for k, v in runs.items()},
            loaded=[str(k) for k in data.get("loaded", [])],
            held=[str(k) for k in data.get("held", [])],
            expiring=[str(k) for k in data.get("expiring", [])],
            outage=bool(data.get("outage", False)),
            failed_rounds=int(data.get("failed_rounds", 0)),
            retry_at=float(data.get("retry_at", 0.0)),
        )

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    def settle(self, key: str) -> None:
        """`key` is no longer pending: drop it, and its run once none of its windows is."""
        del self.pending[key]
        for run_key, keys in list(self.runs.items()):
            if key in keys:
                keys.remove(key)
                if not keys:
                    del self.runs[run_key]


@dataclass
class Plan:
    """The actions of one evaluation. `ranges` are the runs to request, oldest key first."""

    cursor: Cursor
    ranges: list[list[str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    after_outage: bool = False
    newly_held: list[str] = field(default_factory=list)
    newly_expiring: list[str] = field(default_factory=list)
    probe: Probe | None = None
    waiting: int = 0
    backing_off: float = 0.0  # seconds until recovery may request again

    @property
    def request(self) -> list[str]:
        """Every window requested, run by run."""
        return [key for keys in self.ranges for key in keys]

    def run_key(self, keys: Sequence[str]) -> str:
        span = keys[0] if len(keys) == 1 else f"{keys[0]}...{keys[-1]}"
        return f"recover:{span}:{self.cursor.generation}"

    def describe(self) -> str:
        """One line for the sensor tick: what was done and why."""
        if self.ranges:
            return (f"requested {len(self.request)} window(s) in {len(self.ranges)} run(s); "
                    f"{self.waiting} more waiting")
        if self.backing_off:
            return (f"{self.waiting} window(s) waiting; requested windows failed again "
                    f"{self.cursor.failed_rounds} rounds in a row, next try in "
                    f"{self.backing_off:.0f} s")
        if self.probe is not None and not self.probe.ok:
            return f"{self.waiting} window(s) waiting; source not answering: {self.probe.message}"
        if self.cursor.pending:
            return (f"{len(self.cursor.pending)} requested window(s) still loading in "
                    f"{len(self.cursor.runs)} run(s); {self.waiting} more waiting")
        if self.recovered:
            return f"caught up: {len(self.recovered)} window(s) backfilled"
        return "nothing to recover"


def stretches(windows: Sequence[WindowState], wanted: set[str], longest: int) -> list[list[str]]:
    """Unbroken runs of `wanted` windows, cut into pieces of at most `longest`, newest first.

    Each stretch is cut from its newest end, so the freshest data arrives first and only the
    oldest piece is short.
    """
    found: list[list[str]] = []
    current: list[str] = []
    for window in [*windows, None]:
        if window is not None and window.key in wanted:
            current.append(window.key)
            continue
        pieces = []
        while current:
            pieces.append(current[-longest:])
            current = current[:-longest]
        found = pieces + found  # `windows` go oldest first: later stretches are newer
    return found


def plan_recovery(
    cursor: Cursor,
    windows: Sequence[WindowState],
    caps: Caps,
    now: float,
    probe: Callable[[], Probe],
) -> Plan:
    """Decide this evaluation's requests and alerts; `windows` are the horizon's, oldest first."""
    by_key = {w.key: w for w in windows}
    cursor = replace(cursor, pending=dict(cursor.pending), loaded=list(cursor.loaded),
                     held=list(cursor.held), expiring=list(cursor.expiring),
                     runs={k: list(v) for k, v in cursor.runs.items()})  # the caller's stays
    plan = Plan(cursor=cursor)

    failed_again = loaded = False
    for key, requested_at in list(cursor.pending.items()):
        window = by_key.get(key)
        status = window.status if window else None
        if status is Status.MATERIALIZED:
            cursor.settle(key)
            cursor.loaded.append(key)
            loaded = True
        elif status is Status.FAILED or status is None:
            cursor.settle(key)  # failed again (or left the horizon): judged afresh below
            failed_again = failed_again or status is Status.FAILED
        elif status is Status.MISSING and now - requested_at > LAUNCH_GRACE_SECONDS:
            cursor.settle(key)
    if loaded:
        cursor.failed_rounds, cursor.retry_at = 0, 0.0
    elif failed_again:
        cursor.failed_rounds += 1
        cursor.retry_at = now + backoff(cursor.failed_rounds)

    held = [w.key for w in windows if w.status is Status.FAILED and w.permanent]
    plan.newly_held = [key for key in held if key not in cursor.held]
    cursor.held = held
    candidates = {
        w.key for w in windows
        if w.key not in cursor.pending
        and (w.status is Status.MISSING or (w.status is Status.FAILED and not w.permanent))
    }
    expiring = {w.key for w in windows if w.expiring}
    pieces = sorted(stretches(windows, candidates, caps.windows_per_run),
                    key=lambda keys: not expiring.intersection(keys))  # those first, then newest
    runs_room = max(0, caps.runs_in_flight - len(cursor.runs))
    windows_room = max(0, caps.windows_in_flight - len(cursor.pending))
    plan.waiting = len(candidates)

    if pieces and runs_room and windows_room and now < cursor.retry_at:
        plan.backing_off = cursor.retry_at - now
    elif pieces and runs_room and windows_room:
        plan.probe = probe()
        if plan.probe.ok:
            for piece in pieces[:runs_room]:
                taken = piece[-windows_room:]  # the newest end of the piece, if room is short
                if not taken:
                    break
                plan.ranges.append(taken)
                windows_room -= len(taken)
            plan.waiting -= len(plan.request)
            cursor.generation += 1
            for keys in plan.ranges:
                cursor.runs[plan.run_key(keys)] = list(keys)
                cursor.pending.update({key: now for key in keys})
            cursor.outage = cursor.outage or any(
                by_key[key].status is Status.FAILED for key in plan.request)

    lost = [w.key for w in windows if w.key in expiring and w.key not in cursor.pending
            and w.status in (Status.MISSING, Status.FAILED)]  # and not requested either
    plan.newly_expiring = [key for key in lost if key not in cursor.expiring]
    cursor.expiring = lost

    if not candidates and not cursor.pending and cursor.loaded:
        plan.recovered, plan.after_outage = cursor.loaded, cursor.outage
        cursor.loaded, cursor.outage = [], False
    return plan


def expiry_margin(horizon: timedelta) -> timedelta:
    """Windows this close to leaving the horizon unloaded are announced: a quarter of the
    horizon, at most a day, so there is time to act but a short outage cries no wolf."""
    return min(horizon / 4, timedelta(days=1))
