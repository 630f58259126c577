"""Dotted paths into a parsed JSON body (`data`, `links.next`, `meta.cursor`).

One helper for `records_path`, `cursor_path` and `link_path`, so the three keys behave
the same way: `""` is the body itself, and a missing key is distinguishable from `null`.
"""

from __future__ import annotations

from typing import Any

MISSING: Any = object()


def dig(body: Any, path: str) -> Any:
    """The value at `path` in `body`, or `MISSING` when some key on the way is absent."""
    value = body
    for key in path.split(".") if path else ():
        if not isinstance(value, dict) or key not in value:
            return MISSING
        value = value[key]
    return value
