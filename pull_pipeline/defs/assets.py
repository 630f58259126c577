"""`<source>/raw` and `<source>/readings`, built for every source by one factory.

No `from __future__ import annotations` here: Dagster inspects the `context` annotation.
"""

from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg

from pull_pipeline.alerts.message import describe_partitions
from pull_pipeline.config.env import resolve_env
from pull_pipeline.connectors import make_connector
from pull_pipeline.defs.checks import CheckEvent, has_rows_per_window, valid_rows_per_window
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.coverage import coverage_metadata
from pull_pipeline.defs.handoff import DoneLoad, hand_over, raw_loads_too, take
from pull_pipeline.defs.naming import (
    HAS_ROWS_CHECK,
    MAINTENANCE_TAG,
    SOURCE_TAG,
    VALID_ROWS_CHECK,
)
from pull_pipeline.defs.partitions import backfill_policy
from pull_pipeline.defs.resources import LandingResource
from pull_pipeline.defs.signatures import signed
from pull_pipeline.defs.steps import (
    failures_named,
    tag_run_with_source,
    windows_for,
    within_retention,
)
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.landing import LandingMissing, LandingStore
from pull_pipeline.pipeline import (
    LandedWindow,
    LandStats,
    LoadStats,
    land,
    load,
    pull,
)
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window


def build_source_assets(ctx: SourceContext) -> list[dg.AssetsDefinition]:
    """The raw and readings assets of one source, partitioned by its windows."""
    name, config, names, partitions_def = ctx.name, ctx.config, ctx.names, ctx.partitions_def
    common: dict[str, Any] = {
        "partitions_def": partitions_def,
        "backfill_policy": backfill_policy(config.partitions),
        "group_name": names.group,
        "pool": names.pool,
        "tags": {SOURCE_TAG: name},
    }

    @dg.asset(
        key=names.raw,
        description=f"{name}: each window as received from the {config.kind} source, as "
        "Parquet in the landing store.",
        kinds={config.kind, "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                HAS_ROWS_CHECK,
                asset=names.raw,
                description="Every window of the run returned rows (WARN: an empty window "
                "succeeds, but may mean late data, missing files or a wrong window query).",
            )
        ],
        **common,
    )
    @signed
    def raw(
        context: dg.AssetExecutionContext, landing: LandingResource,
        sink: dg.ResourceParam[TimescaleSink],
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | CheckEvent]:
        windows, expired = run_windows(context, ctx, sink)
        if not windows:
            yield dg.MaterializeResult(metadata=beyond_retention_metadata(expired))
            yield from has_rows_per_window(context, ctx, [], [])
            return
        stats, loaded = LandStats(), LoadStats()
        loads = raw_loads_too(context, names, len(windows))  # see defs/handoff.py
        try:
            with failures_named(context, name):
                error = fetch_and_land(context, ctx, landing.store(), sink, windows,
                                       stats, loaded if loads else None)
        except dg.Failure:
            yield from landed_before_failure(names.raw, stats.landed)
            yield from loaded_before_failure(names.readings, loaded.loaded_windows)
            raise
        if loads:
            hand_over(context.run.run_id, name, DoneLoad(loaded, error))
        yield dg.MaterializeResult(
            metadata={
                "rows": stats.rows,
                "pages": stats.pages,
                "seconds": round(stats.seconds, 3),
                **{f"seconds_{phase}": round(value, 3) for phase, value in stats.phases.items()},
                "rows_per_second": round(stats.rows / stats.seconds) if stats.seconds else 0,
                "landing": stats.uris[0] if len(stats.uris) == 1 else f"{len(stats.uris)} files",
                **beyond_retention_metadata(expired),
            },
        )
        yield from has_rows_per_window(context, ctx, windows, stats.empty_windows)

    @dg.asset(
        key=names.readings,
        deps=[names.raw],
        description=f"{name}: canonical readings (sensor_tag, ts, sensor_value), validated "
        "with pandera, replacing each window in the sink.",
        kinds={"postgres", "pandera"},
        check_specs=[
            dg.AssetCheckSpec(
                VALID_ROWS_CHECK,
                asset=names.readings,
                blocking=True,
                description="Rows failing the canonical schema stay within max_reject_ratio "
                f"({config.max_reject_ratio:.0%}); rejects are quarantined with their reason.",
            )
        ],
        **common,
    )
    @signed
    def readings(
        context: dg.AssetExecutionContext, sink: dg.ResourceParam[TimescaleSink],
        landing: LandingResource,
    ) -> Iterator[dg.MaterializeResult | dg.AssetMaterialization | CheckEvent]:
        windows, expired = run_windows(context, ctx, sink)
        if not windows:
            yield dg.MaterializeResult(metadata=beyond_retention_metadata(expired))
            yield from valid_rows_per_window(context, ctx, LoadStats(), [])
            return
        store = landing.store()
        done = take(context.run.run_id, name)  # the load `raw` did as it landed, if it did
        stats = done.stats if done else LoadStats()
        with failures_named(context, name):
            if done is None:
                yield from land_missing(context, ctx, store, sink, windows)
            try:
                if done is None:
                    load(name, config, store, sink, windows, context.run.run_id, stats)
                elif done.error is not None:
                    raise done.error
            except Exception as exc:
                yield from loaded_before_failure(names.readings, stats.loaded_windows)
                yield from valid_rows_per_window(context, ctx, stats, windows, exc)
                raise
        yield dg.MaterializeResult(metadata={
            **readings_metadata(stats),
            **coverage_metadata(sink, name, windows, config.expected_interval),
            **beyond_retention_metadata(expired)})
        yield from valid_rows_per_window(context, ctx, stats, windows)

    return [raw, readings]


def run_windows(
    context: dg.AssetExecutionContext, ctx: SourceContext, sink: TimescaleSink
) -> tuple[list[Window], list[Window]]:
    """What every step of a source does first: tag its run with the source, and split the
    run's windows into those to pull and those older than `sink.retention` (skipped)."""
    tag_run_with_source(context, ctx.name)
    return within_retention(context, ctx.name,
                            windows_for(ctx.partitions_def, context.partition_keys),
                            sink.retention)


def beyond_retention_metadata(expired: Sequence[Window]) -> dict[str, Any]:
    """Which windows of the run were skipped as older than `sink.retention` (if any)."""
    if not expired:
        return {}
    return {"windows_beyond_retention": len(expired),
            "beyond_retention": describe_partitions([w.key for w in expired])}


def landed_before_failure(
    key: dg.AssetKey, landed: Sequence[LandedWindow]
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per window a failed run did land, so the partition status shows
    them landed and only the rest failed (a rerun of failed windows then skips them)."""
    for window in landed:
        yield dg.AssetMaterialization(
            asset_key=key, partition=window.key,
            metadata={"rows": window.rows, "pages": window.pages, "landing": window.uri})


def loaded_before_failure(
    key: dg.AssetKey, loaded: dict[str, int]
) -> Iterator[dg.AssetMaterialization]:
    """One materialization per window a failed run did load and commit; see above."""
    for window_key, rows in loaded.items():
        yield dg.AssetMaterialization(asset_key=key, partition=window_key,
                                      metadata={"rows_loaded": rows})


def fetch_and_land(
    context: dg.AssetExecutionContext, ctx: SourceContext, store: LandingStore,
    sink: TimescaleSink, windows: Sequence[Window], stats: LandStats,
    loaded: LoadStats | None = None,
) -> PullPipelineError | None:
    """Fetch `windows` from the source and land them, holding one of the source's slots.

    With `loaded`, each window also loads as it lands (`pipeline.pull`); the load's error
    is returned, for `readings` to report. Config errors name the file, source and key."""
    name, config = ctx.name, ctx.config
    resolved = resolve_env(config, where=ctx.where)
    with (sink.source_slot(name, config.concurrency, context.log.info,
                           config.slot_timeout.total_seconds()),
          make_connector(name, resolved, ctx.project.path) as connector):
        if loaded is not None:
            return pull(name, resolved, connector, store, sink, windows, context.run.run_id,
                        context.log.info, stats, loaded)
        land(name, resolved, connector, store, windows, context.run.run_id, context.log.info,
             stats)
        return None


def land_missing(
    context: dg.AssetExecutionContext, ctx: SourceContext, store: LandingStore,
    sink: TimescaleSink, windows: Sequence[Window],
) -> Iterator[dg.AssetMaterialization]:
    """Land the windows of a `readings`-only run that were never landed, as `raw` would.

    "Materialize" on `readings` alone would otherwise fail on a window nobody fetched. Its
    landing is recorded as a `raw` materialization. A replay promises never to contact the
    source, so it refuses instead, before touching the sink.
    """
    missing = [w for w in windows if store.folder.info(store.key(ctx.name, w.key)) is None]
    if not missing:
        return
    were = (f"window {missing[0].key} was" if len(missing) == 1 else
            f"windows {describe_partitions([w.key for w in missing])} were")
    if context.run.tags.get(MAINTENANCE_TAG) == "replay":
        raise LandingMissing(
            f"{ctx.name}: {were} never landed, and a replay never contacts the source; run "
            f"{ctx.names.pull_job} (or materialize {ctx.name}/raw) for it first")
    context.log.info(f"{ctx.name}: {were} never landed; fetching first, as {ctx.name}/raw would")
    stats = LandStats()
    fetch_and_land(context, ctx, store, sink, missing, stats)
    for window, uri in zip(missing, stats.uris, strict=True):
        yield dg.AssetMaterialization(
            asset_key=ctx.names.raw, partition=window.key,
            metadata={"landing": uri, "landed_by": "readings (the window was never landed)"})


def readings_metadata(stats: LoadStats) -> dict[str, Any]:
    """What on-call sees on each materialization: counts, spread, and speed per phase."""
    result = stats.result
    metadata: dict[str, Any] = {
        "rows_fetched": stats.fetched,
        "rows_loaded": result.loaded,
        "rows_rejected": result.rejected,
        "rows_deduplicated": result.deduplicated,
        "rows_replaced": result.previous,  # what the windows held before this load
        "sensors": len(stats.sensors),
        "pages": stats.pages,
        "seconds": round(stats.seconds, 3),
        "rows_per_second": round(stats.fetched / stats.seconds) if stats.seconds else 0,
        **{f"seconds_{phase}": round(value, 3) for phase, value in stats.phases.items()},
    }
    if stats.min_ts is not None and stats.max_ts is not None:
        metadata["min_ts"] = dg.MetadataValue.timestamp(stats.min_ts.to_pydatetime())
        metadata["max_ts"] = dg.MetadataValue.timestamp(stats.max_ts.to_pydatetime())
    return metadata
