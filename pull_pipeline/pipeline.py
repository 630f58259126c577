"""The two steps of a pull, without Dagster: land raw windows, then load readings.

`land` fetches windows from a connector into the landing store; `load` streams landed
windows through mapping and validation into the sink. The Dagster assets are thin wrappers
around these, and the benchmark and tests call them the same way.
"""

from __future__ import annotations

import gc
import itertools
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TypeVar, cast

import pandas as pd
import pyarrow as pa

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors.base import Connector, raw_schema
from pull_pipeline.errors import PullPipelineError, SinkError, SourceError
from pull_pipeline.landing import READ_BATCH_ROWS, LandingStore, WindowWriter
from pull_pipeline.retries import with_retries
from pull_pipeline.sink.runs import PreparedRun, prepare
from pull_pipeline.sink.timescale import LoadResult, SinkSession, TimescaleSink
from pull_pipeline.validation import Checked, validate
from pull_pipeline.windows import Window

log = logging.getLogger("pull_pipeline")
T = TypeVar("T")
Outcome = LoadResult | SinkError  # a window's, from the sink thread
# The most rows small windows load together in one transaction (see `load`): what the
# step's thread and the sink thread then hold is about one read batch each.
GROUP_ROWS = READ_BATCH_ROWS
# A ranged run logs its landing progress at most this often (and its last window): every log
# line is an event Dagster writes to its storage, as costly as a window's materialization.
PROGRESS_SECONDS = 10.0


class EmptyWindowRefused(SourceError):
    """A window came back empty while the sink holds rows for it; they were kept."""


class RejectRatioExceeded(SourceError):
    """Too many rows of a window failed validation; the window keeps its previous rows."""

    def __init__(self, message: str, stats: LoadStats) -> None:
        super().__init__(message)
        self.stats = stats


@dataclass(frozen=True)
class LandedWindow:
    key: str
    uri: str
    rows: int
    pages: int


@dataclass
class LandStats:
    rows: int = 0
    pages: int = 0
    seconds: float = 0.0
    uris: list[str] = field(default_factory=list)
    # Each window as it lands: what a run that fails later still reports as landed.
    landed: list[LandedWindow] = field(default_factory=list)
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
    # Windows whose rows were replaced and committed, in order: what a run that fails later
    # still reports as loaded, so the partition status shows exactly what the sink holds.
    loaded_windows: dict[str, int] = field(default_factory=dict)  # key -> rows loaded

    def add_phases(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.phases[phase] = self.phases.get(phase, 0.0) + seconds

    def merge(self, window: LoadStats) -> None:
        """Count in a window's own figures (loaded on the sink thread) once it committed."""
        self.add_phases(window.phases)
        self.fetched += window.fetched
        self.pages += window.pages
        self.sensors |= window.sensors
        if window.min_ts is not None and window.max_ts is not None:
            self._widen(window.min_ts, window.max_ts)
        self.rejected_by_window.update(window.rejected_by_window)
        self.first_reasons.extend(window.first_reasons[:3 - len(self.first_reasons)])

    def observe(self, valid: pd.DataFrame) -> None:
        if valid.empty:
            return
        self.sensors.update(valid["sensor_tag"].unique())
        self._widen(valid["ts"].min(), valid["ts"].max())

    def _widen(self, low: pd.Timestamp, high: pd.Timestamp) -> None:
        self.min_ts = low if self.min_ts is None else min(self.min_ts, low)
        self.max_ts = high if self.max_ts is None else max(self.max_ts, high)


class CycleCollector:
    """Frees reference cycles as data streams, so that memory stays flat.

    Client libraries can leave each page in a reference cycle (httpx's response and its
    stream refer to each other and hold the body). Python frees cycles of older objects only
    in full collections, which its heuristics seldom start in a process that holds Dagster's
    hundreds of thousands of long-lived objects, so a big window's pages would pile up. A full
    pass over those objects is slow, so the first collector freezes them instead
    (`gc.freeze`: they live as long as the run's process anyway, and a pass over them finds
    no garbage), after which a pass every few MB is cheap (README, Performance).
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
    config: SourceBase,
    connector: Connector,
    landing: LandingStore,
    windows: Sequence[Window],
    run_id: str = "",
    progress: Callable[[str], None] = log.info,
    stats: LandStats | None = None,
    on_landed: Callable[[Window], None] | None = None,
) -> LandStats:
    """Fetch each window from the source and land it as received (one file per window).

    A transient failure refetches the window per the source's `retries:` (a connector that
    retries each request itself, as REST does, is not retried again here). Pass `stats` to
    keep what landed before an error: `stats.landed` grows window by window. `on_landed` is
    called with each window once its file is in place (`pull` hands it to the loader).
    """
    stats = stats if stats is not None else LandStats()
    started = time.perf_counter()
    schema = raw_schema(config.fields)
    collector = CycleCollector()
    attempts = 1 if connector.retries_requests else None
    reported = started
    for number, window in enumerate(windows, 1):
        writer = with_retries(
            f"{name}: window {window.key}", config.retries,
            lambda window=window: _land_window(  # type: ignore[misc]
                name, connector, landing, window, schema, run_id, stats, collector),
            progress=progress, attempts=attempts)
        stats.rows += writer.rows
        stats.pages += writer.pages
        if not writer.rows:
            stats.empty_windows.append(window.key)
        uri = landing.uri(name, window.key)
        stats.uris.append(uri)
        stats.landed.append(LandedWindow(window.key, uri, writer.rows, writer.pages))
        now = time.perf_counter()
        if number == len(windows) or now - reported >= PROGRESS_SECONDS:
            reported = now
            count = f" ({number}/{len(windows)})" if len(windows) > 1 else ""
            progress(f"{name}: landed window {window.key}{count}: {writer.rows} rows in "
                     f"{writer.pages} pages")
        if on_landed is not None:
            on_landed(window)
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
    config: SourceBase,
    landing: LandingStore,
    sink: TimescaleSink,
    windows: Iterable[Window],
    run_id: str = "",
    stats: LoadStats | None = None,
) -> LoadStats:
    """Validate the landed windows and replace them in the sink, committed a few at a time.

    One bad window never sinks a range: every other window still loads and commits, and
    the error raised at the end names each window that did not and why. A window keeps its
    previous rows when its share of rejected rows is above `max_reject_ratio`
    (`RejectRatioExceeded`, its rejects still recorded) or when it came back with no row
    while it holds rows and `allow_empty_replace` is off (`EmptyWindowRefused`). Pass
    `stats` to keep what loaded before an error: `stats.loaded_windows`.

    Small windows (one landed page each, with rows, under the reject ratio) load together,
    up to `partitions.windows_per_transaction` of them and `GROUP_ROWS` rows, in one
    transaction and one COPY: most of a small window's load is per-transaction round trips.
    If the sink refuses such a group, its windows load again one by one, so only the bad
    one fails. Any other window is a transaction of its own, streamed page by page.

    The transactions run one after the other on a sink thread, over one session, while this
    thread reads and validates what comes next (a one-page window is also sorted and
    encoded for COPY here, see `CheckedPage.prepared`): the sink's waits on the server
    overlap the Python work. At most one group (or window) is in flight while the next is
    gathered.
    """
    stats = stats if stats is not None else LoadStats()
    started = time.perf_counter()
    collector = CycleCollector()
    problems = WindowProblems(name)
    per_transaction = config.partitions.windows_per_transaction
    with ExitStack() as connections, ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"pp-sink-{name}") as sink_thread:
        session: SinkSession | None = None

        def in_session(work: Callable[[SinkSession], T]) -> T:
            nonlocal session
            if session is None:
                session = connections.enter_context(sink.session())
            try:
                return work(session)
            except SinkError as exc:
                if exc.transient:  # the connection may be gone: the next attempt opens one
                    session = None
                raise

        def alone(item: _Ahead) -> Sequence[Outcome]:
            pages = [item.pages]  # a retry reads the window again

            def attempt() -> LoadResult:
                read = pages.pop() if pages else checked_pages(
                    name, config, landing, item.window, item.own.phases, collector)
                return in_session(lambda one: _load_window(
                    name, config, one, read, item.window, run_id, item.own, problems,
                    item.landed_pages))

            return [with_retries(f"{name}: loading window {item.window.key}", config.retries,
                                 attempt)]

        def together(group: list[_Ahead]) -> Sequence[Outcome]:
            what = f"{name}: loading windows {group[0].window.key} to {group[-1].window.key}"
            try:
                return with_retries(what, config.retries, lambda: in_session(
                    lambda one: _load_together(name, config, one, group, run_id)))
            except SinkError as exc:
                if exc.transient or len(group) == 1:
                    raise
                log.warning("%s; loading the windows one by one", exc)
            outcomes: list[Outcome] = []
            for item in group:  # the sink refused one of them: only that one fails
                try:
                    outcomes.extend(together([item]))
                except SinkError as exc:
                    outcomes.append(exc)
                    if exc.transient:
                        break
            return outcomes

        def settle(items: list[_Ahead], done: Future[Sequence[Outcome]]) -> None:
            outcomes: Sequence[Outcome]
            try:
                outcomes = done.result()
            except SinkError as exc:
                outcomes = [exc]
            for item, outcome in zip(items, outcomes, strict=False):
                if isinstance(outcome, SinkError):
                    if outcome.transient:  # still unreachable, or a bound was hit: stop here
                        raise problems.then(outcome) from None
                    problems.failed[item.window.key] = str(outcome)
                    stats.add_phases(item.own.phases)
                    continue
                stats.merge(item.own)
                stats.result.add(outcome)
                if outcome.replaced:
                    stats.loaded_windows[item.window.key] = outcome.loaded
                if outcome.kept_instead_of_empty:
                    problems.kept_instead_of_empty[item.window.key] = (
                        outcome.kept_instead_of_empty)

        pending: tuple[list[_Ahead], Future[Sequence[Outcome]]] | None = None

        def send(items: list[_Ahead], work: Callable[[list[_Ahead]], Sequence[Outcome]]) -> None:
            nonlocal pending
            if pending is not None:
                settle(*pending)
            pending = (items, sink_thread.submit(work, items))

        group: list[_Ahead] = []
        for window in windows:
            try:
                item = _read_ahead(name, config, landing, window, collector)
            except BaseException:
                if group:  # what was read before the error still loads
                    send(group, together)
                if pending is not None:  # what committed before the error still counts
                    settle(*pending)
                raise
            if per_transaction > 1 and item.small(config):
                group.append(item)
                if len(group) < per_transaction and sum(
                        ahead.rows for ahead in group) < GROUP_ROWS:
                    continue
                send(group, together)
                group = []
                continue
            if group:
                send(group, together)
                group = []
            send([item], lambda items: alone(items[0]))
        if group:
            send(group, together)
        if pending is not None:
            settle(*pending)
    stats.phases["delete"] = stats.result.delete_seconds
    stats.seconds = time.perf_counter() - started
    problems.raise_if_any(config, sink.table, stats)
    return stats


class _Stopped(Exception):
    """The loader gave up: the fetching thread stops before its next window."""


def pull(
    name: str,
    config: SourceBase,
    connector: Connector,
    landing: LandingStore,
    sink: TimescaleSink,
    windows: Sequence[Window],
    run_id: str = "",
    progress: Callable[[str], None] = log.info,
    land_stats: LandStats | None = None,
    load_stats: LoadStats | None = None,
) -> PullPipelineError | None:
    """`land` and `load` window by window: window i loads while window i+1 is fetched.

    The source is read on a worker thread at most one window ahead of the loader (a window
    waits on disk, in the landing store, not in memory), so the first windows are in the
    sink while later ones are still being fetched, and the source's waits overlap the sink's
    work. Windows load over one sink session, small ones a group to a transaction (`load`).

    Returns the load's error (None when every window loaded), for the caller to report with
    the load; the sink failing never stops the landing. A window that cannot be fetched
    stops the fetching: the windows landed before it still load, then the fetch error is
    raised (a load error is then only logged).
    `land_stats.landed` and `load_stats.loaded_windows` say what was done either way.
    """
    land_stats = land_stats if land_stats is not None else LandStats()
    load_stats = load_stats if load_stats is not None else LoadStats()
    handoff: queue.Queue[Window | None] = queue.Queue(maxsize=1)
    stop, all_landed = threading.Event(), threading.Event()
    fetch_error: list[BaseException] = []

    def hand_over(window: Window | None) -> None:
        while not stop.is_set():
            try:
                handoff.put(window, timeout=0.2)
                return
            except queue.Full:
                continue
        raise _Stopped

    def fetch_ahead() -> None:
        try:
            land(name, config, connector, landing, windows, run_id, progress, land_stats,
                 on_landed=hand_over)
        except _Stopped:
            return
        except BaseException as exc:  # noqa: BLE001 - raised on the caller's thread below
            fetch_error.append(exc)
        try:
            hand_over(None)
        except _Stopped:
            pass

    def landed() -> Iterator[Window]:
        while (window := handoff.get()) is not None:
            yield window
        all_landed.set()

    fetcher = threading.Thread(target=fetch_ahead, name=f"pp-fetch-{name}", daemon=True)
    fetcher.start()
    load_error: PullPipelineError | None = None
    try:
        load(name, config, landing, sink, landed(), run_id, load_stats)
    except PullPipelineError as exc:
        load_error = exc
        if not all_landed.is_set():
            for _ in landed():  # the load stopped (the sink is gone): land the rest anyway
                pass
    finally:
        stop.set()
        fetcher.join()
    if fetch_error:
        if load_error is not None:
            progress(f"{name}: {load_error}")
        raise fetch_error[0]
    return load_error


@dataclass(frozen=True)
class CheckedPage:
    """One page of a landed window, mapped and validated; when it is the whole window, its
    valid rows also `prepared` for the sink (sorted and encoded off the sink thread)."""

    rows: int
    checked: Checked
    prepared: PreparedRun | None = None


def checked_pages(
    name: str, config: SourceBase, landing: LandingStore, window: Window,
    phases: dict[str, float], collector: CycleCollector,
) -> Iterator[CheckedPage]:
    """The window's landed pages, mapped and validated one at a time (timed into `phases`)."""
    clock = time.perf_counter()
    first = True
    for raw, last in landing.read(name, window.key):
        collector.streamed(raw.nbytes)
        now = time.perf_counter()
        phases["read"] += now - clock
        readings = to_canonical(raw, config)
        clock = time.perf_counter()
        phases["map"] += clock - now
        checked = validate(readings, raw, config.fields, window.start, window.end)
        now = time.perf_counter()
        phases["validate"] += now - clock
        prepared = prepare(checked.valid, name) if first and last else None
        clock = time.perf_counter()
        phases["load"] += clock - now
        first = False
        yield CheckedPage(raw.num_rows, checked, prepared)
        clock = time.perf_counter()


@dataclass
class _Ahead:
    """A window read ahead for the sink thread: its first page checked, the rest to follow."""

    window: Window
    first: CheckedPage | None
    pages: Iterator[CheckedPage]  # every page, the first included
    own: LoadStats  # the window's own figures, merged into the run's once it committed
    landed_pages: int

    @property
    def rows(self) -> int:
        return self.first.rows if self.first is not None else 0

    def small(self, config: SourceBase) -> bool:
        """Whether it can load in a group: one page, with valid rows, under the reject ratio."""
        page = self.first
        return page is not None and page.prepared is not None and not _over_ratio(
            config, page.checked.rejected, page.rows)


def _read_ahead(
    name: str, config: SourceBase, landing: LandingStore, window: Window,
    collector: CycleCollector,
) -> _Ahead:
    """The window with its first page already checked (the rest follow lazily)."""
    own = LoadStats()
    landed_pages = landing.pages(name, window.key)
    pages = checked_pages(name, config, landing, window, own.phases, collector)
    first = next(pages, None)
    if first is None:
        return _Ahead(window, None, pages, own, landed_pages)
    if first.prepared is not None:  # the whole window: let the reader close its file now
        next(pages, None)
        return _Ahead(window, first, iter([first]), own, landed_pages)
    return _Ahead(window, first, itertools.chain([first], pages), own, landed_pages)


def _load_window(
    name: str, config: SourceBase, session: SinkSession, pages: Iterable[CheckedPage],
    window: Window, run_id: str, stats: LoadStats, problems: WindowProblems, landed_pages: int,
) -> LoadResult:
    """Replace one window with its checked `pages` in its own transaction; returns what it
    did. `stats` is the window's own (merged into the run's by the caller)."""
    fetched = rejected = 0
    with session.load(name, [window], run_id, allow_empty=config.allow_empty_replace) as one:
        for page in pages:
            checked = page.checked
            now = time.perf_counter()
            if page.prepared is not None:
                one.stage_prepared(page.prepared)
            else:
                one.stage(checked.valid)
            one.quarantine(checked.rejects, window)
            stats.phases["load"] += time.perf_counter() - now
            _observe(stats, checked)
            fetched += page.rows
            rejected += checked.rejected
        over = _over_ratio(config, rejected, fetched)
        if over:
            one.keep_previous_rows()
        clock = time.perf_counter()
    # Counted once the window's transaction committed: a retried attempt counts once.
    stats.phases["load"] += time.perf_counter() - clock
    _count(stats, window, landed_pages, fetched, rejected)
    if over:
        problems.over_ratio.append(f"{window.key} ({rejected}/{fetched} = {rejected / fetched:.1%})")
    return one.result


def _load_together(
    name: str, config: SourceBase, session: SinkSession, group: Sequence[_Ahead], run_id: str,
) -> list[LoadResult]:
    """Replace small windows (`_Ahead.small`) in one transaction, their prepared rows in one
    COPY; returns what each did (the transaction's time shared out evenly)."""
    clock = time.perf_counter()
    with session.load(name, [item.window for item in group], run_id,
                      allow_empty=config.allow_empty_replace) as together:
        for item in group:
            page = cast(CheckedPage, item.first)
            together.stage_prepared(cast(PreparedRun, page.prepared))
            together.quarantine(page.checked.rejects, item.window)
    share = 1 / len(group)
    seconds = (time.perf_counter() - clock) * share
    results = []
    for item, previous in zip(group, together.previous_by_window, strict=True):
        page = cast(CheckedPage, item.first)
        prepared = cast(PreparedRun, page.prepared)
        item.own.phases["load"] += seconds
        _observe(item.own, page.checked)
        _count(item.own, item.window, item.landed_pages, page.rows, page.checked.rejected)
        results.append(LoadResult(
            staged=prepared.staged, loaded=prepared.rows, rejected=page.checked.rejected,
            replaced=True, previous=previous,
            delete_seconds=together.result.delete_seconds * share))
    return results


def _over_ratio(config: SourceBase, rejected: int, fetched: int) -> bool:
    """Whether a window rejected too many rows to replace its previous ones."""
    return bool(fetched) and rejected / fetched > config.max_reject_ratio


def _observe(stats: LoadStats, checked: Checked) -> None:
    stats.observe(checked.valid)
    if checked.rejected and len(stats.first_reasons) < 3:
        stats.first_reasons.extend(checked.rejects["reason"].head(3).tolist())


def _count(stats: LoadStats, window: Window, landed_pages: int, fetched: int,
           rejected: int) -> None:
    """Count a committed window's pages and rows into its own `stats`."""
    stats.pages += landed_pages
    stats.fetched += fetched
    stats.rejected_by_window[window.key] = rejected


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

    def raise_if_any(self, config: SourceBase, table: str, stats: LoadStats) -> None:
        name = self.name
        parts = []
        if self.failed:
            parts.append(self._failures())
        if self.over_ratio:
            example = f" First reason: {stats.first_reasons[0]}." if stats.first_reasons else ""
            parts.append(
                f"{name}: too many rows rejected in window {', '.join(self.over_ratio)}, above "
                f"max_reject_ratio {config.max_reject_ratio:.1%}; the window keeps its previous "
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
