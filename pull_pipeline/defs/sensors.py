"""Sensors that watch and tell: run failures, freshness, and the per-source pool limits."""

from collections.abc import Callable, Mapping
from datetime import datetime

import dagster as dg

from pull_pipeline.alerts import Alert
from pull_pipeline.config.loader import Project
from pull_pipeline.config.models import SourceBase
from pull_pipeline.defs.alerting import (
    RERUN_HINT,
    asset_url,
    make_alerter,
    run_failure,
    run_partitions,
    run_source,
    run_url,
)
from pull_pipeline.defs.assets import OPERATION_TAG, pool_name
from pull_pipeline.defs.checks import freshness_evaluation, freshness_verdict
from pull_pipeline.freshness import State


def sensor_status(off: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.STOPPED if off else dg.DefaultSensorStatus.RUNNING


def build_failure_alert_sensor(
    project: Project, partitions: Mapping[str, dg.TimeWindowPartitionsDefinition]
) -> dg.SensorDefinition:
    """Alert on every failed run in this code location, naming source, windows and error."""
    alerts = project.config.alerts
    sources = project.config.sources

    @dg.run_failure_sensor(
        name="alert_on_run_failure",
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Sends an alert (webhook / e-mail from `alerts:`) for each failed run.",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        failure = run_failure(context.get_step_failure_events(), context.failure_event.message or "")
        source = run_source(run, failure, list(sources))
        config = sources.get(source or "")
        operation = run.tags.get(OPERATION_TAG)
        if operation:
            follow_up = f"{operation} runs are not retried automatically: launch it again"
        elif not failure.transient:
            follow_up = f"permanent, not retried automatically: {RERUN_HINT}"
        elif config is not None and config.recovery.enabled and not config.paused:
            follow_up = "transient: recovery pulls these windows again once the source answers"
        else:
            follow_up = f"transient, and automatic recovery is off: {RERUN_HINT}"
        alert = Alert(
            kind="failed",
            source=source or run.job_name,
            summary=f"{source or run.job_name}: run of {run.job_name} failed",
            error=failure.error,
            partitions=run_partitions(run, partitions.get(source or "")),
            link=run_url(alerts, run.run_id),
            details=(("Next", follow_up),),
        )
        make_alerter(alerts, context.instance).send(alert)

    return alert_on_run_failure


def build_freshness_sensor(
    name: str,
    source: SourceBase,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    project: Project,
    clock: Callable[[], datetime],
) -> dg.SensorDefinition | None:
    """Judge freshness every minute, record it as the `freshness` check, alert when stale.

    A check result is recorded (and an alert considered) only when the verdict or the window
    it is about changes, so the event log does not grow by a row a minute per source.
    """
    config = source.freshness
    if config is None:
        return None
    alerts = project.config.alerts

    @dg.sensor(
        name=f"freshness_{name}",
        minimum_interval_seconds=60,
        default_status=sensor_status(source.paused),
        description=f"Evaluates the freshness check of {name}/readings and alerts when stale.",
    )
    def freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if source.paused:
            return dg.SensorResult(skip_reason=f"{name} is paused in the config (paused: true)")
        verdict = freshness_verdict(context.instance, name, config, partitions_def, clock())
        state = f"{verdict.state.value}:{verdict.window.key if verdict.window else ''}"
        if state == context.cursor:
            return dg.SensorResult(skip_reason=f"unchanged: {verdict.description}", cursor=state)
        if verdict.state is State.STALE:
            make_alerter(alerts, context.instance).send(Alert(
                kind="stale",
                source=name,
                summary=f"{name} is stale: its newest due window has not landed",
                error=verdict.description,
                partitions=[verdict.window.key] if verdict.window else [],
                link=asset_url(alerts, name),
            ))
        return dg.SensorResult(asset_events=[freshness_evaluation(name, verdict)], cursor=state)

    return freshness


def build_pool_limits_sensor(project: Project) -> dg.SensorDefinition:
    """Make each source's pool limit equal to its `concurrency:` (the config is the truth)."""
    limits = {pool_name(name): source.concurrency for name, source in project.config.sources.items()}

    @dg.sensor(
        name="apply_pool_limits",
        minimum_interval_seconds=60,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Sets the Dagster pool limit of every source to its `concurrency:` value.",
    )
    def apply_pool_limits(context: dg.SensorEvaluationContext) -> dg.SkipReason:
        changed = set_pool_limits(context.instance, limits)
        return dg.SkipReason(
            "set " + ", ".join(f"{pool}={limit}" for pool, limit in changed.items())
            if changed else "pool limits match the config"
        )

    return apply_pool_limits


def set_pool_limits(instance: dg.DagsterInstance, limits: Mapping[str, int]) -> dict[str, int]:
    """Set the pools whose limit differs from `limits` (or is only the default); return them."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return {}
    current = {pool.name: pool for pool in storage.get_pool_limits()}
    changed = {}
    for pool, limit in limits.items():
        known = current.get(pool)
        if known is None or known.from_default or known.limit != limit:
            storage.set_concurrency_slots(pool, limit)
            changed[pool] = limit
    return changed
