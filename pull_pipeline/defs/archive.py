"""Archive export and restore in Dagster: thin wiring around `pull_pipeline.archive`.

Per source with `archive:` configured, all partitioned like the source:
- asset `<source>/archive`: exports the window, verified;
- sensor `archive_<source>`: exports windows older than `export_after`, oldest first, one
  range run of the asset at a time (no job of its own: see `defs/jobs.py`);
- job `restore_<source>`: loads archived windows back into the sink.

No `from __future__ import annotations` here: Dagster inspects the `context` annotation.
"""

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from pull_pipeline.archive import (
    ArchiveStore,
    ExportPolicy,
    ExportReport,
    export_windows,
    restore_windows,
)
from pull_pipeline.config.loader import Project
from pull_pipeline.config.models import ArchiveConfig
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.executor import IN_PROCESS
from pull_pipeline.defs.jobs import run_tags
from pull_pipeline.defs.naming import MAINTENANCE_TAG, SOURCE_TAG
from pull_pipeline.defs.partitions import complete_windows
from pull_pipeline.defs.resources import S3Settings, fixed
from pull_pipeline.defs.sensors import sensor_status
from pull_pipeline.defs.signatures import signed
from pull_pipeline.defs.statuses import partition_statuses
from pull_pipeline.defs.steps import failures_named, windows_for, within_retention
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.storage import is_s3_url
from pull_pipeline.windows import Window


class ArchiveResource(dg.ConfigurableResource):
    """The archive path and policy. `s3` keeps `${NAME}` placeholders unresolved, so no
    credential is ever part of Dagster's resource config."""

    path: str
    s3: S3Settings | None = None
    export_after_seconds: float
    drop_after_export: bool = False

    @classmethod
    def from_config(cls, config: ArchiveConfig, path: str) -> "ArchiveResource":
        return cls(
            path=path,
            s3=S3Settings.from_config(config.s3),
            export_after_seconds=config.export_after.total_seconds(),
            drop_after_export=config.drop_after_export,
        )

    def store(self) -> ArchiveStore:
        return ArchiveStore.open(self.path, self.s3.to_config() if self.s3 else None)

    def policy(self) -> ExportPolicy:
        return ExportPolicy(timedelta(seconds=self.export_after_seconds), self.drop_after_export)


def build_archive_asset(ctx: SourceContext, config: ArchiveConfig) -> dg.AssetsDefinition:
    name, names, partitions_def = ctx.name, ctx.names, ctx.partitions_def

    @dg.asset(
        key=names.archive,
        deps=[names.readings],
        partitions_def=partitions_def,
        # A ranged backfill is one run; a rerun skips windows already archived.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=names.group,
        kinds={"parquet", "s3" if is_s3_url(config.path) else "file"},
        tags={SOURCE_TAG: name},
        description=f"{name}: the window exported from the sink to the archive as Parquet and "
        "verified (row count + checksum); dropped from the sink afterwards when "
        "archive.drop_after_export is set.",
    )
    @signed
    def archive(
        context: dg.AssetExecutionContext, sink: dg.ResourceParam[TimescaleSink],
        archive: ArchiveResource,
    ) -> dg.MaterializeResult:
        windows = windows_for(partitions_def, context.partition_keys)
        with failures_named(context, name):
            store = archive.store()
            report = export_windows(name, windows, sink, store, archive.policy(),
                                    context.run.run_id, progress=context.log.info)
        location = store.uri(name, windows[0].key) if len(windows) == 1 else store.source_uri(name)
        return dg.MaterializeResult(metadata=export_metadata(report, location))

    return archive


def export_metadata(report: ExportReport, location: str) -> dict[str, Any]:
    return {
        "windows": report.windows,
        "exported": len(report.exported),
        "already_archived": len(report.already_archived),
        "already_dropped": len(report.already_dropped),
        "rows_exported": report.rows_exported,
        "windows_dropped": len(report.dropped_windows),
        "rows_dropped": report.rows_dropped,
        "chunks_dropped": report.chunks_dropped,
        "archive": dg.MetadataValue.path(location),
    }


# One tick looks at most this many windows from its cursor on (17 days of 5-minute windows,
# 7 months of hourly ones), so a tick costs the same after years of history.
SCAN_WINDOWS = 5000
_SETTLED = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.FAILED)


def windows_to_export(
    keys: Sequence[str],
    readings: Mapping[str, dg.AssetPartitionStatus | None],
    archived: Mapping[str, dg.AssetPartitionStatus | None],
    limit: int,
) -> list[str]:
    """The oldest unbroken stretch of windows (at most `limit`) loaded but not yet archived.

    Unbroken, because one run exports a range and would otherwise also try the windows in
    between; a window whose export failed is left to a person (it is in the run's failure).
    """
    done = (*_SETTLED, dg.AssetPartitionStatus.IN_PROGRESS)
    stretch: list[str] = []
    for key in keys:
        due = readings.get(key) == dg.AssetPartitionStatus.MATERIALIZED and archived.get(key) not in done
        if due:
            stretch.append(key)
        if stretch and (not due or len(stretch) == limit):
            break
    return stretch


def first_unsettled(
    keys: Sequence[str],
    readings: Mapping[str, dg.AssetPartitionStatus | None],
    archived: Mapping[str, dg.AssetPartitionStatus | None],
) -> str | None:
    """The oldest window the sensor must see again: loading, or loaded and not yet archived
    (or being archived). Archived windows, failed exports (left to a person) and windows
    never loaded are behind it for good."""
    for key in keys:
        if readings.get(key) == dg.AssetPartitionStatus.IN_PROGRESS:
            return key
        if readings.get(key) == dg.AssetPartitionStatus.MATERIALIZED and archived.get(key) not in _SETTLED:
            return key
    return None


def cursor_start(name: str, cursor: str | None, start: datetime) -> datetime:
    """Where a tick of `archive_<name>` starts looking: its cursor, never before `start`.

    A cursor set by hand that is not a time fails the tick with what to do; one without a
    zone is UTC, as every time here."""
    if not cursor:
        return start
    try:
        at = datetime.fromisoformat(cursor)
    except ValueError:
        raise ValueError(
            f"{name}: the cursor of archive_{name} is {cursor[:40]!r}, not a window start "
            "(ISO 8601, e.g. 2024-01-01T00:00:00+00:00); set one, or clear it in the UI "
            "(Automation > archive sensor > Set cursor value) to look again from the start"
        ) from None
    return max(at if at.tzinfo else at.replace(tzinfo=UTC), start)


def build_export_sensor(ctx: SourceContext, config: ArchiveConfig) -> dg.SensorDefinition:
    """`archive_<source>`: exports windows once they are older than `export_after`.

    Its cursor is where the next tick starts looking (a window start, ISO 8601): every
    window before it is archived, failed to export, or was never loaded. A tick looks at
    `SCAN_WINDOWS` windows from there at most, then moves the cursor to the first window it
    must see again, or past the windows it looked at.
    """
    name, names, partitions_def = ctx.name, ctx.names, ctx.partitions_def
    off = ctx.config.paused or not config.auto_export
    first = partitions_def.get_first_partition_window()
    scan = (first.end - first.start) * SCAN_WINDOWS if first is not None else timedelta(0)

    @dg.sensor(
        name=names.export_sensor,
        asset_selection=dg.AssetSelection.assets(names.archive),
        minimum_interval_seconds=15 * 60,
        default_status=sensor_status(off),
        description=f"Exports windows of {name} older than {config.export_after} to the "
        f"archive, oldest first, up to {config.windows_per_run} windows a run, one run at a "
        f"time. Its cursor is where it looks next; clear it to look again from the start.",
    )
    def export(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if off:
            return dg.SensorResult(skip_reason=f"automatic export of {name} is off in the "
                                   "config (paused: true or archive.auto_export: false)")
        since = cursor_start(name, context.cursor, partitions_def.start)
        until = min(ctx.clock() - config.export_after, since + scan)
        keys = complete_windows(partitions_def, since, until)
        archived = partition_statuses(context.instance, names.archive, keys, partitions_def)
        readings = partition_statuses(context.instance, names.readings, keys, partitions_def)
        unsettled = first_unsettled(keys, readings, archived)
        cursor = (partitions_def.start_time_for_partition_key(unsettled) if unsettled
                  else max(since, partitions_def.end_time_for_partition_key(keys[-1]) if keys
                           else since)).isoformat()
        if dg.AssetPartitionStatus.IN_PROGRESS in archived.values():
            return dg.SensorResult(skip_reason=f"an export of {name} is still running",
                                   cursor=cursor)
        due = windows_to_export(keys, readings, archived, config.windows_per_run)
        failed = sum(value == dg.AssetPartitionStatus.FAILED for value in archived.values())
        held = f"; {failed} window(s) whose export failed wait for a person" if failed else ""
        if not due:
            return dg.SensorResult(cursor=cursor, skip_reason=(
                f"{name}: nothing to export from {since:%Y-%m-%d %H:%M} to "
                f"{until:%Y-%m-%d %H:%M}{held}"))
        return dg.SensorResult(cursor=cursor, run_requests=[dg.RunRequest(
            run_key=f"export:{due[0]}...{due[-1]}",
            tags={**run_tags(name, "archive"), MAINTENANCE_TAG: "archive",
                  ASSET_PARTITION_RANGE_START_TAG: due[0], ASSET_PARTITION_RANGE_END_TAG: due[-1]},
        )])

    return export


def build_restore_job(ctx: SourceContext) -> dg.JobDefinition:
    name, names, partitions_def = ctx.name, ctx.names, ctx.partitions_def

    @dg.op(name=names.restore_op, tags={SOURCE_TAG: name})
    @signed
    def restore(
        context: dg.OpExecutionContext, sink: dg.ResourceParam[TimescaleSink],
        archive: ArchiveResource,
    ) -> None:
        windows, expired = within_retention(
            context, name, windows_for(partitions_def, context.partition_keys), sink.retention)
        store = archive.store()

        def restored(window: Window, rows: int) -> None:
            context.log_event(dg.AssetMaterialization(
                asset_key=names.readings, partition=window.key,
                description="Restored from the archive",
                metadata={"restored_from": store.uri(name, window.key), "rows": rows}))

        with failures_named(context, name):
            report = restore_windows(name, windows, sink, store, context.run.run_id,
                                     progress=context.log.info, on_restored=restored)
        context.add_output_metadata({
            "windows": report.windows, "restored": len(report.restored),
            "already_present": len(report.already_present),
            "rows_restored": report.rows_restored, "windows_beyond_retention": len(expired)})

    @dg.job(
        name=names.restore_job,
        partitions_def=partitions_def,
        executor_def=IN_PROCESS,
        tags={SOURCE_TAG: name, MAINTENANCE_TAG: "restore"},
        description=f"Load archived windows of {name} back into the sink (window replace); "
        "never contacts the source.",
    )
    def restore_job() -> None:
        restore()

    return restore_job


def build_archive(ctx: SourceContext, config: ArchiveConfig) -> dg.Definitions:
    """What `archive:` adds to one source: its archive asset, export sensor and restore job."""
    return dg.Definitions(assets=[build_archive_asset(ctx, config)],
                          sensors=[build_export_sensor(ctx, config)],
                          jobs=[build_restore_job(ctx)])


def build_archive_resource(project: Project) -> dict[str, dg.ResourceDefinition]:
    """The `archive` resource, when `archive:` is configured (no run config: see `fixed`)."""
    config = project.config.archive
    if config is None:
        return {}
    archive = ArchiveResource.from_config(config, project.resolve_path(config.path))
    return {"archive": fixed(archive, lambda: archive, "The archive (sources.yaml `archive:`).")}
