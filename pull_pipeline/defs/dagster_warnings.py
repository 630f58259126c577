"""Silence the two BetaWarnings Dagster raises for every source, and only those.

- `backfill_policy=` of `@asset`: deliberate (a ranged backfill of a source is one run);
  raised once per asset, three per source.
- `owners` of `SensorDefinition.__init__`: raised by Dagster itself when it copies a sensor
  that targets a job while binding resources; this project sets no owners.

Dagster's own `disable_dagster_warnings` resets the warnings registry many times per load, so
each would print once per asset or sensor, hundreds of lines for a fleet. The filters match
Dagster's exact messages; they cannot be limited to our modules, since Dagster attributes
these warnings to its own frames. Any other BetaWarning still shows.
"""

from __future__ import annotations

import warnings

import dagster as dg

KNOWN_BETA_MESSAGES = (
    r"Parameter `backfill_policy` of function `asset` is currently in beta",
    r"Parameter `owners` of initializer `SensorDefinition.__init__` is currently in beta",
)


def silence_known_beta_warnings() -> None:
    """Install the filters (idempotent: each replaces its earlier copy)."""
    for message in KNOWN_BETA_MESSAGES:
        warnings.filterwarnings("ignore", message=message, category=dg.BetaWarning)
