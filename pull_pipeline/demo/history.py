"""How far back the demo sources go under `make dev`: within their recovery horizon.

sources.yaml gives the demo sources a fixed start date. Left as is, their history would grow
every day while recovery looks back only `recovery.horizon` (3 days), so every window older
than the horizon would stay missing for good. Under `make dev` the demo sources start at
midnight UTC the day before it started instead: at most two days of windows, all within the
horizon even after a day of running, so the demo ends fully green. The launcher sets `PULL_PIPELINE_DEMO_START` once, so
the webserver, the daemon and every run agree on the partitions, even past midnight.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from pull_pipeline.config.loader import Project

DEMO_SOURCES = ("demo_api", "demo_historian")
DEMO_START_ENV = "PULL_PIPELINE_DEMO_START"
HISTORY_DAYS = 1


def demo_start(now: datetime) -> str:
    """Midnight UTC `HISTORY_DAYS` days before `now`, as the config writes an instant."""
    midnight = now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight - timedelta(days=HISTORY_DAYS)).strftime("%Y-%m-%dT%H:%M:%SZ")


def with_demo_start(project: Project, start: str) -> Project:
    """The project with each demo source's `partitions.start` set to `start`."""
    sources = dict(project.config.sources)
    for name in DEMO_SOURCES:
        if name in sources:
            source = sources[name]
            partitions = source.partitions.model_copy(update={"start": start})
            sources[name] = source.model_copy(update={"partitions": partitions})
    return replace(project, config=project.config.model_copy(update={"sources": sources}))
