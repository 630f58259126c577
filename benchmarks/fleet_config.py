"""The fleet benchmark's sources.yaml: N generated REST sources, and the backfill pair.

Every generated source is a REST source on the one loopback server, as a pull stack serving
many customers has them: cadences cycle through 5min, 15min, hourly and daily, each with
freshness, recovery (the defaults) and the archive (one `archive:` block for all), so the
code location holds every job, check, sensor and schedule a real source brings. Their
history starts `history_days` before today. The server answers their windows with empty
pages: they are loaded and ticked, never materialized.

The backfill pair (`backfill_hourly`, `backfill_daily`) serves the same rows as K hourly
windows or one daily window (see `benchmarks.fleet`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from benchmarks.run import rest_source

CADENCES = ("5min", "15min", "hourly", "daily")
EXPECTED_INTERVAL = {"5min": "10s", "15min": "30s", "hourly": "1min", "daily": "10min"}
FRESHNESS = {"5min": ("30min", "2h"), "15min": ("1h", "4h"), "hourly": ("3h", "12h"),
             "daily": ("2 days", "4 days")}
SINK_TABLE = "bench_readings"
BACKFILL_SOURCES = {"hourly": "backfill_hourly", "daily": "backfill_daily"}


def history_start(history_days: int) -> datetime:
    """Where the generated sources' history starts: midnight UTC, `history_days` ago."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=history_days)


def first_window(history_days: int) -> str:
    """The partition key of fleet_0000's first window (5-minute cadence): it has no rows."""
    return f"{history_start(history_days):%Y-%m-%d}-00:00"


def fleet_sources(count: int, url: str, history_days: int) -> dict[str, dict[str, Any]]:
    """`count` sources named fleet_0000..., cadences mixed, history from `history_days` ago."""
    start = history_start(history_days).strftime("%Y-%m-%dT%H:%M:%SZ")
    sources = {}
    for number in range(count):
        cadence = CADENCES[number % len(CADENCES)]
        warn, fail = FRESHNESS[cadence]
        sources[f"fleet_{number:04d}"] = {
            **rest_source(url, {"cadence": cadence, "start": start, "lag": "1min"}),
            "expected_interval": EXPECTED_INTERVAL[cadence],
            "freshness": {"warn_after": warn, "fail_after": fail},
        }
    return sources


def backfill_sources(url: str, partition_key: str) -> dict[str, dict[str, Any]]:
    """The same rows as hourly windows (a ranged run) and as one daily window."""
    return {name: rest_source(url, {"cadence": cadence, "start": partition_key})
            for cadence, name in BACKFILL_SOURCES.items()}


def write(path: Path, sink_dsn: str, workdir: Path, sources: dict[str, dict[str, Any]]) -> Path:
    """sources.yaml with `sources`, the sink and the landing and archive stores under `workdir`."""
    config = {
        "sink": {"dsn": sink_dsn, "table": SINK_TABLE},
        "landing": {"path": str(workdir / "landing")},
        "archive": {"path": str(workdir / "archive")},
        "sources": sources,
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path
