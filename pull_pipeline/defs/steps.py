"""What every step of a source shares: the windows of its run, its source tag, and failures
that name it."""

import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta

import dagster as dg

from pull_pipeline.defs.naming import SOURCE_TAG
from pull_pipeline.durations import format_duration
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.redaction import redact
from pull_pipeline.windows import Window, beyond_retention

# Any Dagster context with `.log`: assets, ops (the restore job) and asset checks.
LoggingContext = dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext


def windows_for(
    partitions_def: dg.TimeWindowPartitionsDefinition, partition_keys: Sequence[str]
) -> list[Window]:
    """A run's partitions as UTC windows: one for a single run, many for a ranged backfill."""
    windows = []
    for key in partition_keys:
        span = partitions_def.time_window_for_partition_key(key)
        windows.append(
            Window(key, span.start.astimezone(UTC), span.end.astimezone(UTC))
        )
    return windows


def within_retention(
    context: LoggingContext, name: str, windows: list[Window], retention: timedelta | None
) -> tuple[list[Window], list[Window]]:
    """The run's windows the sink keeps, and those older than `sink.retention` (skipped).

    A window that ends before now - retention would be dropped again by TimescaleDB's
    retention policy right after the load, so a rerun, backfill or restore of it does
    nothing but say so: the step succeeds and names the skipped windows.
    """
    expired = beyond_retention(windows, retention, datetime.now(UTC))
    if expired and retention is not None:
        keys = [window.key for window in expired]
        context.log.warning(
            f"{name}: {len(keys)} window(s) ({keys[0]} .. {keys[-1]}) end before the sink's "
            f"retention horizon (sink.retention: {format_duration(retention)}): not pulled or "
            "loaded, since the retention policy would drop them again; raise sink.retention "
            "to keep older data")
    return [window for window in windows if window not in expired], expired


def tag_run_with_source(context: dg.AssetExecutionContext, name: str) -> None:
    """Give the run the `pull_pipeline/source` tag when whoever launched it did not.

    Schedules, sensors and the source's jobs tag their runs; the UI's Materialize button,
    `dagster asset materialize` and backfills of the implicit asset job do not, and on-call
    finds runs by this tag. A run that spans sources keeps the first one's name.
    """
    run = context.instance.get_run_by_id(context.run.run_id)  # fresh: an earlier step may have tagged it
    if run is None or run.tags.get(SOURCE_TAG):
        return
    context.instance.add_run_tags(run.run_id, {SOURCE_TAG: name})


@contextmanager
def failures_named(context: LoggingContext, name: str) -> Iterator[None]:
    """Turn any error into a `dg.Failure` with a redacted, source-naming message.

    Exceptions are not chained (`from None`): a library's exception text can carry a URL
    with a key in it, and Dagster would otherwise store it with the run.
    """
    try:
        yield
    except PullPipelineError as exc:
        transient = bool(getattr(exc, "transient", False))
        raise dg.Failure(
            description=str(exc),
            metadata={"source": name, "error": type(exc).__name__, "transient": transient},
        ) from None
    except dg.Failure:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug or library error: keep the trace, redacted
        context.log.error(redact("".join(traceback.format_exception(exc))))
        raise dg.Failure(
            description=redact(f"{name}: unexpected {type(exc).__name__}: {exc}"),
            metadata={"source": name, "error": type(exc).__name__, "transient": False},
        ) from None
