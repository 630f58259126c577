"""Every name Dagster shows for a source: asset keys, jobs, schedule, sensors, pool, tags, checks.

Users filter runs by these tags, bookmark these jobs and have sensors turned on under these
names, so they are part of the interface: they are spelled here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

# Run and asset tags.
SOURCE_TAG = "pull_pipeline/source"
TRIGGER_TAG = "pull_pipeline/trigger"  # what requested a run: schedule, recovery, archive
# Maintenance runs (replay, restore, archive export) work on data already taken and never
# call the source: the failure alert says to relaunch them, recovery ignores them.
MAINTENANCE_TAG = "pull_pipeline/operation"

# Asset checks.
HAS_ROWS_CHECK = "has_rows"
VALID_ROWS_CHECK = "valid_rows"
GAPS_CHECK = "gaps"
FRESHNESS_CHECK = "freshness"
CONFIG_CHECK = "valid_config"  # on `<source>/config`, the stand-in of a broken source

# Sensors shared by every source.
FAILURE_ALERT_SENSOR = "alert_on_run_failure"
POOL_LIMITS_SENSOR = "apply_pool_limits"
SINK_HEALTH_SENSOR = "sink_health"
SINK_POLICIES_JOB = "sink_policies"  # launched by sink_health: runs the policy jobs now


@dataclass(frozen=True)
class SourceNames:
    """The names of one source's definitions, derived from the source's name alone."""

    source: str

    @property
    def raw(self) -> dg.AssetKey:
        return dg.AssetKey([self.source, "raw"])

    @property
    def readings(self) -> dg.AssetKey:
        return dg.AssetKey([self.source, "readings"])

    @property
    def archive(self) -> dg.AssetKey:
        return dg.AssetKey([self.source, "archive"])

    @property
    def config(self) -> dg.AssetKey:
        """The one asset of a source whose config block is invalid: it shows the error."""
        return dg.AssetKey([self.source, "config"])

    @property
    def freshness_check(self) -> dg.AssetCheckKey:
        return dg.AssetCheckKey(self.readings, FRESHNESS_CHECK)

    @property
    def group(self) -> str:
        return self.source

    @property
    def pool(self) -> str:
        """The Dagster pool that limits how many steps hit this source at once."""
        return f"pull_pipeline_{self.source}"

    @property
    def pull_job(self) -> str:
        return f"pull_{self.source}"

    @property
    def replay_job(self) -> str:
        return f"replay_{self.source}"

    @property
    def restore_job(self) -> str:
        return f"restore_{self.source}"

    @property
    def restore_op(self) -> str:
        return f"restore_{self.source}_windows"

    @property
    def pull_schedule(self) -> str:
        return f"pull_{self.source}_schedule"

    @property
    def recovery_sensor(self) -> str:
        return f"recover_{self.source}"

    @property
    def freshness_sensor(self) -> str:
        return f"freshness_{self.source}"

    @property
    def config_sensor(self) -> str:
        return f"config_{self.source}"

    @property
    def export_sensor(self) -> str:
        return f"archive_{self.source}"


def source_of(key: dg.AssetKey) -> str:
    """The source an asset key belongs to (its first path element)."""
    return key.path[0]
