"""Human durations ("5min", "1 day", "90 days") as used throughout sources.yaml."""

from __future__ import annotations

import re
from datetime import timedelta

from pydantic import TypeAdapter, ValidationError

_UNITS = {
    "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hr": 3600, "hrs": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
}
_PATTERN = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_duration(value: object) -> timedelta:
    """Parse `10s`, `5min`, `2h`, `1 day`, `90 days`, ISO-8601, a number of seconds or a timedelta."""
    if isinstance(value, timedelta):
        return value
    if isinstance(value, bool):
        # ValueError, not TypeError: pydantic reports ValueErrors as validation errors.
        raise ValueError(f"expected a duration such as '5min' or '1 day', got {value!r}")  # noqa: TRY004
    if isinstance(value, (int, float)):
        return timedelta(seconds=value)
    if isinstance(value, str):
        match = _PATTERN.match(value)
        if match:
            number, unit = match.groups()
            factor = _UNITS.get(unit.lower() or "s")
            if factor is not None:
                return timedelta(seconds=float(number) * factor)
        try:  # ISO-8601 ("PT5M", "P7D"), as written back by model_dump(mode="json")
            return TypeAdapter(timedelta).validate_python(value)
        except ValidationError:
            pass
    raise ValueError(
        f"expected a duration such as '10s', '5min', '2h', '1 day' or '90 days', got {value!r}"
    )


def format_duration(value: timedelta) -> str:
    """Render a timedelta as a PostgreSQL interval literal ('3600 seconds')."""
    return f"{int(value.total_seconds())} seconds"
