"""The two steps of a pull, without Dagster: land raw windows, then load readings.

`land` fetches windows from a connector into the landing store; `load` streams landed
windows through mapping and validation into the sink. The Dagster assets are thin wrappers
around these, and the benchmark and tests call them the same way.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pandas as pd

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors.base import Connector, raw_schema
from pull_pipeline.errors import SourceError
from pull_pipeline.landing import LandingStore
from pull_pipeline.sink.timescale import LoadResult, TimescaleSink, Window
from pull_pipeline.validation import validate

log = logging.getLogger("pull_pipeline")


class RejectRatioExceeded(SourceError):
    """Too many rows of a window failed validation; the window keeps its previous rows."""

    def __init__(self, message: str, stats: LoadStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass
class LandStats:
    rows: int = 0
    pages: int = 0
    seconds: float = 0.0
    uris: list[str] = field(default_factory=list)
    empty_windows: list[str] = field(default_factory=list)
    # fetch: waiting for and parsing the source's pages; land: writing them as Parquet.
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(("fetch", "land"), 0.0))


@dataclass
class LoadStats:
    fetched: int = 0
    pages: int = 0
    sensors: set[str] = field(default_factory=set)
    min_ts: pd.Timestamp | None = None
    max_ts: pd.Timestamp | None = None
    phases: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("read", "map", "validate", "load"), 0.0))
    result: LoadResult = field(default_factory=LoadResult)
    seconds: float = 0.0
    rejected_by_window: dict[str, int] = field(default_factory=dict)
    first_reasons: list[str] = field(default_factory=list)

    def observe(self, valid: pd.DataFrame) -> None:
        if valid.empty:
            return
        self.sensors.update(valid["sensor_tag"].unique())
        low, high = valid["ts"].min(), valid["ts"].max()
        self.min_ts = low if self.min_ts is None else min(self.min_ts, low)
        self.max_ts = high if self.max_ts is None else max(self.max_ts, high)


class CycleCollector:
    """Frees reference cycles as data streams, so that memory stays flat.

    Client libraries can leave each page in a reference cycle (httpx's response and its
    stream refer to each other and hold the body). Python frees cycles of older objects only
    in full collections, which its heuristics seldom start in a process that holds Dagster's
    ~300k long-lived objects: a 1M-row window's pages would pile up (+80 MB). A full pass over
    those objects costs 0.1-0.2 s, so the first collector freezes them instead (`gc.freeze`:
    they live as long as the run's process anyway, and a pass over them finds no garbage),
    after which a pass every few MB costs ~1 ms.
    """

    _frozen = False

    def __init__(self, every_bytes: int = 4 << 20) -> None:
        self.every_bytes = every_bytes
        self._pending = 0
        if not CycleCollector._frozen:
            gc.freeze()
            CycleCollector._frozen = True

    def streamed(self, nbytes: int) -> None:
        """Count `nbytes` of data handled; collect when enough has passed since last time."""
        self._pending += nbytes
        if self._pending >= self.every_bytes:
            self._pending = 0
            gc.collect()


def land(
    name: str,
    source: SourceBase,
    connector: Connector,
    landing: LandingStore,
    windows: Sequence[Window],
    run_id: str = "",
    progress: Callable[[str], None] = log.info,
) -> LandStats:
    """Fetch each window from the source and land it as received (one file per window)."""
    stats = LandStats()
    started = time.perf_counter()
    schema = raw_schema(source.fields)
    collector = CycleCollector()
    for window in windows:
        with landing.writer(name, window.key, schema, run_id) as writer:
            clock = time.perf_counter()
            for batch in connector.fetch(window.start, window.end):
                now = time.perf_counter()
                stats.phases["fetch"] += now - clock
                writer.write(batch)
                collector.streamed(batch.nbytes)
                clock = time.perf_counter()
                stats.phases["land"] += clock - now
        stats.rows += writer.rows
        stats.pages += writer.pages
        if not writer.rows:
            stats.empty_windows.append(window.key)
        stats.uris.append(landing.uri(name, window.key))
        progress(f"{name}: landed window {window.key}: {writer.rows} rows in {writer.pages} pages")
    stats.seconds = time.perf_counter() - started
    return stats


def load(
    name: str,
    source: SourceBase,
    landing: LandingStore,
    sink: TimescaleSink,
    windows: Sequence[Window],
    run_id: str = "",
) -> LoadStats:
    """Validate the landed windows and replace them in the sink in one transaction.

    Raises `RejectRatioExceeded` (after recording the rejects, with the windows' previous
    rows left in place) when a window's share of rejected rows is above `max_reject_ratio`.
    """
    stats = LoadStats()
    started = time.perf_counter()
    collector = CycleCollector()
    over: list[str] = []
    with sink.load(name, windows, run_id) as batch_load:
        for window in windows:
            fetched = rejected = 0
            stats.pages += landing.pages(name, window.key)
            clock = time.perf_counter()
            for raw in landing.read(name, window.key):
                collector.streamed(raw.nbytes)
                now = time.perf_counter()
                stats.phases["read"] += now - clock
                readings = to_canonical(raw, source)
                clock = time.perf_counter()
                stats.phases["map"] += clock - now
                checked = validate(readings, raw, source.fields, window.start, window.end)
                now = time.perf_counter()
                stats.phases["validate"] += now - clock
                batch_load.stage(checked.valid)
                batch_load.quarantine(checked.rejects, window)
                clock = time.perf_counter()
                stats.phases["load"] += clock - now
                stats.observe(checked.valid)
                fetched += raw.num_rows
                rejected += checked.rejected
                if checked.rejected and len(stats.first_reasons) < 3:
                    stats.first_reasons.extend(checked.rejects["reason"].head(3).tolist())
            stats.fetched += fetched
            stats.rejected_by_window[window.key] = rejected
            if fetched and rejected / fetched > source.max_reject_ratio:
                over.append(f"{window.key} ({rejected}/{fetched} = {rejected / fetched:.1%})")
        if over:
            batch_load.keep_previous_rows()
        clock = time.perf_counter()
    stats.phases["load"] += time.perf_counter() - clock
    stats.result = batch_load.result
    stats.seconds = time.perf_counter() - started
    if over:
        example = f" First reason: {stats.first_reasons[0]}." if stats.first_reasons else ""
        raise RejectRatioExceeded(
            f"{name}: too many rows rejected in window {', '.join(over)}, above "
            f"max_reject_ratio {source.max_reject_ratio:.1%}; the window keeps its previous rows "
            f"and the rejects are in {sink.table}_rejects (source = '{name}').{example} Fix the "
            "source's data or its fields/time_unit config, or raise max_reject_ratio.",
            stats,
        )
    return stats
