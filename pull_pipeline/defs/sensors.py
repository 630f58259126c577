"""Sensors that watch and tell: run failures, freshness, and the per-source pool limits."""

from collections.abc import Mapping, Sequence

import dagster as dg
from dagster._core.instance.utils import RUNLESS_RUN_ID

from pull_pipeline.alerts import wording
from pull_pipeline.config.loader import Project
from pull_pipeline.defs.alerting import (
    asset_url,
    make_alerter,
    run_failure,
    run_partitions,
    run_source,
    run_url,
)
from pull_pipeline.defs.broken import shown_name
from pull_pipeline.defs.checks import freshness_evaluation, freshness_verdict
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.naming import FAILURE_ALERT_SENSOR, MAINTENANCE_TAG, POOL_LIMITS_SENSOR
from pull_pipeline.freshness import State


def sensor_status(off: bool) -> dg.DefaultSensorStatus:
    return dg.DefaultSensorStatus.STOPPED if off else dg.DefaultSensorStatus.RUNNING


def build_location_sensors(
    project: Project, sources: Sequence[SourceContext]
) -> list[dg.SensorDefinition]:
    """The sensors every code location has once, whatever its sources."""
    return [build_failure_alert_sensor(project, sources), build_pool_limits_sensor(sources)]


def build_failure_alert_sensor(
    project: Project, sources: Sequence[SourceContext]
) -> dg.SensorDefinition:
    """Alert on every failed run in this code location, naming source, windows and error.

    Runs of a broken source are not alerted again: its `config_<source>` sensor did."""
    alerts = project.config.alerts
    by_name = {ctx.name: ctx for ctx in sources}
    broken = [shown_name(entry.name) for entry in project.broken]

    @dg.run_failure_sensor(
        name=FAILURE_ALERT_SENSOR,
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=30,
        description="Sends an alert (webhook / e-mail from `alerts:`) for each failed run.",
    )
    def alert_on_run_failure(context: dg.RunFailureSensorContext) -> None:
        run = context.dagster_run
        failure = run_failure(context.get_step_failure_events(), context.failure_event.message or "")
        if run_source(run, failure, broken):
            return  # a source with an invalid config: its config_<source> sensor alerted once
        owner = by_name.get(run_source(run, failure, list(by_name)) or "")
        recovers = owner is not None and owner.config.recovery.enabled and not owner.config.paused
        next_step = wording.failure_next_step(run.tags.get(MAINTENANCE_TAG), failure.transient,
                                              recovers)
        alert = wording.run_failed(
            owner.name if owner else run.job_name, run.job_name, failure.error,
            run_partitions(run, owner.partitions_def if owner else None),
            run_url(alerts, run.run_id), next_step)
        make_alerter(alerts, context.instance).send(alert)

    return alert_on_run_failure


def build_freshness_sensor(ctx: SourceContext) -> dg.SensorDefinition | None:
    """Judge freshness every minute, record it as the `freshness` check, alert when stale.

    A check result is recorded (and an alert considered) only when the verdict or the window
    it is about changes, so the event log does not grow by a row a minute per source; or when
    a run recorded it last: a run launched from the UI with `readings` selected includes the
    check, and when that run fails the check shows "execution failed" although the source may
    be fresh. Freshness is the sensor's to judge, so the next tick puts its verdict back.
    """
    name, config, freshness_config = ctx.name, ctx.config, ctx.config.freshness
    if freshness_config is None:
        return None

    @dg.sensor(
        name=ctx.names.freshness_sensor,
        minimum_interval_seconds=60,
        default_status=sensor_status(config.paused),
        description=f"Evaluates the freshness check of {name}/readings and alerts when stale.",
    )
    def freshness(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if config.paused:
            return dg.SensorResult(skip_reason=f"{name} is paused in the config (paused: true)")
        verdict = freshness_verdict(context.instance, ctx, freshness_config, ctx.clock())
        state = f"{verdict.state.value}:{verdict.window.key if verdict.window else ''}"
        if state == context.cursor and not _last_recorded_by_a_run(context.instance, ctx):
            return dg.SensorResult(skip_reason=f"unchanged: {verdict.description}", cursor=state)
        if state == context.cursor:  # same verdict: record it again, without a second alert
            return dg.SensorResult(asset_events=[freshness_evaluation(ctx, verdict)], cursor=state)
        if verdict.state is State.STALE:
            make_alerter(ctx.alerts, context.instance).send(wording.stale(
                name, verdict.description, [verdict.window.key] if verdict.window else [],
                asset_url(ctx.alerts, ctx.names.readings)))
        return dg.SensorResult(asset_events=[freshness_evaluation(ctx, verdict)], cursor=state)

    return freshness


def build_pool_limits_sensor(sources: Sequence[SourceContext]) -> dg.SensorDefinition:
    """Make each source's pool limit equal to its `concurrency:` (the config is the truth)."""
    limits = {ctx.names.pool: ctx.config.concurrency for ctx in sources}

    @dg.sensor(
        name=POOL_LIMITS_SENSOR,
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


def _last_recorded_by_a_run(instance: dg.DagsterInstance, ctx: SourceContext) -> bool:
    """Whether the freshness check's latest record came from a run rather than its sensor."""
    key = ctx.names.freshness_check
    record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key]).get(key)
    return record is not None and record.run_id != RUNLESS_RUN_ID
