"""Asset checks on `<source>/readings` beyond validation: gaps per sensor, and freshness."""

from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg

from pull_pipeline.config.models import FreshnessConfig, SourceBase
from pull_pipeline.defs.assets import readings_key, windows_for
from pull_pipeline.defs.jobs import FRESHNESS_CHECK, GAP_CHECK
from pull_pipeline.freshness import State, Verdict, judge
from pull_pipeline.scheduling import newest_windows
from pull_pipeline.sink.gaps import GapReport, find_gaps
from pull_pipeline.sink.timescale import TimescaleSink

Clock = Callable[[], datetime]
MAX_SENSORS_SHOWN = 20
MAX_GAPS_PER_SENSOR = 5


def utc_now() -> datetime:
    return datetime.now(UTC)


def build_gap_check(
    name: str, source: SourceBase, partitions_def: dg.TimeWindowPartitionsDefinition
) -> dg.AssetChecksDefinition | None:
    """Per window: missing stretches per sensor against `expected_interval` (if configured)."""
    interval = source.expected_interval
    if interval is None:
        return None
    severity = dg.AssetCheckSeverity.ERROR if source.gaps_blocking else dg.AssetCheckSeverity.WARN

    @dg.asset_check(
        asset=readings_key(name),
        name=GAP_CHECK,
        partitions_def=partitions_def,
        blocking=source.gaps_blocking,
        description=f"Every sensor has a reading at least every {interval} in the window "
        f"(missing stretches listed per sensor); {severity.value} when it fails.",
    )
    def gaps(context: dg.AssetCheckExecutionContext, sink: TimescaleSink) -> dg.AssetCheckResult:
        reports = [find_gaps(sink, name, window, interval)
                   for window in windows_for(partitions_def, context.partition_keys)]
        total = sum(report.total_gaps for report in reports)
        return dg.AssetCheckResult(
            passed=total == 0,
            severity=severity,
            metadata=gap_metadata(reports),
            description=None if total == 0 else f"{total} missing stretch(es) longer than "
            f"{interval} in {name}",
        )

    return gaps


def gap_metadata(reports: list[GapReport]) -> dict[str, Any]:
    """Counts, and the missing stretches per sensor as a table and as JSON."""
    by_sensor: dict[str, list[str]] = {}
    for report in reports:
        for gap in report.gaps:
            by_sensor.setdefault(gap.sensor_tag, []).append(
                f"{gap.after.isoformat()} → {gap.before.isoformat()} ({gap.length})")
    rows = [
        f"| {tag} | {len(spans)} | {'<br>'.join(spans[:MAX_GAPS_PER_SENSOR])} |"
        for tag, spans in list(by_sensor.items())[:MAX_SENSORS_SHOWN]
    ]
    table = "\n".join(["| sensor | gaps | missing stretches |", "|---|---|---|", *rows])
    return {
        "missing_stretches": sum(report.total_gaps for report in reports),
        "sensors_expected": max((report.sensors for report in reports), default=0),
        "sensors_with_gaps": len(by_sensor),
        "gaps_by_sensor": dg.MetadataValue.md(table if rows else "no gaps"),
        "gaps": dg.MetadataValue.json({tag: spans for tag, spans in by_sensor.items()}),
    }


def freshness_verdict(
    instance: dg.DagsterInstance,
    name: str,
    config: FreshnessConfig,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    now: datetime,
) -> Verdict:
    """Judge freshness on the newest due window's own materialization (not any window's)."""

    def newest_complete(until: datetime) -> tuple[str, datetime] | None:
        keys = newest_windows(partitions_def, until, 1)
        return (keys[0], partitions_def.end_time_for_partition_key(keys[0])) if keys else None

    @cache  # the warn and fail levels often judge the same window: query it once
    def landed(key: str) -> datetime | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=readings_key(name), asset_partitions=[key]), limit=1
        ).records
        return datetime.fromtimestamp(records[0].timestamp, UTC) if records else None

    return judge(name, config, now, newest_complete, landed)


def freshness_result(verdict: Verdict) -> tuple[bool, dg.AssetCheckSeverity, dict[str, Any]]:
    """passed, severity and metadata of a verdict, shared by the check and its sensor."""
    severity = dg.AssetCheckSeverity.WARN if verdict.state is State.WARN else dg.AssetCheckSeverity.ERROR
    metadata: dict[str, Any] = {"state": verdict.state.value, "verdict": verdict.description}
    if verdict.window is not None:
        metadata["window"] = verdict.window.key
        metadata["deadline"] = dg.MetadataValue.timestamp(verdict.window.deadline)
    if verdict.landed_at is not None:
        metadata["landed_at"] = dg.MetadataValue.timestamp(verdict.landed_at)
    return verdict.passed, severity, metadata


def freshness_evaluation(name: str, verdict: Verdict) -> dg.AssetCheckEvaluation:
    """The check evaluation the freshness sensor records without launching a run."""
    passed, severity, metadata = freshness_result(verdict)
    return dg.AssetCheckEvaluation(
        asset_key=readings_key(name),
        check_name=FRESHNESS_CHECK,
        passed=passed,
        severity=severity,
        metadata=metadata,
        description=verdict.description,
    )


def build_freshness_check(
    name: str,
    source: SourceBase,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    clock: Clock = utc_now,
) -> dg.AssetChecksDefinition | None:
    """The freshness check, runnable from the UI; its sensor records it every minute."""
    config = source.freshness
    if config is None:
        return None
    warn = f"WARN after {config.warn_after}, " if config.warn_after else ""

    @dg.asset_check(
        asset=readings_key(name),
        name=FRESHNESS_CHECK,
        description=f"The newest window that is due has landed: {warn}ERROR after "
        f"{config.fail_after} past its end. A backfill of an older window does not count.",
    )
    def freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        verdict = freshness_verdict(context.instance, name, config, partitions_def, clock())
        passed, severity, metadata = freshness_result(verdict)
        return dg.AssetCheckResult(
            passed=passed, severity=severity, metadata=metadata, description=verdict.description
        )

    return freshness
