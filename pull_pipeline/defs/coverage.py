"""The coverage grid on each `<source>/readings` materialization (see `pull_pipeline.coverage`)."""

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import dagster as dg

from pull_pipeline.coverage import render
from pull_pipeline.sink.coverage import count_coverage
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window


def coverage_metadata(
    sink: TimescaleSink, name: str, windows: Sequence[Window], interval: timedelta | None
) -> dict[str, Any]:
    """The grid of the run's span (one window, or a whole range) and its counts."""
    if not windows:
        return {}
    span = Window(windows[0].key, windows[0].start, windows[-1].end)
    grid = render(count_coverage(sink, name, span), interval)
    return {
        "coverage": dg.MetadataValue.md(grid.markdown),
        "sensors_full": grid.full,
        "sensors_with_holes": grid.with_holes,
    }
