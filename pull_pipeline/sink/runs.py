"""Sorted runs: validated rows buffered compactly, then loaded in primary-key order.

A run of rows sorted by (sensor_tag, ts) fills the primary-key index leaf after leaf.
Sorting a whole window at once loads it faster than separately sorted batches, and those
faster than rows in arrival (time) order (see README, Performance). The buffer keeps each
tag once (rows hold an int32 code), so a run costs about 20 bytes a row before it is
sorted, and the rows are encoded for COPY a slice at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pull_pipeline.sink.pgcopy import encode_readings

ENCODE_ROWS = 100_000  # rows encoded for COPY at a time


@dataclass(frozen=True)
class Span:
    """Where a run's keys lie: its time range and its (sensor_tag, ts) range.

    Two runs can share a key only if both ranges overlap. Time-ordered sources (every
    sensor, page after page) give disjoint time ranges, sensor-ordered ones disjoint key
    ranges; either way most runs need no savepoint.
    """

    low: int
    high: int
    first: tuple[str, int]
    last: tuple[str, int]

    def meets(self, other: Span) -> bool:
        return (self.low <= other.high and other.low <= self.high
                and self.first <= other.last and other.first <= self.last)


@dataclass(frozen=True)
class Run:
    """Rows ready to load: `order` lists them in key order, first copy of each key only."""

    tags: pa.Array  # the tag of each code
    codes: np.ndarray
    ts_us: np.ndarray
    values: np.ndarray
    order: np.ndarray

    @property
    def span(self) -> Span:
        first, last = self.order[0], self.order[-1]  # dropped repeats share kept rows' times
        return Span(int(self.ts_us.min()), int(self.ts_us.max()),
                    (self.tags[int(self.codes[first])].as_py(), int(self.ts_us[first])),
                    (self.tags[int(self.codes[last])].as_py(), int(self.ts_us[last])))

    def slices(self, rows: int = ENCODE_ROWS) -> Iterator[tuple[pa.Array, np.ndarray, np.ndarray]]:
        """(sensor_tag, ts, sensor_value) of `rows` rows at a time, in key order."""
        for first in range(0, len(self.order), rows):
            picked = self.order[first:first + rows]
            yield self.tags.take(self.codes[picked]), self.ts_us[picked], self.values[picked]

    def encoded(self, source: str | None = None) -> Iterator[pa.Buffer]:
        """The rows in binary COPY format (`[source,] sensor_tag, ts, sensor_value`), a slice
        at a time."""
        return (encode_readings(*columns, source) for columns in self.slices())


@dataclass(frozen=True)
class PreparedRun:
    """A window's whole batch as one run, sorted and COPY-encoded before its transaction
    opens: on the thread that validated it, while the sink thread loads the window before."""

    run: Run
    staged: int  # valid rows, repeated keys included
    source: str  # written into every row of `payload`
    payload: list[pa.Buffer]

    @property
    def rows(self) -> int:
        """The rows it loads: its valid rows less repeated keys."""
        return len(self.run.order)


def prepare(valid: pd.DataFrame, source: str) -> PreparedRun | None:
    """`valid` (a window's every valid row) ready for `WindowLoad.stage_prepared`; None if empty."""
    buffer = RunBuffer()
    if not valid.empty:
        buffer.add(valid)
    run = buffer.take()
    return None if run is None else PreparedRun(run, len(valid), source,
                                                list(run.encoded(source)))


class RunBuffer:
    """Validated batches of one load, kept until there are enough rows for a run."""

    def __init__(self) -> None:
        self._codes: dict[str, int] = {}
        self._batches: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        self.rows = 0

    def add(self, valid: pd.DataFrame) -> None:
        """Keep a batch's rows (`sensor_tag`, `ts`, `sensor_value`)."""
        tags = pa.array(valid["sensor_tag"], type=pa.large_string())  # Arrow-backed: no copy
        if isinstance(tags, pa.ChunkedArray):  # one dictionary for the batch, not one a chunk
            tags = tags.combine_chunks()
        encoded = pc.dictionary_encode(tags)
        local = np.fromiter(
            (self._codes.setdefault(tag, len(self._codes))
             for tag in encoded.dictionary.to_pylist()),
            dtype=np.int32, count=len(encoded.dictionary),
        )
        self._batches.append((
            local[encoded.indices.to_numpy(zero_copy_only=False)],
            valid["ts"].to_numpy(dtype="datetime64[us]").view("int64"),
            valid["sensor_value"].to_numpy(dtype="float64"),
        ))
        self.rows += len(valid)

    def clear(self) -> None:
        self._batches, self.rows = [], 0

    def take(self) -> Run | None:
        """The buffered rows as a run (stable key order, repeated keys dropped); empties it."""
        if not self._batches:
            return None
        codes, ts_us, values = (np.concatenate(column) for column in zip(*self._batches,
                                                                          strict=True))
        self.clear()
        tags = pa.array(list(self._codes), type=pa.large_string())
        rank = np.empty(len(tags), dtype=np.int32)  # each code's place in byte order of its tag
        rank[pc.sort_indices(tags).to_numpy()] = np.arange(len(tags), dtype=np.int32)
        keys = rank[codes]
        order = pc.sort_indices(pa.table({"tag": keys, "ts": ts_us}),
                                sort_keys=[("tag", "ascending"), ("ts", "ascending")]).to_numpy()
        return Run(tags, codes, ts_us, values, _first_copies(order, keys, ts_us))


def _first_copies(order: np.ndarray, keys: np.ndarray, ts_us: np.ndarray) -> np.ndarray:
    """`order` without rows repeating the previous row's key (the sort is stable)."""
    if len(order) < 2:
        return order
    sorted_ts = ts_us[order]
    repeat = sorted_ts[1:] == sorted_ts[:-1]
    if not repeat.any():
        return order
    sorted_keys = keys[order]
    repeat &= sorted_keys[1:] == sorted_keys[:-1]
    if not repeat.any():
        return order
    return order[np.concatenate(([True], ~repeat))]
