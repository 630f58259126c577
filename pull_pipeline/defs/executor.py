"""Which executor runs a job's steps: one process per run (default) or Celery workers.

`PULL_PIPELINE_EXECUTOR=celery` sends every step to dagster-celery workers through the broker
named by `DAGSTER_CELERY_BROKER_URL`, so a backfill's windows spread over machines that share
no disk (see deploy/). The variable must be the same wherever the code location loads: the
code server, the run workers and the Celery workers.
"""

from __future__ import annotations

import os

import dagster as dg

EXECUTOR_ENV = "PULL_PIPELINE_EXECUTOR"
BROKER_ENV = "DAGSTER_CELERY_BROKER_URL"

# Shared by the run worker and every Celery worker (deploy/celery.yaml repeats them and a test
# keeps both equal). Late acks plus reject-on-lost: a step whose worker dies goes back on the
# queue and runs again on another worker instead of vanishing with it (a window's load is a
# replace, so running it twice is exact). One task at a time, so a busy worker takes no more.
CELERY_SETTINGS: dict[str, object] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "worker_prefetch_multiplier": 1,
}

# The in-process executor is configured once, here, so its config is not part of every
# job's run-config schema: with three jobs a source, each job's schema and snapshot is a
# large share of loading and serving the code location (README, Performance). Its defaults
# are kept (retries on). The console logger is left to Dagster, which takes its level from
# the instance (`python_logs` in dagster.yaml).
IN_PROCESS = dg.in_process_executor.configured({}, name="in_process")


def build_executor() -> dg.ExecutorDefinition:
    """The executor `PULL_PIPELINE_EXECUTOR` names: `in_process` (default) or `celery`.

    In process, a source's raw -> readings chain runs in the run's own process: no broker, no
    second start-up. The broker URL is read when a run starts (`{"env": ...}`), so it never
    appears in the job's snapshot or the UI.
    """
    choice = os.environ.get(EXECUTOR_ENV, "in_process").strip() or "in_process"
    if choice == "in_process":
        return IN_PROCESS
    if choice == "celery":
        from dagster_celery import celery_executor  # the `distributed` extra

        return celery_executor.configured(
            {"broker": {"env": BROKER_ENV}, "config_source": dict(CELERY_SETTINGS)},
            name="celery",
        )
    raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected 'in_process' or 'celery'")
