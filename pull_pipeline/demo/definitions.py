"""The code location `make dev` loads (workspace.yaml): the config, demo history bounded.

Other sources load exactly as written, and an invalid source is shown as broken beside the
others, as in `pull_pipeline.definitions`; see `pull_pipeline.demo.history` for why.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime

import dagster as dg

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_location
from pull_pipeline.defs.long_lived import once_per_load
from pull_pipeline.demo.history import DEMO_START_ENV, demo_start, with_demo_start


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` on demand, in the webserver, the daemon and every run."""
    start = os.environ.get(DEMO_START_ENV) or demo_start(datetime.now(UTC))
    return once_per_load(f"{__name__}:{start}", lambda: build_location(
        with_demo_start(load_project(contain=True), start)))
