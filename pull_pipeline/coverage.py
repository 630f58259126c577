"""A picture of a window's coverage: one row per sensor, one cell per time slot.

Numbers ("3 sensors, 4,310 rows") hide which sensor went quiet and when; a grid shows it at
a glance. This module only renders: the counts per (sensor, slot) come from one GROUP BY on
the sink (`pull_pipeline.sink.coverage`). Pure, so it is tested without a database.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

SLOTS = 24
MAX_SENSORS_SHOWN = 20
MAX_TAG_CHARS = 24
FULL_SHARE = 0.9  # a slot with at least this share of the expected readings is full
FULL, PARTIAL, EMPTY = "█", "▒", "·"


@dataclass(frozen=True)
class Coverage:
    """Readings per sensor per slot of [start, end); `counts[tag][slot]`.

    A sensor with no reading in the span but some in the span before is listed with zeros,
    so a sensor that went silent for the whole window shows as an empty row.
    """

    start: datetime
    end: datetime
    slots: int
    counts: Mapping[str, list[int]]

    @property
    def slot(self) -> timedelta:
        return (self.end - self.start) / self.slots


@dataclass(frozen=True)
class Grid:
    """The rendered picture and the counts on-call filters by."""

    markdown: str
    sensors: int
    full: int  # sensors whose every slot is full
    with_holes: int  # sensors with an empty or partial slot


def cells(counts: list[int], expected: float) -> str:
    """One character per slot: full, partial or empty against `expected` readings.

    Rounded down, because slots and readings do not align: with a reading a minute, slots
    of 2.5 min hold 3, 2, 3, 2 readings, and all of them are full.
    """
    full = max(1, math.floor(expected * FULL_SHARE))
    return "".join(FULL if n >= full else PARTIAL if n else EMPTY for n in counts)


def expected_per_slot(counts: list[int], slot: timedelta, interval: timedelta | None) -> float:
    """Readings a full slot holds: from `expected_interval` when configured, else the
    sensor's own best slot (so a sensor reporting every 10 s and one every hour both fill)."""
    if interval is not None:
        return max(slot / interval, 1.0)
    return float(max(counts, default=0) or 1)


def render(coverage: Coverage, interval: timedelta | None = None) -> Grid:
    """The grid, worst sensors first, at most `MAX_SENSORS_SHOWN` rows plus a count."""
    rows = []
    for tag, counts in coverage.counts.items():
        line = cells(counts, expected_per_slot(counts, coverage.slot, interval))
        rows.append((line.count(FULL), tag, line))
    rows.sort()
    full = sum(score == coverage.slots for score, _, _ in rows)
    width = min(MAX_TAG_CHARS, max((len(tag) for _, tag, _ in rows), default=6))
    shown = [f"{_fit(tag, width)}  {line}" for _, tag, line in rows[:MAX_SENSORS_SHOWN]]
    left = len(rows) - len(shown)
    header = (f"{len(rows)} sensor(s), {full} full, {len(rows) - full} with holes; "
              f"{coverage.slots} slots of {_span(coverage.slot)} from "
              f"{coverage.start:%Y-%m-%d %H:%M} UTC ({FULL} full, {PARTIAL} partial, "
              f"{EMPTY} empty)")
    if left:
        header += f"; worst {len(shown)} shown, {left} more"
    picture = "\n".join(shown) if shown else "no sensor has readings in or before this window"
    return Grid(markdown=f"{header}\n\n```\n{picture}\n```", sensors=len(rows), full=full,
                with_holes=len(rows) - full)


def _fit(tag: str, width: int) -> str:
    return tag.ljust(width) if len(tag) <= width else tag[: width - 1] + "…"


def _span(value: timedelta) -> str:
    seconds = int(value.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"
