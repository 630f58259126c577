"""Generated configs of N sources, for measuring what the code location costs per source.

Sources alternate between `kind: rest` and `kind: python` and cycle through the cadences,
each with freshness and recovery, and one `archive:` block for all: every source brings
every job, check, sensor and schedule a real one does. Nothing is contacted or loaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CADENCES = ("5min", "15min", "hourly", "daily")
FRESHNESS = {"5min": ("30min", "2h"), "15min": ("1h", "4h"), "hourly": ("3h", "12h"),
             "daily": ("2 days", "4 days")}


def fleet_source(number: int, start: str = "2026-01-01T00:00:00Z") -> dict[str, Any]:
    """The config of generated source `number`: REST when even, python when odd."""
    cadence = CADENCES[number % len(CADENCES)]
    warn, fail = FRESHNESS[cadence]
    common = {"partitions": {"cadence": cadence, "start": start, "lag": "1min"},
              "freshness": {"warn_after": warn, "fail_after": fail}}
    if number % 2:
        return {"kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_pages",
                "options": {"site": f"site_{number}"}, **common}
    return {"kind": "rest", "url": "http://127.0.0.1:9/readings",
            "window_params": {"start": "start", "end": "end"}, "window_format": "epoch_s",
            "records_path": "data", "time_unit": "s", **common}


def fleet_config(count: int, workdir: Path) -> dict[str, Any]:
    """A whole config of `count` sources named fleet_0000..., stores under `workdir`."""
    return {
        "sink": {"dsn": "postgresql://nobody@127.0.0.1:9/none", "table": "fleet_readings"},
        "landing": {"path": str(workdir / "landing")},
        "archive": {"path": str(workdir / "archive")},
        "sources": {f"fleet_{n:04d}": fleet_source(n) for n in range(count)},
    }


def write_fleet_config(count: int, workdir: Path) -> Path:
    """`workdir/sources.yaml` with `count` generated sources."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sources.yaml"
    path.write_text(yaml.safe_dump(fleet_config(count, workdir), sort_keys=False))
    return path
