"""`kind: python` fetch functions for tests: data and call counts live in module state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

ROWS: list[dict[str, Any]] = []
CALLS: list[tuple[datetime, datetime]] = []


def reset(rows: list[dict[str, Any]]) -> None:
    ROWS[:] = rows
    CALLS.clear()


def hourly_rows(start: datetime, hours: int, sensors: int = 3, step_s: int = 60) -> list[dict]:
    """Readings every `step_s` seconds for `sensors` sensors over `hours` hours."""
    rows = []
    for second in range(0, hours * 3600, step_s):
        at = start + timedelta(seconds=second)
        for sensor in range(sensors):
            rows.append({"sensor_tag": f"sensor_{sensor}", "relative_time": int(at.timestamp()),
                         "sensor_value": round(second / 60 + sensor, 3)})
    return rows


def fetch(start: datetime, end: datetime, **options: Any) -> list[dict[str, Any]]:
    """Return the stored rows whose time falls in the window, like a well-behaved API."""
    CALLS.append((start, end))
    if options.get("fail_with"):
        raise RuntimeError(options["fail_with"])
    if len(CALLS) <= options.get("fail_first", 0):  # a source that drops its first calls
        raise ConnectionError("connection reset by peer")
    low, high = start.timestamp(), end.timestamp()
    return [row for row in ROWS if isinstance(row["relative_time"], str)
            or low <= row["relative_time"] < high]
