"""Dagster side of alerting: throttle state in the instance, links into the UI, run failures.

The throttle state lives in the Dagster instance's key-value storage (SQLite by default,
PostgreSQL with dagster-postgres), so it survives daemon restarts and is shared by every
sensor process, unlike process memory.
"""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    PARTITION_NAME_TAG,
)

from pull_pipeline.alerts import Alerter, Throttle, channels_from_config, first_line
from pull_pipeline.config.models import AlertsConfig
from pull_pipeline.defs.naming import SOURCE_TAG, source_of

THROTTLE_PREFIX = "pull_pipeline/alert_throttle/"


class InstanceThrottleStore:
    """`ThrottleStore` on the instance's key-value table (the one Dagster's daemons use)."""

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.storage = instance.daemon_cursor_storage

    def last_sent(self, key: str) -> float | None:
        value = self.storage.get_cursor_values({THROTTLE_PREFIX + key}).get(THROTTLE_PREFIX + key)
        return float(value) if value else None

    def mark_sent(self, key: str, when: float) -> None:
        self.storage.set_cursor_values({THROTTLE_PREFIX + key: repr(when)})


def make_alerter(config: AlertsConfig, instance: dg.DagsterInstance) -> Alerter:
    """The alerter for this evaluation: channels resolved now, throttle state in the instance."""
    throttle = Throttle(InstanceThrottleStore(instance), config.throttle)
    return Alerter(channels_from_config(config), throttle)


def webui(config: AlertsConfig) -> str:
    return config.webui_url.rstrip("/")


def run_url(config: AlertsConfig, run_id: str) -> str:
    return f"{webui(config)}/runs/{run_id}"


def asset_url(config: AlertsConfig, key: dg.AssetKey) -> str:
    return f"{webui(config)}/assets/" + "/".join(quote(part) for part in key.path)


def run_partitions(run: dg.DagsterRun, partitions_def: dg.PartitionsDefinition | None) -> list[str]:
    """The windows a run covered: its partition, or every key of its partition range."""
    tags = run.tags
    if PARTITION_NAME_TAG in tags:
        return [tags[PARTITION_NAME_TAG]]
    start, end = tags.get(ASSET_PARTITION_RANGE_START_TAG), tags.get(ASSET_PARTITION_RANGE_END_TAG)
    if not (start and end):
        return []
    if partitions_def is None:
        return [start, end] if start != end else [start]
    return list(partitions_def.get_partition_keys_in_range(dg.PartitionKeyRange(start, end)))


@dataclass(frozen=True)
class RunFailure:
    """Why a run failed, as far as on-call needs it: the first line, and whether it may pass."""

    error: str
    transient: bool
    source: str | None = None


def run_failure(step_failures: Sequence[dg.DagsterEvent], run_message: str = "") -> RunFailure:
    """Summarize a failed run from its step failure events.

    A step failure is transient only when the asset marked it so (`transient: True` in the
    `dg.Failure` metadata: connection errors, 429, 5xx). Anything else (401, schema, reject
    ratio, a failed blocking check, a bug) needs a person. A run with no step failure died
    outside the steps (a crash, a lost worker): transient, and run retries handle it.
    """
    if not step_failures:
        return RunFailure(first_line(run_message), transient=True)
    errors: list[str] = []
    transient = True
    source = None
    for event in step_failures:
        data = event.step_failure_data
        user = data.user_failure_data
        metadata: Mapping[str, object] = user.metadata if user else {}
        flag = metadata.get("transient")
        transient = transient and bool(getattr(flag, "value", False))
        source = source or getattr(metadata.get("source"), "value", None)
        if user and user.description:
            errors.append(first_line(user.description))
        else:  # a framework error: its message (no traceback) is short, keep it on one line
            message = data.error.message if data.error else event.message or ""
            errors.append(first_line(" ".join(message.replace("dagster._core.errors.", "").split())))
    return RunFailure(next((e for e in errors if e), first_line(run_message)), transient, source)


def run_source(run: dg.DagsterRun, failure: RunFailure, sources: Sequence[str]) -> str | None:
    """The source of a run: its tag, the failure's metadata, or the assets it targeted."""
    candidates = [run.tags.get(SOURCE_TAG), failure.source]
    candidates += [source_of(key) for key in run.asset_selection or () if key.path]
    return next((name for name in candidates if name in sources), None)
