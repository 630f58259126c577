"""Reading an answer: parse the JSON (orjson) and find the list of records in it."""

from __future__ import annotations

import json
import math
from typing import Any

import orjson

from pull_pipeline.connectors.base import find_records
from pull_pipeline.connectors.rest.client import Answer, excerpt
from pull_pipeline.connectors.rest.paths import MISSING, dig
from pull_pipeline.errors import PermanentSourceError


def parse_json(name: str, answer: Answer) -> Any:
    """The parsed body; a body that is not JSON (an HTML error page, say) is an error.

    orjson first, for speed. A body it refuses goes to the standard library, which also
    reads the `NaN`, `Infinity` and `-Infinity` literals (Python's `json.dumps` writes them)
    and numbers beyond a double such as `1e309`: those stay as their text, so their rows
    land as received and validation rejects them while the rest of the window loads.
    """
    try:
        return orjson.loads(answer.content)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(answer.content, parse_constant=str, parse_float=_finite_or_text)
    except (ValueError, RecursionError):  # RecursionError: nesting deeper than Python's stack
        pass
    content_type = answer.response.headers.get("content-type") or "none"
    start = answer.content[:400].decode("utf-8", "replace")
    raise PermanentSourceError(
        f"{name}: the answer is not JSON (content-type {content_type}; it starts with "
        f"{excerpt(start)!r}); check url, and that the source answers JSON"
    )


def _finite_or_text(text: str) -> float | str:
    """A JSON number as a float, or as its text when no double holds it (1e309)."""
    value = float(text)
    return value if math.isfinite(value) else text


def records_in(name: str, body: Any, path: str | None) -> list[Any]:
    """The records at `records_path` ("" = the body itself); None means detect them."""
    if path is None:
        return _detect(name, body)
    records = dig(body, path)
    if records is MISSING:
        raise PermanentSourceError(
            f"{name}: records_path '{path}' is not in the answer ({_shape(body)}); "
            "set records_path to where the list of records is"
        )
    if records is None:
        return []
    if not isinstance(records, list):
        raise PermanentSourceError(
            f"{name}: records_path '{path}' holds {_kind(records)}, not a list of records"
        )
    return records


def _detect(name: str, body: Any) -> list[Any]:
    """A top-level list, or the one list-valued key of an object; anything else is ambiguous."""
    records = find_records(body)
    if records is not None:
        return records
    raise PermanentSourceError(
        f"{name}: cannot tell where the records are in the answer ({_shape(body)}); "
        "set records_path (\"\" for a top-level list, or a dotted path such as data.items)"
    )


def _shape(body: Any) -> str:
    if isinstance(body, dict):
        keys = ", ".join(repr(key) for key in list(body)[:20])
        lists = [key for key, value in body.items() if isinstance(value, list)]
        listed = ", ".join(lists) or "none"
        return f"it is an object with keys {keys or 'none'}; list-valued: {listed}"
    return f"it is {_kind(body)}"


def _kind(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
