"""Asset checks on `<source>/readings` beyond validation: gaps per sensor, and freshness."""

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,  # not exported by dagster
)
from dagster._core.events import (  # not exported by dagster; what its own steps log with
    DagsterEvent,
    DagsterEventBatchMetadata,
    DagsterEventType,
    generate_event_batch_id,
)

from pull_pipeline.config.models import FreshnessConfig
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.naming import (
    FRESHNESS_CHECK,
    GAPS_CHECK,
    HAS_ROWS_CHECK,
    VALID_ROWS_CHECK,
)
from pull_pipeline.defs.partitions import newest_windows
from pull_pipeline.defs.signatures import signed
from pull_pipeline.defs.steps import windows_for
from pull_pipeline.freshness import State, Verdict, judge
from pull_pipeline.pipeline import LoadStats, RejectRatioExceeded
from pull_pipeline.redaction import redact
from pull_pipeline.sink.gaps import GapReport, find_gaps
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window

MAX_SENSORS_SHOWN = 20
MAX_GAPS_PER_SENSOR = 5
# What a step yields for its checks: evaluations (some as logged events) and the op output.
CheckEvent = dg.AssetCheckEvaluation | DagsterEvent | dg.Output


def build_gap_check(ctx: SourceContext) -> dg.AssetChecksDefinition | None:
    """Per window: missing stretches per sensor against `expected_interval` (if configured)."""
    name, config, partitions_def = ctx.name, ctx.config, ctx.partitions_def
    interval = config.expected_interval
    if interval is None:
        return None
    severity = dg.AssetCheckSeverity.ERROR if config.gaps_blocking else dg.AssetCheckSeverity.WARN

    # Dagster types the check function as returning one `AssetCheckResult`, but its runtime
    # also takes a generator of evaluations and the op's `Output`, which this one yields.
    @dg.asset_check(  # type: ignore[arg-type]  # dagster's AssetCheckFunction is too narrow
        asset=ctx.names.readings,
        name=GAPS_CHECK,
        partitions_def=partitions_def,
        blocking=config.gaps_blocking,
        description=f"Every sensor has a reading at least every {interval} in the window "
        f"(missing stretches listed per sensor); {severity.value} when it fails.",
    )
    @signed
    def gaps(
        context: dg.AssetCheckExecutionContext, sink: dg.ResourceParam[TimescaleSink]
    ) -> Iterator[CheckEvent]:
        results = []
        with sink.connection() as conn:  # one connection for every window of the run
            reports = [(window, find_gaps(sink, name, window, interval, conn))
                       for window in windows_for(partitions_def, context.partition_keys)]
        for window, report in reports:
            results.append(WindowResult(
                window.key, passed=report.total_gaps == 0, metadata=gap_metadata([report]),
                description=None if report.total_gaps == 0 else f"{report.total_gaps} missing "
                f"stretch(es) longer than {interval} in {name} window {window.key}"))
        yield from per_window(context, dg.AssetCheckKey(ctx.names.readings, GAPS_CHECK),
                              severity, config.gaps_blocking, results)
        yield dg.Output(None)  # the check's op output, which evaluations do not stand for

    return gaps


@dataclass(frozen=True)
class WindowResult:
    """A check's verdict on one window."""

    key: str
    passed: bool
    metadata: Mapping[str, Any]
    description: str | None = None


def per_window(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
    check_key: dg.AssetCheckKey, severity: dg.AssetCheckSeverity, blocking: bool,
    results: Sequence[WindowResult],
) -> Iterator[dg.AssetCheckEvaluation | DagsterEvent]:
    """One evaluation per window, each tied to that window's latest materialization.

    An `AssetCheckResult` of a ranged run is recorded for no partition, so every window of
    the range stayed "planned" and showed as skipped. The target materialization is what
    makes the UI count an evaluation as current for its partition.

    Dagster stores each evaluation on its own (an INSERT, a NOTIFY and an update of the
    check's execution row: 5 ms a window here). Where the instance's storage takes them
    in one batch (`instance_storage.KnownTablesEventLogStorage`), they are logged as one
    batch, as Dagster logs a ranged run's materializations; a failed blocking evaluation
    still goes through Dagster's own path, which stops the downstream steps.
    """
    instance = context.instance
    targets = latest_materializations(instance, check_key.asset_key, [r.key for r in results])
    batched = batches_check_evaluations(instance)
    step = context.op_execution_context.get_step_execution_context() if batched else None
    batch_id = generate_event_batch_id()
    for number, result in enumerate(results, 1):
        evaluation = dg.AssetCheckEvaluation(
            asset_key=check_key.asset_key, check_name=check_key.name, passed=result.passed,
            metadata=result.metadata, severity=severity, description=result.description,
            blocking=blocking, partition=result.key, target_materialization_data=targets.get(result.key))
        stops = blocking and not result.passed and severity == dg.AssetCheckSeverity.ERROR
        if step is None or stops:
            yield evaluation
            continue
        # Logged (stored) as it is built; yielded for the step's own record of its events.
        yield DagsterEvent.from_step(
            DagsterEventType.ASSET_CHECK_EVALUATION, step, evaluation,
            message=f"Asset check '{check_key.name}' on '{check_key.asset_key.to_user_string()}' "
            f"{'passed' if result.passed else 'did not pass'}."
            + (f" Description: '{result.description}'" if result.description else ""),
            batch_metadata=DagsterEventBatchMetadata(batch_id, number == len(results)))


def batches_check_evaluations(instance: dg.DagsterInstance) -> bool:
    """Whether this instance's storage takes check evaluations in one batch (`per_window`);
    dagster-postgres's and SQLite's refuse such a batch and would store them one by one."""
    return bool(getattr(instance.event_log_storage, "stores_check_evaluation_batches", False))


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, keys: Sequence[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The latest materialization of each of `keys`, in two queries whatever their number."""
    ids = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(keys))
    if not ids:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(ids.values())),
        limit=len(ids)).records
    return {record.partition_key: AssetCheckEvaluationTargetMaterializationData(
                storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp)
            for record in records if record.partition_key is not None}


def valid_rows_per_window(
    context: dg.AssetExecutionContext, ctx: SourceContext, stats: LoadStats,
    windows: Sequence[Window], error: Exception | None = None,
) -> Iterator[CheckEvent]:
    """`valid_rows` for each window of a `readings` run, after its materializations.

    A window that loaded passed; after `RejectRatioExceeded`, a window that did not load but
    had rejects failed. Other windows that did not load (the sink failed) get no verdict.
    """
    config = ctx.config
    over_ratio = isinstance(error, RejectRatioExceeded)
    results = []
    for window in windows:
        rejected = stats.rejected_by_window.get(window.key, 0)
        loaded = error is None or window.key in stats.loaded_windows
        if not loaded and not (over_ratio and rejected):
            continue
        metadata: dict[str, Any] = {"rows_rejected": rejected,
                                    "max_reject_ratio": config.max_reject_ratio}
        if stats.first_reasons and rejected:
            metadata["example_reasons"] = dg.MetadataValue.md(
                "\n".join(f"- {redact(reason)}" for reason in stats.first_reasons[:3]))
        results.append(WindowResult(window.key, passed=loaded, metadata=metadata))
    check_key = dg.AssetCheckKey(ctx.names.readings, VALID_ROWS_CHECK)
    yield from per_window(context, check_key, dg.AssetCheckSeverity.ERROR, True, results)
    yield check_output(context, check_key)


def has_rows_per_window(
    context: dg.AssetExecutionContext, ctx: SourceContext, windows: Sequence[Window],
    empty: Sequence[str],
) -> Iterator[CheckEvent]:
    """`has_rows` for each window of a `raw` run, after its materializations (WARN if empty)."""
    check_key = dg.AssetCheckKey(ctx.names.raw, HAS_ROWS_CHECK)
    results = [WindowResult(w.key, passed=w.key not in empty, metadata={
        "windows_without_rows": dg.MetadataValue.json([w.key] if w.key in empty else [])})
               for w in windows]
    yield from per_window(context, check_key, dg.AssetCheckSeverity.WARN, False, results)
    yield check_output(context, check_key)


def check_output(context: dg.AssetExecutionContext, check_key: dg.AssetCheckKey) -> dg.Output:
    """The op output of a check in the asset's own step, which evaluations do not stand for."""
    return dg.Output(None, output_name=context.assets_def.get_output_name_for_asset_check_key(
        check_key))


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
    instance: dg.DagsterInstance, ctx: SourceContext, config: FreshnessConfig, now: datetime
) -> Verdict:
    """Judge freshness on the newest due window's own materialization (not any window's)."""
    partitions_def = ctx.partitions_def

    def newest_complete(until: datetime) -> tuple[str, datetime] | None:
        keys = newest_windows(partitions_def, until, 1)
        return (keys[0], partitions_def.end_time_for_partition_key(keys[0])) if keys else None

    @cache  # the warn and fail levels often judge the same window: query it once
    def landed(key: str) -> datetime | None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=ctx.names.readings, asset_partitions=[key]), limit=1
        ).records
        return datetime.fromtimestamp(records[0].timestamp, UTC) if records else None

    return judge(ctx.name, config, now, newest_complete, landed)


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


def freshness_evaluation(ctx: SourceContext, verdict: Verdict) -> dg.AssetCheckEvaluation:
    """The check evaluation the freshness sensor records without launching a run."""
    passed, severity, metadata = freshness_result(verdict)
    return dg.AssetCheckEvaluation(
        asset_key=ctx.names.readings,
        check_name=FRESHNESS_CHECK,
        passed=passed,
        severity=severity,
        metadata=metadata,
        description=verdict.description,
    )


def build_freshness_check(ctx: SourceContext) -> dg.AssetChecksDefinition | None:
    """The freshness check, runnable from the UI; its sensor records it every minute."""
    config = ctx.config.freshness
    if config is None:
        return None
    warn = f"WARN after {config.warn_after}, " if config.warn_after else ""

    @dg.asset_check(
        asset=ctx.names.readings,
        name=FRESHNESS_CHECK,
        description=f"The newest window that is due has landed: {warn}ERROR after "
        f"{config.fail_after} past its end. A backfill of an older window does not count.",
    )
    @signed
    def freshness(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        verdict = freshness_verdict(context.instance, ctx, config, ctx.clock())
        passed, severity, metadata = freshness_result(verdict)
        return dg.AssetCheckResult(
            passed=passed, severity=severity, metadata=metadata, description=verdict.description
        )

    return freshness
