"""File names that carry a time: `readings_{%Y%m%d%H}.csv` -> 2024-01-01T00:00Z.

Each `{...}` holds a strftime format; the rest of the pattern is literal text. Times are
read in UTC unless the format has a `%z`. The pattern is matched against a file's path
relative to the source's folder, so a pattern may include subfolders (`{%Y/%m/%d}/x_{%H}.csv`).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

from pull_pipeline.errors import ConfigError

# strftime directive -> what it matches; others match the shortest run of anything.
_DIRECTIVES = {
    "Y": r"\d{4}", "y": r"\d{2}", "m": r"\d{1,2}", "d": r"\d{1,2}", "H": r"\d{1,2}",
    "M": r"\d{1,2}", "S": r"\d{1,2}", "j": r"\d{1,3}", "f": r"\d{1,6}",
    "z": r"(?:Z|[+-]\d{2}:?\d{2})", "b": r"[A-Za-z]{3}", "B": r"[A-Za-z]+", "%": "%",
}
_FIELD = re.compile(r"\{([^{}]+)\}")


class FilePattern:
    """Match file names against a pattern and read the time in them."""

    def __init__(self, pattern: str) -> None:
        parts = _FIELD.split(pattern)  # literal, format, literal, format, ..., literal
        self.formats = parts[1::2]
        if not self.formats:
            raise ConfigError(
                f"files pattern {pattern!r} has no {{strftime}} part; write for example "
                "'readings_{%Y%m%d%H}.csv', or omit pattern to window by the rows' timestamps")
        regex = "".join(
            re.escape(part) if i % 2 == 0 else f"({_format_regex(part)})"
            for i, part in enumerate(parts)
        )
        self.regex = re.compile(regex)
        self.prefix = parts[0]  # the literal start: lets S3 list only candidate keys
        self.pattern = pattern

    def time_of(self, name: str) -> datetime | None:
        """The UTC time in `name`, or None if it does not match the pattern."""
        match = self.regex.fullmatch(name)
        if not match:
            return None
        try:
            value = datetime.strptime("\x1f".join(match.groups()), "\x1f".join(self.formats))
        except ValueError:  # matches the shape but is no date, e.g. month 13
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _format_regex(fmt: str) -> str:
    out, i = [], 0
    while i < len(fmt):
        if fmt[i] == "%" and i + 1 < len(fmt):
            out.append(_DIRECTIVES.get(fmt[i + 1], ".+?"))
            i += 2
        else:
            out.append(re.escape(fmt[i]))
            i += 1
    return "".join(out)
