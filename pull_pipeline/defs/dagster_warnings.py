"""Silence the warnings Dagster raises for every source or schedule, and only those.

- BetaWarning, `backfill_policy=` of `@asset`: deliberate (a ranged backfill of a source is
  one run); raised once per asset, three per source.
- BetaWarning, `owners` of `SensorDefinition.__init__`: raised by Dagster itself when it
  copies a sensor that targets a job while binding resources; this project sets no owners.
- PreviewWarning, `partitions_def` on an `AssetCheckSpec`: deliberate (the gap check is
  evaluated per window, so each verdict belongs to its partition); once per source.
- DeprecationWarning, `ScheduleDefinition.environment_vars`: Dagster's own snapshot code
  reads it once per schedule; this project never sets it.

Dagster's own `disable_dagster_warnings` resets the warnings registry many times per load, so
each would print once per asset or sensor, hundreds of lines for a fleet. The filters match
Dagster's exact messages; they cannot be limited to our modules, since Dagster attributes
these warnings to its own frames. Any other warning still shows.
"""

from __future__ import annotations

import warnings

import dagster as dg

KNOWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (dg.BetaWarning, r"Parameter `backfill_policy` of function `asset` is currently in beta"),
    (dg.BetaWarning,
     r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta"),
    (dg.PreviewWarning, r"Specifying a partitions_def on an AssetCheckSpec is currently in preview"),
    (DeprecationWarning, r"Property `ScheduleDefinition.environment_vars` is deprecated"),
)


def silence_known_warnings() -> None:
    """Install the filters (idempotent: each replaces its earlier copy)."""
    for category, message in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category)
