"""TimescaleDB policy jobs (compression, retention) of the readings table: are they working?

A policy that silently stops running is found months later as a full disk. TimescaleDB
records each job's runs (`timescaledb_information.job_stats`, `job_errors`), so the sink can
tell a failing job (its last run failed) from an overdue one (no success for two schedule
intervals plus an hour) and say what to do. `run_now` runs a job in this session with
`CALL run_job`, which works even where the background scheduler does not (TimescaleDB 2.28.3
on PostgreSQL 15.20 fails every scheduled job with `cannot drop portal "" while it is being
set up`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import psycopg

from pull_pipeline.errors import first_line

GRACE = timedelta(hours=1)


@dataclass(frozen=True)
class PolicyJob:
    """One background job of the readings hypertable, with what its last runs say."""

    job_id: int
    proc_name: str
    schedule_interval: timedelta
    created_or_last_success: datetime | None
    next_start: datetime | None
    last_run_status: str | None
    last_error: str | None
    scheduled: bool = True

    @property
    def policy(self) -> str:
        return self.proc_name.removeprefix("policy_")

    def problem(self, now: datetime) -> str | None:
        """Why this job needs attention now, with the fix; None when it is healthy."""
        run_it = (f"run it now with CALL run_job({self.job_id}) (or the sink_policies job), "
                  "and check the TimescaleDB background worker in the PostgreSQL log")
        if not self.scheduled:
            return (f"{self.policy} policy (job {self.job_id}) is paused, so it never runs; "
                    f"resume it with SELECT alter_job({self.job_id}, scheduled => true), "
                    f"or run it once with CALL run_job({self.job_id})")
        if self.last_run_status == "Failed":
            error = first_line(self.last_error) if self.last_error else "no error recorded"
            return f"{self.policy} policy (job {self.job_id}) failed its last run: {error}; {run_it}"
        if self.next_start is not None and now - self.next_start > GRACE:
            return (f"{self.policy} policy (job {self.job_id}) was due at "
                    f"{self.next_start.isoformat(timespec='minutes')} and has not run; {run_it}")
        since = self.created_or_last_success
        if since is not None and now - since > 2 * self.schedule_interval + GRACE:
            return (f"{self.policy} policy (job {self.job_id}) has not succeeded since "
                    f"{since.isoformat(timespec='minutes')} (it should run every "
                    f"{self.schedule_interval}); {run_it}")
        return None


def policy_jobs(conn: psycopg.Connection, schema: str | None, table: str) -> list[PolicyJob]:
    """The table's policy jobs; empty on plain PostgreSQL or when none is configured."""
    if not conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return []
    rows = conn.execute(
        "SELECT j.job_id, j.proc_name, j.schedule_interval,"
        " coalesce(nullif(s.last_successful_finish, '-infinity'), j.initial_start,"
        "          (SELECT min(e.start_time) FROM timescaledb_information.job_errors e"
        "           WHERE e.job_id = j.job_id)),"
        " nullif(nullif(s.next_start, '-infinity'), 'infinity'), s.last_run_status,"
        " (SELECT e.err_message FROM timescaledb_information.job_errors e"
        "  WHERE e.job_id = j.job_id ORDER BY e.finish_time DESC NULLS LAST LIMIT 1),"
        " j.scheduled"
        " FROM timescaledb_information.jobs j"
        " LEFT JOIN timescaledb_information.job_stats s USING (job_id)"
        " WHERE j.hypertable_schema = coalesce(%s, current_schema())"
        " AND j.hypertable_name = %s AND j.proc_name LIKE 'policy_%%'"
        " ORDER BY j.job_id",
        (schema, table)).fetchall()
    return [PolicyJob(*row) for row in rows]


def run_now(conn: psycopg.Connection, job: PolicyJob) -> None:
    """Run one job in this session (autocommit: `run_job` commits as it goes)."""
    conn.execute("CALL run_job(%s)", (job.job_id,))
