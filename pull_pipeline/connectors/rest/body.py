"""Reading an answer: parse the JSON (orjson) and find the list of records in it."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from pull_pipeline.connectors.base import find_records
from pull_pipeline.connectors.rest.client import excerpt
from pull_pipeline.connectors.rest.paths import MISSING, dig
from pull_pipeline.errors import PermanentSourceError


def parse_json(name: str, response: httpx.Response) -> Any:
    """The parsed body; a body that is not JSON (an HTML error page, say) is an error."""
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        pass
    content_type = response.headers.get("content-type") or "none"
    raise PermanentSourceError(
        f"{name}: the answer is not JSON (content-type {content_type}; it starts with "
        f"{excerpt(response.text)!r}); check url, and that the source answers JSON"
    )


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
