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
from contextlib import ExitStack
from dataclasses import dataclass, field

import pandas as pd
import pyarrow as pa

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors.base import Connector, raw_schema
from pull_pipeline.errors import SinkError, SourceError
from pull_pipeline.landing import LandingStore, WindowWriter
from pull_pipeline.retries import with_retries
from pull_pipeline.sink.timescale import LoadResult, SinkSession, TimescaleSink, Window
from pull_pipeline.validation import validate

log = logging.getLogger("pull_pipeline")


class EmptyWindowRefused(SourceError):
    """A window came back empty while the sink holds rows for it; they were kept."""


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
        ("read", "map", "validate", "delete", "load"), 0.0))
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
    """Fetch each window from the source and land it as received (one file per window).

    A transient failure refetches the window per the source's `retries:` (a connector that
    retries each request itself, as REST does, is not retried again here).
    """
    stats = LandStats()
    started = time.perf_counter()
    schema = raw_schema(source.fields)
    collector = CycleCollector()
    attempts = 1 if connector.retries_requests else None
    for window in windows:
        writer = with_retries(
            f"{name}: window {window.key}", source.retries,
            lambda window=window: _land_window(  # type: ignore[misc]
                name, connector, landing, window, schema, run_id, stats, collector),
            progress=progress, attempts=attempts)
        stats.rows += writer.rows
        stats.pages += writer.pages
        if not writer.rows:
            stats.empty_windows.append(window.key)
        stats.uris.append(landing.uri(name, window.key))
        progress(f"{name}: landed window {window.key}: {writer.rows} rows in {writer.pages} pages")
    stats.seconds = time.perf_counter() - started
    return stats


def _land_window(
    name: str, connector: Connector, landing: LandingStore, window: Window, schema: pa.Schema,
    run_id: str, stats: LandStats, collector: CycleCollector,
) -> WindowWriter:
    """One attempt at one window: the file appears only if the whole window arrived."""
    with landing.writer(name, window.key, schema, run_id) as writer:
        clock = time.perf_counter()
        for batch in connector.fetch(window.start, window.end):
            now = time.perf_counter()
            stats.phases["fetch"] += now - clock
            writer.write(batch)
            collector.streamed(batch.nbytes)
            clock = time.perf_counter()
            stats.phases["land"] += clock - now
    return writer


def load(
    name: str,
    source: SourceBase,
    landing: LandingStore,
    sink: TimescaleSink,
    windows: Sequence[Window],
    run_id: str = "",
) -> LoadStats:
    """Validate the landed windows and replace each in the sink in a transaction of its own.

    One bad window never sinks a range: every other window still loads and commits, and
    the error raised at the end names each window that did not and why. A window keeps its
    previous rows when its share of rejected rows is above `max_reject_ratio`
    (`RejectRatioExceeded`, its rejects still recorded) or when it came back with no row
    while it holds rows and `allow_empty_replace` is off (`EmptyWindowRefused`).
    """
    stats = LoadStats()
    started = time.perf_counter()
    collector = CycleCollector()
    problems = WindowProblems(name)
    with ExitStack() as connections:
        session: SinkSession | None = None

        def load_window(window: Window) -> LoadResult:
            nonlocal session
            if session is None:
                session = connections.enter_context(sink.session())
            try:
                return _load_window(name, source, landing, session, window, run_id, stats,
                                    collector, problems)
            except SinkError as exc:
                if exc.transient:  # the connection may be gone: the next attempt opens one
                    session = None
                raise

        for window in windows:
            try:
                result = with_retries(f"{name}: loading window {window.key}", source.retries,
                                      lambda window=window: load_window(window))  # type: ignore[misc]
            except SinkError as exc:
                if exc.transient:  # still unreachable, or a bound was hit: stop here
                    raise problems.then(exc) from None
                problems.failed[window.key] = str(exc)
                continue
            stats.result.add(result)
            if result.kept_instead_of_empty:
                problems.kept_instead_of_empty[window.key] = result.kept_instead_of_empty
    stats.phases["delete"] = stats.result.delete_seconds
    stats.seconds = time.perf_counter() - started
    problems.raise_if_any(source, sink.table, stats)
    return stats


def _load_window(
    name: str, source: SourceBase, landing: LandingStore, session: SinkSession,
    window: Window, run_id: str, stats: LoadStats, collector: CycleCollector,
    problems: WindowProblems,
) -> LoadResult:
    """Map, validate and replace one window in its own transaction; returns what it did."""
    fetched = rejected = 0
    pages = landing.pages(name, window.key)
    with session.load(name, [window], run_id, allow_empty=source.allow_empty_replace) as one:
        clock = time.perf_counter()  # after the window's delete, which is its own phase
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
            one.stage(checked.valid)
            one.quarantine(checked.rejects, window)
            clock = time.perf_counter()
            stats.phases["load"] += clock - now
            stats.observe(checked.valid)
            fetched += raw.num_rows
            rejected += checked.rejected
            if checked.rejected and len(stats.first_reasons) < 3:
                stats.first_reasons.extend(checked.rejects["reason"].head(3).tolist())
        over = bool(fetched) and rejected / fetched > source.max_reject_ratio
        if over:
            one.keep_previous_rows()
        clock = time.perf_counter()
    # Counted once the window's transaction committed: a retried attempt counts once.
    stats.phases["load"] += time.perf_counter() - clock
    stats.pages += pages
    stats.fetched += fetched
    stats.rejected_by_window[window.key] = rejected
    if over:
        problems.over_ratio.append(f"{window.key} ({rejected}/{fetched} = {rejected / fetched:.1%})")
    return one.result


@dataclass
class WindowProblems:
    """Windows of one load that did not replace their rows, and why; raised at the end."""

    name: str
    failed: dict[str, str] = field(default_factory=dict)
    over_ratio: list[str] = field(default_factory=list)
    kept_instead_of_empty: dict[str, int] = field(default_factory=dict)

    def then(self, error: SinkError) -> SinkError:
        """`error` (the load stopped there), mentioning windows that had failed before it."""
        if not self.failed:
            return error
        return type(error)(f"{error} Earlier: {self._failures()}")

    def raise_if_any(self, source: SourceBase, table: str, stats: LoadStats) -> None:
        name = self.name
        parts = []
        if self.failed:
            parts.append(self._failures())
        if self.over_ratio:
            example = f" First reason: {stats.first_reasons[0]}." if stats.first_reasons else ""
            parts.append(
                f"{name}: too many rows rejected in window {', '.join(self.over_ratio)}, above "
                f"max_reject_ratio {source.max_reject_ratio:.1%}; the window keeps its previous "
                f"rows and the rejects are in {table}_rejects (source = '{name}').{example} Fix "
                "the source's data or its fields/time_unit config, or raise max_reject_ratio.")
        if self.kept_instead_of_empty:
            kept = ", ".join(f"{key} ({rows} rows kept)"
                             for key, rows in self.kept_instead_of_empty.items())
            parts.append(
                f"{name}: the source returned no rows for window {kept}, which already held "
                "rows; they were kept, not replaced by nothing. If the source really has no "
                "data there any more (it keeps less history than this backfill or lookback "
                "reaches), set allow_empty_replace: true for this source, or leave the window")
        if not parts:
            return
        message = " ".join(parts)
        if self.failed:
            raise SinkError(message)
        if self.over_ratio:
            raise RejectRatioExceeded(message, stats)
        raise EmptyWindowRefused(message)

    def _failures(self) -> str:
        return " ".join(self.failed.values())  # each names its source and window
