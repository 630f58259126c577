"""A demo "historian" database for the quick start: a SQLite file a `sql` source can pull.

`python -m pull_pipeline.demo.sqldb` creates or tops up `<state>/demo/historian.db`
(`$PULL_PIPELINE_HOME`, else `./.pull_pipeline`): table `readings(tag TEXT, recorded_at
INTEGER epoch seconds, value REAL)`, five sensors every 60 s from `--start` (default: three
days ago, midnight UTC) up to now. Values are a function of tag and time, so rerunning it
only adds the minutes that passed. A matching source:

    plant_sql:
      kind: sql
      url: sqlite:///.pull_pipeline/demo/historian.db
      query: >
        SELECT tag AS sensor_tag, recorded_at AS relative_time, value AS sensor_value
        FROM readings WHERE recorded_at >= :start AND recorded_at < :end
      time_unit: s
      partitions: {cadence: hourly, start: "<the --start date>"}
"""

from __future__ import annotations

import argparse
import math
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pull_pipeline.canonical import parse_instant
from pull_pipeline.config.loader import STATE_ENV

SENSORS = ("compressor_temp", "compressor_vibration", "chiller_supply_temp",
           "chiller_return_temp", "power_kw")
STEP_SECONDS = 60
DEFAULT_DAYS = 3
MAX_DAYS = 31  # a demo, not a load test: 31 days is already 223,200 rows


def default_path() -> Path:
    """`<state folder>/demo/historian.db`, the state folder as the project resolves it."""
    return Path(os.environ.get(STATE_ENV) or ".pull_pipeline") / "demo" / "historian.db"


def default_start() -> datetime:
    """Midnight UTC, three days ago: hours of data, not years."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return today - timedelta(days=DEFAULT_DAYS)


def value(index: int, t: int) -> float:
    """The reading of sensor `index` at epoch second `t` (deterministic, smooth)."""
    return round(40 + 10 * index + 5 * math.sin(t / 3600 + index), 3)


def build_historian(path: Path, start: datetime, end: datetime | None = None) -> int:
    """Create or top up the demo database with readings in `[start, end)`; return rows added.

    `end` defaults to now. Rows already present are kept, so the call is idempotent.
    """
    first = math.ceil(start.timestamp() / STEP_SECONDS) * STEP_SECONDS
    last = int(end.timestamp() if end else time.time())
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute(
            "CREATE TABLE IF NOT EXISTS readings (tag TEXT NOT NULL, recorded_at INTEGER NOT NULL,"
            " value REAL, PRIMARY KEY (tag, recorded_at)) WITHOUT ROWID"
        )
        db.execute("CREATE INDEX IF NOT EXISTS readings_recorded_at ON readings (recorded_at)")
        before = db.total_changes
        db.executemany(
            "INSERT OR IGNORE INTO readings (tag, recorded_at, value) VALUES (?, ?, ?)",
            (
                (tag, t, value(index, t))
                for t in range(first, last, STEP_SECONDS)
                for index, tag in enumerate(SENSORS)
            ),
        )
        added = db.total_changes - before
    db.close()
    return added


def main() -> None:
    parser = argparse.ArgumentParser(description="Create or top up the demo SQLite historian.")
    parser.add_argument("--path", type=Path, default=default_path())
    parser.add_argument(
        "--start", type=parse_instant, default=default_start(),
        help="first reading, ISO date or instant (UTC if no zone); default: 3 days ago",
    )
    args = parser.parse_args()
    if datetime.now(UTC) - args.start > timedelta(days=MAX_DAYS):
        parser.error(f"--start must be within {MAX_DAYS} days: the demo holds days, not years")
    added = build_historian(args.path, args.start)
    print(f"{args.path}: {added} readings added since {args.start.isoformat()}")
    print(f"url: sqlite:///{args.path.resolve()}")


if __name__ == "__main__":
    main()
