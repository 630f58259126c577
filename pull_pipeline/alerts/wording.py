"""What each alert says: one function per situation, so on-call wording is reviewed in one place.

The sensors in `pull_pipeline.defs` decide *when* a situation arises and gather the facts
(source, windows, error, link); these functions turn the facts into an `Alert`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from pull_pipeline.alerts.message import Alert

RERUN_HINT = ("fix the cause, then rerun the failed partitions (asset page > Partitions > "
              "Materialize > backfill 'Failed and missing')")


def failure_next_step(maintenance: str | None, transient: bool, recovers: bool) -> str:
    """What happens to a failed run's windows, and what on-call should do about it.

    `maintenance` is the kind of a run that never calls the source (replay, restore,
    archive); `recovers` says whether the source's recovery sensor is on.
    """
    if maintenance:
        return f"{maintenance} runs are not retried automatically: launch it again"
    if not transient:
        return f"permanent, not retried automatically: {RERUN_HINT}"
    if recovers:
        return "transient: recovery pulls these windows again once the source answers"
    return f"transient, and automatic recovery is off: {RERUN_HINT}"


def run_failed(
    source: str, job: str, error: str, partitions: Sequence[str], link: str, next_step: str
) -> Alert:
    return Alert(
        kind="failed",
        source=source,
        summary=f"{source}: run of {job} failed",
        error=error,
        partitions=partitions,
        link=link,
        details=(("Next", next_step),),
    )


def stale(source: str, verdict: str, partitions: Sequence[str], link: str) -> Alert:
    return Alert(
        kind="stale",
        source=source,
        summary=f"{source} is stale: its newest due window has not landed",
        error=verdict,
        partitions=partitions,
        link=link,
    )


def recovered(source: str, partitions: Sequence[str], after_outage: bool, link: str) -> Alert:
    """After an outage the source is back; otherwise recovery filled windows that were missing."""
    summary = (f"{source} is back; {len(partitions)} windows backfilled" if after_outage else
               f"{source} caught up; {len(partitions)} missing windows backfilled")
    return Alert(kind="recovered", source=source, summary=summary, partitions=partitions,
                 link=link)


def held(source: str, partitions: Sequence[str], error: str, link: str) -> Alert:
    """Windows that failed permanently: recovery leaves them to a person."""
    return Alert(
        kind="attention",
        source=source,
        summary=f"{source}: {len(partitions)} window(s) failed permanently; automatic "
        "recovery will not retry them",
        error=error,
        partitions=partitions,
        link=link,
        details=(("Next", RERUN_HINT),),
    )


def probe_refused(source: str, waiting: int, error: str, link: str) -> Alert:
    return Alert(
        kind="attention",
        source=source,
        summary=f"{source}: the source refuses the recovery probe; {waiting} window(s) wait",
        error=error,
        link=link,
    )


def invalid_config(source: str, error: str, fix: str, link: str) -> Alert:
    """A source left out of the code location because its config block is invalid."""
    return Alert(
        kind="attention",
        source=source,
        summary=f"{source}: invalid config; this source is not loaded (the others run)",
        error=error,
        link=link,
        details=(("Next", fix),),
    )


def leaving_horizon(source: str, partitions: Sequence[str], horizon: timedelta, link: str) -> Alert:
    """Windows still not loaded that recovery will stop seeing once they pass its horizon."""
    return Alert(
        kind="attention",
        source=source,
        summary=f"{source}: {len(partitions)} window(s) about to leave the recovery horizon "
        "unloaded; after that nothing retries them",
        error=f"not loaded, and soon older than recovery.horizon ({_span(horizon)})",
        partitions=partitions,
        link=link,
        details=(("Next", f"{RERUN_HINT}, or lengthen recovery.horizon"),),
    )


def _span(value: timedelta) -> str:
    """`7 days`, `36 hours` or `90 min`: as a config would write it."""
    minutes = int(value.total_seconds() // 60)
    if minutes % 1440 == 0:
        return f"{minutes // 1440} day{'s' if minutes != 1440 else ''}"
    return f"{minutes // 60} hours" if minutes % 60 == 0 else f"{minutes} min"


def policy_needs_attention(table: str, problem: str, repair: bool) -> Alert:
    """A TimescaleDB policy job of the readings table failed, is overdue or is paused."""
    return Alert(
        kind="attention",
        source="sink",
        summary=f"sink: a policy job of {table} needs attention",
        error=problem,
        details=(("Next", "sink_policies runs it now" if repair else
                  "run it by hand (sink.repair_policies is off)"),),
    )
