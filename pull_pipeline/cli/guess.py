"""Read a source's answer the way a person would: where the records are, which field is
which, and what unit the times count.

Shared by `check` (to turn a wrong setting into the right one) and `init-source` (to write
a first config from one sample). Pure functions over parsed JSON or rows, no I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from statistics import median
from typing import Any

from pull_pipeline.canonical import UNIT_NS

UNIT_NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
_PREFERRED_LISTS = ("data", "items", "records", "results", "readings", "values", "rows")
_ROLE_NAMES = {
    "sensor_tag": re.compile(r"tag|sensor|name|point|channel|signal|metric|id", re.IGNORECASE),
    "relative_time": re.compile(r"time|^ts|ts$|stamp|date|epoch|_at$|^t$", re.IGNORECASE),
    "sensor_value": re.compile(r"value|^val|^v$|reading|measure", re.IGNORECASE),
}
_SAMPLE = 200  # values looked at per field


def list_paths(body: Any, depth: int = 4) -> list[tuple[str, int]]:
    """Dotted paths to every list in a JSON document, with its length ("" = the document)."""
    if isinstance(body, list):
        return [("", len(body))]
    found: list[tuple[str, int]] = []
    if isinstance(body, dict) and depth > 0:
        for key, value in body.items():
            for path, size in list_paths(value, depth - 1):
                found.append((f"{key}.{path}" if path else str(key), size))
    return found


def describe_lists(body: Any) -> str:
    """`data (50 items), meta.warnings (0 items)`, or `none` - for a hint."""
    paths = list_paths(body)
    return ", ".join(f"{path or '(top level)'} ({size} items)" for path, size in paths) or "none"


def guess_records_path(body: Any) -> str | None:
    """The list of objects most likely to hold the records: the longest, a usual name first."""
    candidates = [
        (size, _preferred(path), path) for path, size in list_paths(body)
        if all(isinstance(item, dict) for item in _at(body, path)[:_SAMPLE])
    ]
    if not candidates:
        return None
    return max(candidates)[2]


def records_at(body: Any, path: str) -> list[Any]:
    """The list at a path found by `list_paths`."""
    return _at(body, path)


def infer_time_unit(values: Iterable[Any], epoch: datetime, now: datetime) -> str | None:
    """`iso8601`, or the unit (`s`, `ms`, `us`, `ns`) whose count since `epoch` for the
    present matches the values' magnitude within a factor of 10; None when unclear.

    Seconds since 1970 for the present are ~1.7e9, ms ~1.7e12, us ~1.7e15, ns ~1.7e18.
    """
    numbers: list[float] = []
    texts = 0
    for value in _first(values):
        number = _number(value)
        if number is not None:
            numbers.append(abs(number))
        elif isinstance(value, (datetime, date)) or (isinstance(value, str) and _is_iso(value)):
            texts += 1
    if texts > len(numbers):
        return "iso8601"
    span = (now - epoch).total_seconds()
    typical = median(numbers) if numbers else 0.0
    if typical <= 0 or span <= 0:
        return None
    distance, unit = min(
        (abs(math.log10(typical) - math.log10(span * 1e9 / ns)), unit)
        for unit, ns in UNIT_NS.items()
    )
    return unit if distance <= 1.0 else None


def time_unit_problem(field: str, configured: str, values: Sequence[Any],
                      epoch: datetime, now: datetime) -> str | None:
    """The fix when `values` do not look like `time_unit: configured`, else None."""
    seen = infer_time_unit(values, epoch, now)
    if seen is None or seen == configured:
        return None
    if seen == "iso8601":
        return f"{field} holds ISO-8601 text ({_example(values)}); set time_unit: iso8601"
    if configured == "iso8601":
        return (f"{field} holds numbers ({_example(values)}) that look like {UNIT_NAMES[seen]}; "
                f"set time_unit: {seen}")
    return f"{field} looks like {UNIT_NAMES[seen]}; set time_unit: {seen}"


@dataclass(frozen=True)
class FieldGuess:
    """The source's names for the three canonical fields (None: no candidate found)."""

    sensor_tag: str | None
    relative_time: str | None
    sensor_value: str | None


def guess_fields(records: Sequence[dict[str, Any]], epoch: datetime, now: datetime) -> FieldGuess:
    """Pick the time field (epoch-sized numbers or ISO text), then a numeric value field and
    a text tag field among the rest; a usual name wins among fields of the right kind."""
    keys = list(dict.fromkeys(key for record in records[:_SAMPLE] for key in record))
    columns = {key: [record.get(key) for record in records[:_SAMPLE]] for key in keys}
    times = [k for k in keys if infer_time_unit(columns[k], epoch, now) is not None]
    time_key = _pick(times, "relative_time")
    rest = [k for k in keys if k != time_key]
    numbers = [k for k in rest if _all(columns[k], lambda v: _number(v) is not None)]
    value_key = _pick(numbers, "sensor_value")
    texts = [k for k in rest if k != value_key and _all(columns[k], lambda v: isinstance(v, str))]
    return FieldGuess(_pick(texts, "sensor_tag"), time_key, value_key)


def suggest_field(keys: Iterable[str], role: str) -> str | None:
    """A present field whose name fits `role` (for a hint next to a missing field)."""
    return _pick(list(keys), role, require_name=True)


def _pick(keys: list[str], role: str, require_name: bool = False) -> str | None:
    if role in keys:
        return role
    named = [key for key in keys if _ROLE_NAMES[role].search(key)]
    if named or require_name:
        return named[0] if named else None
    return keys[0] if keys else None


def _preferred(path: str) -> int:
    return int(path.rsplit(".", 1)[-1].lower() in _PREFERRED_LISTS)


def _at(body: Any, path: str) -> list[Any]:
    for key in path.split(".") if path else ():
        body = body[key]
    if not isinstance(body, list):  # never for a path from `list_paths`
        raise TypeError(f"{path or 'the document'} is {type(body).__name__}, not a list")
    return body


def _first(values: Iterable[Any]) -> list[Any]:
    found = []
    for value in values:
        if value is not None:
            found.append(value)
            if len(found) == _SAMPLE:
                break
    return found


def _all(values: list[Any], test: Any) -> bool:
    present = [v for v in values if v is not None]
    return bool(present) and all(test(v) for v in present)


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float, Decimal)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return None
        return number if math.isfinite(number) else None
    return None


def _is_iso(text: str) -> bool:
    try:
        datetime.fromisoformat(text.strip().replace("Z", "+00:00"))  # noqa: FURB162 - as canonical
    except ValueError:
        return False
    return True


def _example(values: Sequence[Any]) -> str:
    first = next((v for v in values if v is not None), None)
    return repr(first if not isinstance(first, (datetime, date)) else first.isoformat())
