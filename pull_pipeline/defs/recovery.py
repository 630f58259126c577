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

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.alerts import Alert, Alerter
from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.loader import Project
from pull_pipeline.config.models import AlertsConfig, SourceBase
from pull_pipeline.connectors import make_connector
from pull_pipeline.defs.alerting import (
    RERUN_HINT,
    asset_url,
    make_alerter,
    run_failure,
    run_partitions,
    run_url,
)
from pull_pipeline.defs.assets import OPERATION_TAG, SOURCE_TAG, readings_key
from pull_pipeline.defs.jobs import run_tags
from pull_pipeline.defs.sensors import sensor_status
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.recovery import Cursor, Plan, Probe, Status, Window, plan_recovery
from pull_pipeline.redaction import redact
from pull_pipeline.scheduling import complete_windows

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
        if run.tags.get(OPERATION_TAG):  # replay/restore runs never pull from the source
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


def probe_source(name: str, source: SourceBase) -> Probe:
    """Ask the source once whether it answers (no retries); classify the answer."""
    try:
        with make_connector(name, resolve_env(source, where=f"source {name!r}")) as connector:
            connector.probe()
    except PullPipelineError as exc:
        return Probe(ok=False, permanent=not getattr(exc, "transient", False), message=str(exc))
    except Exception as exc:  # noqa: BLE001 - a connector bug must not stop the sensor
        return Probe(ok=False, permanent=True, message=redact(f"{type(exc).__name__}: {exc}"))
    return Probe(ok=True)


def build_recovery_sensor(
    name: str,
    source: SourceBase,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    job: UnresolvedAssetJobDefinition,
    project: Project,
    clock: Callable[[], datetime],
) -> dg.SensorDefinition:
    """`recover_<source>`: every minute, plan with `plan_recovery` and request the windows."""
    recovery = source.recovery
    alerts = project.config.alerts
    off = source.paused or not recovery.enabled

    @dg.sensor(
        name=f"recover_{name}",
        job=job,
        minimum_interval_seconds=60,
        default_status=sensor_status(off),
        description=f"Requests windows of {name} that are missing or failed transiently within "
        f"the last {recovery.horizon}, once the source answers a probe; at most "
        f"{recovery.max_windows_per_tick} in flight.",
    )
    def recover(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        if off:
            return dg.SensorResult(skip_reason=f"recovery of {name} is off in the config "
                                   "(paused: true or recovery.enabled: false)")
        now = clock()
        since = now - recovery.horizon
        keys = complete_windows(partitions_def, since, now - source.partitions.lag - SETTLE)
        statuses = context.instance.get_status_by_partition(
            readings_key(name), keys, partitions_def) or {}
        failed = [k for k in keys if statuses.get(k) == dg.AssetPartitionStatus.FAILED]
        failures = last_failures(context.instance, name, partitions_def, failed, since)
        windows = [
            Window(k, _status(statuses.get(k)),
                   permanent=k in failures and not failures[k].transient)
            for k in keys
        ]
        plan = plan_recovery(Cursor.parse(context.cursor), windows,
                             recovery.max_windows_per_tick, now.timestamp(),
                             probe=lambda: probe_source(name, source))
        announce(lambda: make_alerter(alerts, context.instance), name, plan, failures, alerts)
        requests = [
            dg.RunRequest(run_key=plan.run_key(k), partition_key=k, tags=run_tags(name, "recovery"))
            for k in plan.request
        ]
        return dg.SensorResult(
            run_requests=requests,
            cursor=plan.cursor.dump(),
            skip_reason=None if requests else f"{name}: {plan.describe()}",
        )

    return recover


def announce(
    make_alerter: Callable[[], Alerter],
    name: str,
    plan: Plan,
    failures: dict[str, LastFailure],
    alerts: AlertsConfig,
) -> None:
    """The alerts a plan calls for: recovered, windows held for a person, a refusing source.

    The alerter (channels resolved, `${NAME}` read) is built only when there is one to send.
    """
    refused = plan.probe is not None and plan.probe.permanent
    if not (plan.recovered or plan.newly_held or refused):
        return
    alerter = make_alerter()
    if plan.recovered:
        alerter.send(Alert(
            kind="recovered",
            source=name,
            summary=f"{name} is back; {len(plan.recovered)} windows backfilled"
            if plan.after_outage else
            f"{name} caught up; {len(plan.recovered)} missing windows backfilled",
            partitions=sorted(plan.recovered),
            link=asset_url(alerts, name),
        ))
    if plan.newly_held:
        latest = failures[plan.newly_held[-1]]
        alerter.send(Alert(
            kind="attention",
            source=name,
            summary=f"{name}: {len(plan.newly_held)} window(s) failed permanently; automatic "
            "recovery will not retry them",
            error=latest.error,
            partitions=plan.newly_held,
            link=run_url(alerts, latest.run_id),
            details=(("Next", RERUN_HINT),),
        ))
    if refused:
        alerter.send(Alert(
            kind="attention",
            source=name,
            summary=f"{name}: the source refuses the recovery probe; {plan.waiting} window(s) wait",
            error=plan.probe.message,
            link=asset_url(alerts, name),
        ))
