"""What a Dagster process keeps: its definitions, built once and out of the collector's way.

A code server or run worker keeps its definitions until it exits. With hundreds of sources
they are millions of objects, and three things about them cost CPU (README, Performance):

- Dagster calls a `@dg.definitions` function twice in one load (once to find what the
  module holds, once to build the repository), so everything was built twice;
  `once_per_load` returns the first build when nothing it is made from has changed.
- The collector's young generation fills every 700 allocations while millions of
  long-lived objects are created, and each full collection walks them all again;
  `once_per_load` raises that threshold while it builds, and puts it back after: kept
  raised for the process, it made a 1M-row run 50% slower (README, Performance).
- Once built, the definitions move to the permanent generation (`gc.freeze`), which
  collections skip from then on, so a run's own garbage is collected cheaply.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Hashable

import dagster as dg

from pull_pipeline.config.loader import config_path
from pull_pipeline.defs.run_scope import run_of_this_worker

# Young-generation threshold while the definitions are built: 10,000 container allocations,
# not 700.
LOADING_GC_THRESHOLD = 10_000

_last: tuple[Hashable, dg.Definitions] | None = None


def once_per_load(entry: str, build: Callable[[], dg.Definitions]) -> dg.Definitions:
    """`build()`, or what it returned last time if nothing it reads has changed since.

    What it reads is the config file, the environment, the command line and, in a run
    worker, its run (which sources it builds); any difference builds again."""
    global _last
    key = (entry, run_of_this_worker(sys.argv, os.environ), _config_text(),
           tuple(sorted(os.environ.items())), tuple(sys.argv))
    if _last is None or _last[0] != key:
        threshold = gc.get_threshold()
        gc.set_threshold(max(threshold[0], LOADING_GC_THRESHOLD), *threshold[1:])
        try:
            defs = build()
        finally:
            gc.set_threshold(*threshold)
        gc.freeze()
        _last = (key, defs)
    return _last[1]


def _config_text() -> tuple[str, str | None]:
    path = config_path()
    try:
        return str(path), path.read_text()
    except OSError:
        return str(path), None
