"""`pull-pipeline preview SOURCE --window KEY`: pull one window through the same connector,
mapping and validation as a run, and show the result without writing anything (no landing
file, no sink row). Exit status 1 when a run would fail the window (too many rejects).
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd
import pyarrow as pa

from pull_pipeline.canonical import to_canonical
from pull_pipeline.cli.output import emit, table, wrap
from pull_pipeline.cli.project import load
from pull_pipeline.cli.windows import RecentWindow
from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors import make_connector
from pull_pipeline.errors import ConfigError
from pull_pipeline.validation import validate


def run(args: argparse.Namespace) -> int:
    project = load(args.config)
    name = args.source
    config = project.config.sources.get(name)
    if config is None:
        raise ConfigError(f"no source named {name!r} in {project.path}; sources: "
                          f"{', '.join(project.config.sources) or 'none'}")
    window = window_of(name, config, args.window, project.where(name))
    resolved = resolve_env(config, where=project.where(name))
    progress = args.progress or sys.stderr.isatty()
    tally = Tally(limit=max(args.rows, 0))
    started = time.perf_counter()
    with make_connector(name, resolved, project.path) as connector:
        for batch in connector.fetch(window.start, window.end):
            tally.add(batch, resolved, window)
            if progress:
                emit(f"{name}: page {tally.pages}: {batch.num_rows} rows ({tally.fetched} so far, "
                     f"{time.perf_counter() - started:.1f} s)", sys.stderr)
    tally.seconds = time.perf_counter() - started
    return _report(name, resolved, window, tally)


def window_of(name: str, config: SourceBase, key: str, where: str | None = None) -> RecentWindow:
    """The window `[start, end)` of a partition key, exactly as Dagster reads it."""
    from pull_pipeline.defs.partitions import build_partitions  # Dagster: keys are its format

    partitions = build_partitions(config.partitions, name, where)
    try:
        span = partitions.time_window_for_partition_key(key)
        exact = partitions.get_partition_key_for_timestamp(span.start.timestamp()) == key
    except ValueError:
        exact = False
    if not exact or not partitions.has_partition_key(key):
        last = partitions.get_last_partition_key()
        raise ConfigError(
            f"{key!r} is not a window of {name}: its windows run from "
            f"{partitions.get_first_partition_key()} to {last or 'none yet'} "
            f"({config.partitions.cadence}), keyed like {last or partitions.fmt}")
    return RecentWindow(key, span.start, span.end)


@dataclass
class Tally:
    """What a run would report for the window, plus the first rows and rejects to show."""

    limit: int
    fetched: int = 0
    valid: int = 0
    rejected: int = 0
    pages: int = 0
    seconds: float = 0.0
    rows: list[list[str]] = field(default_factory=list)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    sensors: set[str] = field(default_factory=set)
    keys: list[np.ndarray] = field(default_factory=list)  # hashes of (sensor_tag, ts)
    min_ts: pd.Timestamp | None = None
    max_ts: pd.Timestamp | None = None

    def add(self, batch: pa.Table, config: SourceBase, window: RecentWindow) -> None:
        checked = validate(to_canonical(batch, config), batch, config.fields,
                           window.start, window.end)
        valid = checked.valid
        self.pages += 1
        self.fetched += batch.num_rows
        self.valid += len(valid)
        self.rejected += checked.rejected
        for tag, ts, value in valid.head(self.limit - len(self.rows)).itertuples(index=False):
            self.rows.append([str(tag), _iso(ts), repr(float(value))])
        for raw, reason in checked.rejects.head(self.limit - len(self.rejects)).itertuples(
                index=False):
            self.rejects.append((raw, reason))
        if len(valid):
            self.sensors.update(valid["sensor_tag"].unique())
            self.keys.append(pd.util.hash_pandas_object(valid[["sensor_tag", "ts"]],
                                                        index=False).to_numpy())
            low, high = valid["ts"].min(), valid["ts"].max()
            self.min_ts = low if self.min_ts is None else min(self.min_ts, low)
            self.max_ts = high if self.max_ts is None else max(self.max_ts, high)

    @property
    def deduplicated(self) -> int:
        """Repeated (sensor_tag, ts) pairs: the sink keeps the first copy of each."""
        return self.valid - (len(np.unique(np.concatenate(self.keys))) if self.keys else 0)


def _report(name: str, config: SourceBase, window: RecentWindow, tally: Tally) -> int:
    emit(f"{name}: window {window.key} = [{_iso(window.start)}, {_iso(window.end)})")
    if tally.rows:
        emit(f"\nfirst {len(tally.rows)} of {tally.valid} valid rows")
        for line in table(["sensor_tag", "ts", "sensor_value"], tally.rows):
            emit(line)
    if tally.rejects:
        emit(f"\nfirst {len(tally.rejects)} of {tally.rejected} rejects")
        for number, (raw, reason) in enumerate(tally.rejects, 1):
            for line in wrap(reason, 6, f"  {number}."):
                emit(line)
            emit(f"      {raw if len(raw) <= 74 else raw[:73] + '…'}")
    share = tally.rejected / tally.fetched if tally.fetched else 0.0
    limit = config.max_reject_ratio
    span = (f"{_iso(tally.min_ts)} .. {_iso(tally.max_ts)}"
            if tally.min_ts is not None and tally.max_ts is not None else "none")
    emit("\ntotals")
    for label, value in (
        ("fetched", f"{tally.fetched} rows in {tally.pages} pages/chunks, {tally.seconds:.2f} s"),
        ("valid", str(tally.valid)),
        ("rejected", f"{tally.rejected} ({share:.1%}; max_reject_ratio {limit:.1%})"),
        ("deduplicated", str(tally.deduplicated)),
        ("sensors", str(len(tally.sensors))),
        ("ts", span),
    ):
        emit(f"  {label:<13} {value}")
    if not tally.fetched:
        emit("\nthe source returned no rows for this window")
    emit("\nnothing was written: no landing file, no sink rows")
    if share > limit:
        emit(f"a run would fail this window: {share:.1%} of its rows are rejected, above "
             f"max_reject_ratio {limit:.1%}")
        return 1
    return 0


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
