"""The benchmark workload: one daily window of sensors reading once a second (or every `step` s).

Deterministic: row `i` is sensor `i % sensors` at step `i // sensors` of the window, with
a value derived from `i` alone, so every run (and every machine) serves the same rows. The
expected checksum is computed here, from the generated arrays, independently of anything
the pipeline or PostgreSQL does with them.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property

import numpy as np
import numpy.typing as npt
import orjson

WINDOW_START = datetime(2024, 1, 1, tzinfo=UTC)
DAY_SECONDS = 86_400
# Checksum: a per-row mix of tag, time and value bits modulo a prime below 2**31, summed.
# Small enough that PostgreSQL's bigint and numpy's int64 compute it without overflow.
PRIME = 2_147_483_629


@dataclass(frozen=True)
class Checksum:
    """What a table must hold: the row count and an order-independent digest of the rows."""

    rows: int
    digest: int


@dataclass(frozen=True)
class Workload:
    """`rows` readings from at least 200 sensors, one per sensor every `step` s, in one day.

    A `step` above 1 spreads the rows over more of the day, so that shorter windows (hours)
    each get a share of them (the fleet benchmark's ranged backfill)."""

    rows: int
    min_sensors: int = 200
    step: int = 1

    @property
    def sensors(self) -> int:
        # More sensors rather than more seconds: the window must stay inside one daily partition.
        return max(self.min_sensors, math.ceil(self.rows * self.step / DAY_SECONDS))

    @property
    def start(self) -> datetime:
        return WINDOW_START

    @property
    def end(self) -> datetime:
        return WINDOW_START + timedelta(days=1)

    @property
    def partition_key(self) -> str:
        return WINDOW_START.strftime("%Y-%m-%d")

    @cached_property
    def tags(self) -> list[str]:
        return [f"line{k % 7}_sensor_{k:05d}" for k in range(self.sensors)]

    @cached_property
    def sensor_index(self) -> npt.NDArray[np.int32]:
        return (np.arange(self.rows, dtype=np.int64) % self.sensors).astype(np.int32)

    @cached_property
    def epoch_seconds(self) -> np.ndarray:
        steps = np.arange(self.rows, dtype=np.int64) // self.sensors
        return int(WINDOW_START.timestamp()) + steps * self.step

    @cached_property
    def values(self) -> np.ndarray:
        """Three-decimal values in [-500, 500]: exact in JSON, CSV and float8 text."""
        i = np.arange(self.rows, dtype=np.int64)
        return ((i * 2_654_435_761) % 1_000_003 - 500_000) / 1000

    def tag_array(self) -> np.ndarray:
        """The tag of every row (object array of str)."""
        return np.array(self.tags, dtype=object)[self.sensor_index]

    def pages(self, size: int, span: tuple[int, int] | None = None
              ) -> Iterator[list[dict[str, object]]]:
        """The rows as JSON-ready records, `size` per page, in time order; with `span`
        (epoch seconds, end excluded) only the rows of that window."""
        tags, times, values = self.tags, self.epoch_seconds, self.values
        index = self.sensor_index
        begin, stop = (0, self.rows) if span is None else np.searchsorted(times, span).tolist()
        for first in range(begin, stop, size):
            last = min(first + size, stop)
            yield [
                {"sensor_tag": tags[k], "relative_time": t, "sensor_value": v}
                for k, t, v in zip(
                    index[first:last].tolist(), times[first:last].tolist(),
                    values[first:last].tolist(), strict=True,
                )
            ]

    def page_bodies(self, size: int, span: tuple[int, int] | None = None) -> list[bytes]:
        """Every page as the REST server sends it: `{"data": [...], "next_page": n | null}`."""
        pages = list(self.pages(size, span))
        return [
            orjson.dumps({"data": records,
                          "next_page": number + 2 if number + 1 < len(pages) else None})
            for number, records in enumerate(pages)
        ]

    def window(self) -> tuple[int, int]:
        """The daily window in epoch seconds, as the REST source asks for it."""
        return int(self.start.timestamp()), int(self.end.timestamp())

    def checksum(self, shift_days: int = 0) -> Checksum:
        """The expected checksum of the sink's rows (see `CHECKSUM_SQL` for the other side);
        with `shift_days`, of the same rows that many days later (earlier if negative)."""
        tag_hash = np.array([_tag_hash(tag) for tag in self.tags], dtype=np.int64)
        micros = (self.epoch_seconds + shift_days * DAY_SECONDS) * 1_000_000
        mixed = (tag_hash[self.sensor_index] + micros * 31) % PRIME
        bits = self.values.view(np.int64) % PRIME
        rows = (mixed * (bits + 1)) % PRIME
        return Checksum(self.rows, int(rows.sum(dtype=np.int64)))


def _tag_hash(tag: str) -> int:
    return int(hashlib.md5(tag.encode()).hexdigest()[:7], 16)


# The same per-row mix in SQL; `{where}` selects the rows to check.
CHECKSUM_SQL = """
SELECT count(*), coalesce(sum(
    ((('x' || substr(md5(sensor_tag), 1, 7))::bit(28)::bigint
      + (extract(epoch FROM ts) * 1000000)::bigint * 31) %% {prime})
    * (((('x' || encode(float8send(sensor_value), 'hex'))::bit(64)::bigint %% {prime})
        + {prime}) %% {prime} + 1) %% {prime}
), 0)
FROM {table} {where}
"""
