"""Example `kind: python` fetch functions, used by the tests and shown in the README.

A fetch function takes the window (`start`, `end`: timezone-aware UTC datetimes) and the
source's `options:` as keyword arguments, and returns or yields pandas DataFrames, Arrow
tables or lists of dicts whose columns are the source's field names (`fields:`).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

CALLS: list[dict[str, Any]] = []  # what each call received, for assertions
GONE = {"value": False}  # True: the source is down (every call raises)


def readings(start: datetime, end: datetime, site: str, step: timedelta) -> list[dict[str, Any]]:
    """Two sensors of `site`, one reading per `step`, in the vendor wire format."""
    rows, at = [], start
    while at < end:
        for n in (1, 2):
            rows.append({"sensor_tag": f"{site}_temp_{n}", "relative_time": int(at.timestamp()),
                         "sensor_value": round(at.minute + n / 10, 2)})
        at += step
    return rows


def fetch_pages(start: datetime, end: datetime, site: str = "north",
                page_minutes: int = 20) -> Iterator[pd.DataFrame]:
    """The typical shape: page through a client and yield one DataFrame per page."""
    CALLS.append({"start": start, "end": end, "site": site})
    if GONE["value"]:
        raise ConnectionError(f"historian for {site} is unreachable")
    page = timedelta(minutes=page_minutes)
    at = start
    while at < end:
        yield pd.DataFrame(readings(at, min(at + page, end), site, timedelta(minutes=5)))
        at += page


def fetch_frame(start: datetime, end: datetime, site: str = "north") -> pd.DataFrame:
    """Return the whole window as one DataFrame (fine for small windows)."""
    CALLS.append({"start": start, "end": end, "site": site})
    return pd.DataFrame(readings(start, end, site, timedelta(minutes=5)))


def fetch_records(start: datetime, end: datetime, site: str = "north") -> list[dict[str, Any]]:
    """Return a list of dicts, as a JSON API client would."""
    CALLS.append({"start": start, "end": end, "site": site})
    return readings(start, end, site, timedelta(minutes=5))


def fetch_record_pages(start: datetime, end: datetime) -> Iterator[list[dict[str, Any]]]:
    """Yield lists of dicts, one per page."""
    records = readings(start, end, "north", timedelta(minutes=5))
    yield records[:5]
    yield records[5:]


def fetch_nothing(start: datetime, end: datetime) -> None:
    """A window without data may return None."""


def fetch_strings(start: datetime, end: datetime) -> list[str]:
    """Wrong: neither DataFrames nor dicts."""
    return ["not", "records"]


def fetch_wrong_columns(start: datetime, end: datetime) -> pd.DataFrame:
    """Wrong: columns that are not the source's fields."""
    return pd.DataFrame({"tag": ["a"], "time": [0], "value": [1.0]})


def probe() -> None:
    """Optional, beside the fetch functions: raise if the source cannot be reached right now
    (recovery calls it after an outage before asking for the missed windows again)."""
    if GONE["value"]:
        raise ConnectionError("historian is unreachable")
