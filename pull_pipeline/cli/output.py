"""Everything the command line prints: redacted, and wrapped to fit 80 columns.

Every line goes through `redact` here, in one place, so no command can print a secret
(a key echoed in an error, a DSN's password) even by mistake.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TextIO

from pull_pipeline.redaction import redact

WIDTH = 80


class Status(IntEnum):
    """Ordered by severity, so a row's status is the worst of its lines."""

    OK = 0
    WARN = 1
    FAIL = 2

    @property
    def label(self) -> str:
        return {Status.OK: "ok", Status.WARN: "warn", Status.FAIL: "FAIL"}[self]


@dataclass
class Line:
    """One finding: what was seen, and what to change when it is not ok."""

    status: Status
    text: str
    hint: str | None = None


@dataclass
class Row:
    """One target of `check` (the config, a source, the sink) and its findings."""

    target: str
    summary: str
    lines: list[Line] = field(default_factory=list)

    @property
    def status(self) -> Status:
        return max((line.status for line in self.lines), default=Status.OK)

    def add(self, status: Status, text: str, hint: str | None = None) -> None:
        self.lines.append(Line(status, text, hint))


def emit(text: str = "", stream: TextIO | None = None) -> None:
    """Print redacted text (stdout by default)."""
    print(redact(text), file=stream or sys.stdout, flush=True)


def wrap(text: str, indent: int, first: str = "", width: int = WIDTH) -> list[str]:
    """`first` then `text`, wrapped at `width`; other lines (and each line of a multi-line
    text) start at `indent`.

    Only a word longer than a whole line (a long path) is split, so a `${NAME}` or a short
    URL stays whole and no line is wider than `width`.
    """
    lines: list[str] = []
    for paragraph in [part.strip() for part in text.splitlines()] or [""]:
        lines += textwrap.wrap(
            paragraph, width=width, initial_indent=(first if not lines else "").ljust(indent),
            subsequent_indent=" " * indent, break_on_hyphens=False,
        ) or ([first.rstrip()] if not lines else [])
    return lines


def render_rows(rows: Sequence[Row]) -> list[str]:
    """Rows as `STATUS target  summary`, findings indented below with their hints."""
    name_width = min(max((len(row.target) for row in rows), default=0), 24)
    lines: list[str] = []
    for row in rows:
        head = f"{row.status.label:<6}{row.target.ljust(name_width)}  "
        lines += wrap(row.summary, min(len(head), 32), head)
        for line in row.lines:
            lines += wrap(line.text, 12, f"      {line.status.label}")
            if line.hint:
                lines += wrap(line.hint, 18, "            hint:")
    return lines


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: int = 2) -> list[str]:
    """Left-aligned columns; the first column is cut (with …) so that a row fits the width."""
    widths = [max(len(str(cell)) for cell in column) for column in zip(headers, *rows)]
    room = WIDTH - indent - sum(widths[1:]) - 2 * (len(widths) - 1)
    widths[0] = max(8, min(widths[0], room))
    out = []
    for cells in (headers, *rows):
        first = str(cells[0])
        if len(first) > widths[0]:
            first = first[: widths[0] - 1] + "…"
        parts = [first.ljust(widths[0])] + [str(c).ljust(w) for c, w in zip(cells[1:], widths[1:])]
        out.append((" " * indent + "  ".join(parts)).rstrip())
    return out
