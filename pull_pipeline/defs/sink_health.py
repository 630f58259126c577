"""The sink's own health: TimescaleDB policy jobs that fail or stop running.

`sink_health` (a sensor, every 5 minutes) reads the policy jobs of the readings hypertable,
alerts through the `alerts:` channels for each one that failed its last run, is overdue or
is paused (throttled like every alert), and, with `sink.repair_policies` on, launches
`sink_policies`, which runs those jobs with `CALL run_job`. On plain PostgreSQL there are no
jobs: it skips.
"""

from collections.abc import Callable
from datetime import datetime

import dagster as dg

from pull_pipeline.alerts import wording
from pull_pipeline.config.loader import Project
from pull_pipeline.defs.alerting import make_alerter
from pull_pipeline.defs.context import utc_now
from pull_pipeline.defs.naming import SINK_HEALTH_SENSOR, SINK_POLICIES_JOB
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.sink.policies import policy_jobs, run_now
from pull_pipeline.sink.timescale import TimescaleSink


@dg.op(description="Runs the readings table's failing or overdue TimescaleDB policy jobs now.")
def run_policy_jobs(
    context: dg.OpExecutionContext, sink: dg.ResourceParam[TimescaleSink]
) -> None:
    now = utc_now()
    with sink.connect(autocommit=True) as conn:
        names = sink.names
        jobs = [job for job in policy_jobs(conn, names.schema, names.name) if job.problem(now)]
        if not jobs:
            context.log.info(f"every policy job of {sink.table} is healthy; nothing to run")
        for job in jobs:
            context.log.info(f"running {job.policy} policy (job {job.job_id}) of {sink.table}")
            run_now(conn, job)


def build_sink_health(project: Project, clock: Callable[[], datetime] = utc_now) -> dg.Definitions:
    """The `sink_health` sensor and the `sink_policies` job."""
    alerts = project.config.alerts
    repair = project.config.sink.repair_policies

    @dg.job(name=SINK_POLICIES_JOB, description="Runs failing or overdue TimescaleDB policy jobs of the "
            "readings table now (CALL run_job). Launched by the sink_health sensor.")
    def policies_job() -> None:
        run_policy_jobs()

    @dg.sensor(
        name=SINK_HEALTH_SENSOR,
        job=policies_job,
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Alerts when a TimescaleDB policy job of the readings table (compression, "
        "retention) failed its last run or is overdue, and launches sink_policies to run it.",
    )
    def sink_health(
        context: dg.SensorEvaluationContext, sink: dg.ResourceParam[TimescaleSink]
    ) -> dg.SensorResult | dg.SkipReason:
        now = clock()
        try:
            with sink.connect(autocommit=True) as conn:
                names = sink.names
                jobs = policy_jobs(conn, names.schema, names.name)
        except PullPipelineError as exc:
            return dg.SkipReason(f"sink not reachable: {exc}")
        problems = [problem for job in jobs if (problem := job.problem(now))]
        if not problems:
            return dg.SkipReason(f"{len(jobs)} policy job(s) of {sink.table}, all healthy")
        alerter = make_alerter(alerts, context.instance)
        for problem in problems:
            alerter.send(wording.policy_needs_attention(sink.table, problem, repair))
        runs = [dg.RunRequest(run_key=f"{SINK_POLICIES_JOB}@{now:%Y-%m-%dT%H}")] if repair else []
        return dg.SensorResult(run_requests=runs, skip_reason=None if runs else
                               dg.SkipReason("; ".join(problems)))

    return dg.Definitions(jobs=[policies_job], sensors=[sink_health])
