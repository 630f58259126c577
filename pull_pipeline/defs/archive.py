"""Replay, archive export and restore in Dagster: thin wiring around `pull_pipeline.archive`.

Per source, all partitioned like the source:
- job `replay_<source>`: materializes `<source>/readings` only, which reads the landing
  store, so the source is never contacted;
- asset `<source>/archive` (only with `archive:` configured): exports the window, verified;
- job `export_<source>` and sensor `archive_<source>` (only with `archive:`): the sensor
  exports windows older than `export_after`, oldest first, one range run at a time;
- job `restore_<source>` (only with `archive:`): loads archived windows back into the sink.

No `from __future__ import annotations` here: Dagster inspects the `context` annotation.
"""

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)
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
from pull_pipeline.config.models import ArchiveConfig, S3Config, SourceBase
from pull_pipeline.defs.assets import (
    OPERATION_TAG,
    SOURCE_TAG,
    failures_named,
    readings_key,
    windows_for,
)
from pull_pipeline.defs.checks import utc_now
from pull_pipeline.defs.jobs import run_tags, without_freshness_check
from pull_pipeline.defs.partitions import build_partitions
from pull_pipeline.defs.sensors import sensor_status
from pull_pipeline.s3 import is_s3_url
from pull_pipeline.scheduling import complete_windows
from pull_pipeline.sink.timescale import TimescaleSink, Window


class ArchiveResource(dg.ConfigurableResource):
    """The archive path and policy. `s3_json` keeps `${NAME}` placeholders unresolved, so no
    credential is ever part of Dagster's resource config."""

    path: str
    s3_json: str | None = None
    export_after_seconds: float
    drop_after_export: bool = False

    @classmethod
    def from_config(cls, config: ArchiveConfig, path: str) -> "ArchiveResource":
        return cls(
            path=path,
            s3_json=config.s3.model_dump_json() if config.s3 else None,
            export_after_seconds=config.export_after.total_seconds(),
            drop_after_export=config.drop_after_export,
        )

    def store(self) -> ArchiveStore:
        s3 = S3Config.model_validate_json(self.s3_json) if self.s3_json else None
        return ArchiveStore.open(self.path, s3)

    def policy(self) -> ExportPolicy:
        return ExportPolicy(timedelta(seconds=self.export_after_seconds), self.drop_after_export)


def archive_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "archive"])


def replay_job_name(name: str) -> str:
    return f"replay_{name}"


def restore_job_name(name: str) -> str:
    return f"restore_{name}"


def build_replay_job(name: str, source: SourceBase) -> UnresolvedAssetJobDefinition:
    """`<source>/readings` (and its checks but freshness) rebuilt from the landing store."""
    selection = without_freshness_check(
        dg.AssetSelection.assets(readings_key(name)), name, source.freshness is not None)
    return dg.define_asset_job(
        replay_job_name(name),
        selection=selection,
        tags={SOURCE_TAG: name, OPERATION_TAG: "replay"},
        description=f"Rebuild {name}/readings for a window or a range from the landing store "
        "(the raw data as received), without contacting the source.",
    )


def build_archive_asset(name: str, source: SourceBase, path: str) -> dg.AssetsDefinition:
    partitions_def = build_partitions(source.partitions, name)

    @dg.asset(
        key=archive_key(name),
        deps=[readings_key(name)],
        partitions_def=partitions_def,
        # A ranged backfill is one run; a rerun skips windows already archived.
        backfill_policy=dg.BackfillPolicy.single_run(),
        group_name=name,
        kinds={"parquet", "s3" if is_s3_url(path) else "file"},
        tags={SOURCE_TAG: name},
        description=f"{name}: the window exported from the sink to the archive as Parquet and "
        "verified (row count + checksum); dropped from the sink afterwards when "
        "archive.drop_after_export is set.",
    )
    def archive(
        context: dg.AssetExecutionContext, sink: TimescaleSink, archive: ArchiveResource
    ) -> dg.MaterializeResult:
        windows = windows_for(partitions_def, context.partition_keys)
        with failures_named(context, name):
            store = archive.store()
            report = export_windows(name, windows, sink, store, archive.policy(),
                                    context.run.run_id, progress=context.log.info)
        location = store.uri(name, windows[0].key) if len(windows) == 1 else store.source_uri(name)
        return dg.MaterializeResult(metadata=export_metadata(report, location))

    return archive


def export_metadata(report: ExportReport, location: str) -> dict[str, object]:
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


def export_job_name(name: str) -> str:
    return f"export_{name}"


def build_export_job(name: str) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        export_job_name(name),
        selection=dg.AssetSelection.assets(archive_key(name)),
        tags={SOURCE_TAG: name, OPERATION_TAG: "archive"},
        description=f"Export windows of {name} from the sink to the archive (verified).",
    )


def windows_to_export(
    keys: Sequence[str],
    readings: Mapping[str, dg.AssetPartitionStatus],
    archived: Mapping[str, dg.AssetPartitionStatus],
    limit: int,
) -> list[str]:
    """The oldest unbroken stretch of windows (at most `limit`) loaded but not yet archived.

    Unbroken, because one run exports a range and would otherwise also try the windows in
    between; a window whose export failed is left to a person (it is in the run's failure).
    """
    done = (dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.FAILED,
            dg.AssetPartitionStatus.IN_PROGRESS)
    stretch: list[str] = []
    for key in keys:
        due = readings.get(key) == dg.AssetPartitionStatus.MATERIALIZED and archived.get(key) not in done
        if due:
            stretch.append(key)
        if stretch and (not due or len(stretch) == limit):
            break
    return stretch


def build_export_sensor(
    name: str, source: SourceBase, config: ArchiveConfig, clock: Callable[[], datetime]
) -> dg.SensorDefinition:
    """`archive_<source>`: exports windows once they are older than `export_after`."""
    partitions_def = build_partitions(source.partitions, name)
    off = source.paused or not config.auto_export

    @dg.sensor(
        name=f"archive_{name}",
        job_name=export_job_name(name),
        minimum_interval_seconds=15 * 60,
        default_status=sensor_status(off),
        description=f"Exports windows of {name} older than {config.export_after} to the "
        f"archive, oldest first, up to {config.windows_per_run} windows a run, one run at a time.",
    )
    def export(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if off:
            return dg.SensorResult(skip_reason=f"automatic export of {name} is off in the "
                                   "config (paused: true or archive.auto_export: false)")
        keys = complete_windows(partitions_def, partitions_def.start, clock() - config.export_after)
        status = context.instance.get_status_by_partition
        archived = status(archive_key(name), keys, partitions_def) or {}
        if dg.AssetPartitionStatus.IN_PROGRESS in archived.values():
            return dg.SensorResult(skip_reason=f"an export of {name} is still running")
        due = windows_to_export(keys, status(readings_key(name), keys, partitions_def) or {},
                                archived, config.windows_per_run)
        failed = sum(value == dg.AssetPartitionStatus.FAILED for value in archived.values())
        held = f"; {failed} window(s) whose export failed wait for a person" if failed else ""
        if not due:
            return dg.SensorResult(skip_reason=f"{name}: nothing to export{held}")
        return dg.SensorResult(run_requests=[dg.RunRequest(
            run_key=f"export:{due[0]}...{due[-1]}",
            tags={**run_tags(name, "archive"), OPERATION_TAG: "archive",
                  ASSET_PARTITION_RANGE_START_TAG: due[0], ASSET_PARTITION_RANGE_END_TAG: due[-1]},
        )])

    return export


def build_restore_job(name: str, source: SourceBase) -> dg.JobDefinition:
    partitions_def = build_partitions(source.partitions, name)

    @dg.op(name=f"restore_{name}_windows", tags={SOURCE_TAG: name})
    def restore(
        context: dg.OpExecutionContext, sink: TimescaleSink, archive: ArchiveResource
    ) -> None:
        windows = windows_for(partitions_def, context.partition_keys)
        store = archive.store()

        def restored(window: Window, rows: int) -> None:
            context.log_event(dg.AssetMaterialization(
                asset_key=readings_key(name), partition=window.key,
                description="Restored from the archive",
                metadata={"restored_from": store.uri(name, window.key), "rows": rows}))

        with failures_named(context, name):
            report = restore_windows(name, windows, sink, store, context.run.run_id,
                                     progress=context.log.info, on_restored=restored)
        context.add_output_metadata({
            "windows": report.windows, "restored": len(report.restored),
            "already_present": len(report.already_present),
            "rows_restored": report.rows_restored})

    @dg.job(
        name=restore_job_name(name),
        partitions_def=partitions_def,
        executor_def=dg.in_process_executor,
        tags={SOURCE_TAG: name, OPERATION_TAG: "restore"},
        description=f"Load archived windows of {name} back into the sink (window replace); "
        "never contacts the source.",
    )
    def restore_job() -> None:
        restore()

    return restore_job


def build_archive_and_replay(
    project: Project, clock: Callable[[], datetime] = utc_now
) -> dg.Definitions:
    """Replay jobs for every source; with `archive:` set, also archive assets, export jobs
    and sensors, and restore jobs."""
    sources = project.config.sources
    jobs: list[object] = [build_replay_job(name, source) for name, source in sources.items()]
    config = project.config.archive
    if config is None:
        return dg.Definitions(jobs=jobs)
    for name, source in sources.items():
        jobs += [build_export_job(name), build_restore_job(name, source)]
    return dg.Definitions(
        assets=[build_archive_asset(name, source, config.path) for name, source in sources.items()],
        jobs=jobs,
        sensors=[build_export_sensor(name, source, config, clock) for name, source in sources.items()],
        resources={"archive": ArchiveResource.from_config(
            config, project.resolve_path(config.path))},
    )
