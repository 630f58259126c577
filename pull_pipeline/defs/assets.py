"""`<source>/raw` and `<source>/readings`, built for every source by one factory.

No `from __future__ import annotations` here: Dagster inspects the `context` annotation.
"""


import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC
from typing import Any

import dagster as dg

from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import SourceBase
from pull_pipeline.connectors import make_connector
from pull_pipeline.defs.partitions import build_partitions
from pull_pipeline.defs.resources import LandingResource
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.pipeline import LoadStats, RejectRatioExceeded, land, load
from pull_pipeline.redaction import redact
from pull_pipeline.sink.timescale import TimescaleSink, Window

SOURCE_TAG = "pull_pipeline/source"
OPERATION_TAG = "pull_pipeline/operation"  # replay / restore runs: they never call the source
VALIDATION_CHECK = "valid_rows"
HAS_ROWS_CHECK = "has_rows"


def raw_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "raw"])


def readings_key(name: str) -> dg.AssetKey:
    return dg.AssetKey([name, "readings"])


def pool_name(name: str) -> str:
    """The Dagster pool that limits how many steps hit this source at once."""
    return f"pull_pipeline_{name}"


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


# Any Dagster context with `.log`: assets, ops (the restore job) and asset checks.
LoggingContext = dg.AssetExecutionContext | dg.OpExecutionContext | dg.AssetCheckExecutionContext


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


def build_source_assets(name: str, source: SourceBase) -> list[dg.AssetsDefinition]:
    """The raw and readings assets of one source, partitioned by its windows."""
    partitions_def = build_partitions(source.partitions, name)
    common: dict[str, Any] = {
        "partitions_def": partitions_def,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        "group_name": name,
        "pool": pool_name(name),
        "tags": {SOURCE_TAG: name},
    }

    @dg.asset(
        key=raw_key(name),
        description=f"{name}: each window as received from the {source.kind} source, as "
        "Parquet in the landing store.",
        kinds={source.kind, "parquet"},
        check_specs=[
            dg.AssetCheckSpec(
                HAS_ROWS_CHECK,
                asset=raw_key(name),
                description="Every window of the run returned rows (WARN: an empty window "
                "succeeds, but may mean late data, missing files or a wrong window query).",
            )
        ],
        **common,
    )
    def raw(
        context: dg.AssetExecutionContext, landing: LandingResource, sink: TimescaleSink
    ) -> dg.MaterializeResult:
        windows = windows_for(partitions_def, context.partition_keys)
        with failures_named(context, name):
            resolved = resolve_env(source, where=f"source {name!r}")
            with (sink.source_slot(name, source.concurrency, context.log.info,
                                   source.slot_timeout.total_seconds()),
                  make_connector(name, resolved) as connector):
                stats = land(name, resolved, connector, landing.store(), windows,
                             context.run.run_id, context.log.info)
        return dg.MaterializeResult(
            metadata={
                "rows": stats.rows,
                "pages": stats.pages,
                "seconds": round(stats.seconds, 3),
                **{f"seconds_{phase}": round(value, 3) for phase, value in stats.phases.items()},
                "rows_per_second": round(stats.rows / stats.seconds) if stats.seconds else 0,
                "landing": stats.uris[0] if len(stats.uris) == 1 else f"{len(stats.uris)} files",
            },
            check_results=[
                dg.AssetCheckResult(
                    check_name=HAS_ROWS_CHECK,
                    passed=not stats.empty_windows,
                    severity=dg.AssetCheckSeverity.WARN,
                    metadata={"windows_without_rows": dg.MetadataValue.json(stats.empty_windows)},
                )
            ],
        )

    @dg.asset(
        key=readings_key(name),
        deps=[raw_key(name)],
        description=f"{name}: canonical readings (sensor_tag, ts, sensor_value), validated "
        "with pandera, replacing each window in the sink.",
        kinds={"postgres", "pandera"},
        check_specs=[
            dg.AssetCheckSpec(
                VALIDATION_CHECK,
                asset=readings_key(name),
                blocking=True,
                description="Rows failing the canonical schema stay within max_reject_ratio "
                f"({source.max_reject_ratio:.0%}); rejects are quarantined with their reason.",
            )
        ],
        **common,
    )
    def readings(
        context: dg.AssetExecutionContext, sink: TimescaleSink, landing: LandingResource
    ) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
        windows = windows_for(partitions_def, context.partition_keys)
        with failures_named(context, name):
            try:
                stats = load(name, source, landing.store(), sink, windows, context.run.run_id)
            except RejectRatioExceeded as exc:
                yield _validation_result(exc.stats, source, passed=False)
                raise
        yield dg.MaterializeResult(
            metadata=readings_metadata(stats),
            check_results=[_validation_result(stats, source, passed=True)],
        )

    return [raw, readings]


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


def _validation_result(stats: LoadStats, source: SourceBase, passed: bool) -> dg.AssetCheckResult:
    metadata: dict[str, Any] = {
        "rows_fetched": stats.fetched,
        "rows_rejected": stats.result.rejected,
        "max_reject_ratio": source.max_reject_ratio,
        "rejected_by_window": dg.MetadataValue.json(stats.rejected_by_window),
    }
    if stats.first_reasons:
        metadata["example_reasons"] = dg.MetadataValue.md(
            "\n".join(f"- {redact(reason)}" for reason in stats.first_reasons[:3])
        )
    return dg.AssetCheckResult(
        check_name=VALIDATION_CHECK,
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata=metadata,
    )
