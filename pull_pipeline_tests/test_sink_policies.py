"""Policy health: which TimescaleDB policy jobs need attention, and why (pure logic)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pull_pipeline.sink.policies import PolicyJob

NOW = datetime(2024, 6, 1, 12, tzinfo=UTC)


def job(**changes: object) -> PolicyJob:
    base: dict[str, object] = {
        "job_id": 1000, "proc_name": "policy_compression", "schedule_interval": timedelta(hours=12),
        "created_or_last_success": NOW - timedelta(hours=1), "next_start": NOW + timedelta(hours=11),
        "last_run_status": "Success", "last_error": None}
    return PolicyJob(**{**base, **changes})  # type: ignore[arg-type]


def test_a_healthy_job_needs_nothing() -> None:
    assert job().problem(NOW) is None


def test_a_failed_job_names_itself_its_error_and_the_fix() -> None:
    problem = job(last_run_status="Failed",
                  last_error='cannot drop portal "" while it is being set up').problem(NOW)
    assert problem is not None
    assert "compression policy (job 1000) failed" in problem
    assert "cannot drop portal" in problem and "CALL run_job(1000)" in problem


def test_an_overdue_job_is_reported() -> None:
    due = job(next_start=NOW - timedelta(hours=3)).problem(NOW)
    assert due is not None and "was due at" in due
    stale = job(created_or_last_success=NOW - timedelta(days=2), next_start=None).problem(NOW)
    assert stale is not None and "has not succeeded since" in stale


def test_a_paused_job_is_reported_with_how_to_resume_it() -> None:
    problem = job(scheduled=False, next_start=None).problem(NOW)
    assert problem is not None and "is paused" in problem
    assert "alter_job(1000, scheduled => true)" in problem and "CALL run_job(1000)" in problem
