"""The recovery sensor of each source: after an outage, pull every missed window again.

A sensor with a cursor rather than a declarative `AutomationCondition`: recovery must
probe the source before requesting anything, tell permanent failures from transient ones
by the failed run's own error, alert (held windows, "is back"), and remember what it
requested. Conditions can express "missing or failed in the last N windows", but not a
probe, an error's kind or an alert. The decisions themselves are in `pull_pipeline.recovery`.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from itertools import takewhile

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

from pull_pipeline.alerts import Alerter, wording
from pull_pipeline.config.env import resolve_env
from pull_pipeline.connectors import make_connector
from pull_pipeline.defs.alerting import (
    asset_url,
    make_alerter,
    run_failure,
    run_partitions,
    run_url,
)
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.jobs import run_tags
from pull_pipeline.defs.naming import MAINTENANCE_TAG, SOURCE_TAG
from pull_pipeline.defs.partitions import complete_windows
from pull_pipeline.defs.sensors import sensor_status
from pull_pipeline.defs.statuses import partition_statuses
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.recovery import (
    Caps,
    Cursor,
    Plan,
    Probe,
    Status,
    WindowState,
    expiry_margin,
    plan_recovery,
)
from pull_pipeline.redaction import redact

# The newest windows belong to the schedule for this long after their tick.
SETTLE = timedelta(minutes=5)
MAX_RUNS_SCANNED = 1000
_STATUS: dict[dg.AssetPartitionStatus | None, Status] = {
    dg.AssetPartitionStatus.MATERIALIZED: Status.MATERIALIZED,
    dg.AssetPartitionStatus.FAILED: Status.FAILED,
    dg.AssetPartitionStatus.IN_PROGRESS: Status.IN_PROGRESS,
}


def _status(value: dg.AssetPartitionStatus | None) -> Status:
    return _STATUS.get(value, Status.MISSING)


@dataclass(frozen=True)
class LastFailure:
    run_id: str
    error: str
    transient: bool


def last_failures(
    instance: dg.DagsterInstance,
    name: str,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    keys: Iterable[str],
    since: datetime,
) -> dict[str, LastFailure]:
    """For each failed window, the latest failed run of the source that covered it."""
    wanted = set(keys)
    found: dict[str, LastFailure] = {}
    if not wanted:
        return found
    records = instance.get_run_records(
        dg.RunsFilter(tags={SOURCE_TAG: name}, statuses=[dg.DagsterRunStatus.FAILURE],
                      created_after=since),
        limit=MAX_RUNS_SCANNED,
    )
    for record in records:  # newest first
        run = record.dagster_run
        if run.tags.get(MAINTENANCE_TAG):  # replay/restore/archive runs never call the source
            continue
        covered = [k for k in run_partitions(run, partitions_def) if k in wanted and k not in found]
        if not covered:
            continue
        events = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        failure = run_failure([r.event_log_entry.dagster_event for r in events
                               if r.event_log_entry.dagster_event is not None])
        for key in covered:
            found[key] = LastFailure(run.run_id, failure.error, failure.transient)
        if len(found) == len(wanted):
            break
    return found


def probe_source(ctx: SourceContext) -> Probe:
    """Ask the source once whether it answers (no retries); classify the answer."""
    try:
        resolved = resolve_env(ctx.config, where=ctx.where)
        with make_connector(ctx.name, resolved, ctx.project.path) as connector:
            connector.probe()
    except PullPipelineError as exc:
        return Probe(ok=False, permanent=not getattr(exc, "transient", False), message=str(exc))
    except Exception as exc:  # noqa: BLE001 - a connector bug must not stop the sensor
        return Probe(ok=False, permanent=True, message=redact(f"{type(exc).__name__}: {exc}"))
    return Probe(ok=True)


def build_recovery_sensor(
    ctx: SourceContext, job: UnresolvedAssetJobDefinition
) -> dg.SensorDefinition:
    """`recover_<source>`: every minute, plan with `plan_recovery` and request the windows."""
    name, config, partitions_def = ctx.name, ctx.config, ctx.partitions_def
    recovery = config.recovery
    alerts = ctx.alerts
    off = config.paused or not recovery.enabled
    caps = Caps(windows_per_run=recovery.max_windows_per_run,
                runs_in_flight=recovery.max_runs_in_flight,
                windows_in_flight=recovery.max_windows_per_tick)

    @dg.sensor(
        name=ctx.names.recovery_sensor,
        job=job,
        minimum_interval_seconds=60,
        default_status=sensor_status(off),
        description=f"Requests windows of {name} that are missing or failed transiently within "
        f"the last {recovery.horizon}, once the source answers a probe, as ranges of at most "
        f"{recovery.max_windows_per_run} windows per run; at most "
        f"{recovery.max_runs_in_flight} run(s) and {recovery.max_windows_per_tick} windows in "
        "flight. Alerts on windows about to leave the horizon unloaded.",
    )
    def recover(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if off:
            return dg.SensorResult(skip_reason=f"recovery of {name} is off in the config "
                                   "(paused: true or recovery.enabled: false)")
        now = ctx.clock()
        since = now - recovery.horizon
        keys = complete_windows(partitions_def, since, now - config.partitions.lag - SETTLE)
        statuses = partition_statuses(context.instance, ctx.names.readings, keys, partitions_def)
        failed = [k for k in keys if statuses.get(k) == dg.AssetPartitionStatus.FAILED]
        failures = last_failures(context.instance, name, partitions_def, failed, since)
        cutoff = since + expiry_margin(recovery.horizon)  # keys go oldest first
        expiring = set(takewhile(
            lambda k: partitions_def.start_time_for_partition_key(k) < cutoff, keys))
        windows = [
            WindowState(k, _status(statuses.get(k)),
                        permanent=k in failures and not failures[k].transient,
                        expiring=k in expiring)
            for k in keys
        ]
        plan = plan_recovery(Cursor.parse(context.cursor), windows, caps, now.timestamp(),
                             probe=lambda: probe_source(ctx))
        announce(lambda: make_alerter(alerts, context.instance), ctx, plan, failures)
        requests = [range_request(plan, keys, run_tags(name, "recovery")) for keys in plan.ranges]
        return dg.SensorResult(
            run_requests=requests,
            cursor=plan.cursor.dump(),
            skip_reason=None if requests else f"{name}: {plan.describe()}",
        )

    return recover


def range_request(plan: Plan, keys: list[str], tags: dict[str, str]) -> dg.RunRequest:
    """One run for `keys` (contiguous, oldest first): a partition, or a single-run range."""
    if len(keys) == 1:
        return dg.RunRequest(run_key=plan.run_key(keys), partition_key=keys[0], tags=tags)
    return dg.RunRequest(run_key=plan.run_key(keys), tags={
        **tags, ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]})


def announce(
    make_alerter: Callable[[], Alerter],
    ctx: SourceContext,
    plan: Plan,
    failures: dict[str, LastFailure],
) -> None:
    """The alerts a plan calls for: recovered, windows held for a person, a refusing source,
    windows about to leave the horizon unloaded.

    The alerter (channels resolved, `${NAME}` read) is built only when there is one to send.
    """
    refused = plan.probe if plan.probe is not None and plan.probe.permanent else None
    if not (plan.recovered or plan.newly_held or plan.newly_expiring or refused is not None):
        return
    name, alerts, readings = ctx.name, ctx.alerts, ctx.names.readings
    alerter = make_alerter()
    if plan.recovered:
        alerter.send(wording.recovered(name, sorted(plan.recovered), plan.after_outage,
                                       asset_url(alerts, readings)))
    if plan.newly_held:
        latest = failures[plan.newly_held[-1]]
        alerter.send(wording.held(name, plan.newly_held, latest.error,
                                  run_url(alerts, latest.run_id)))
    if refused is not None:
        alerter.send(wording.probe_refused(name, plan.waiting, refused.message,
                                           asset_url(alerts, readings)))
    if plan.newly_expiring:
        alerter.send(wording.leaving_horizon(name, plan.cursor.expiring,
                                             ctx.config.recovery.horizon,
                                             asset_url(alerts, readings)))
