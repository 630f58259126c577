"""Source protection: each source's pool limit comes from its config and holds across runs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest
import yaml

from pull_pipeline.defs.naming import SourceNames
from pull_pipeline_tests.daemon_harness import Clock, Daemon, expected_rows, sink_rows
from pull_pipeline_tests.helpers import make_project
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

REPO = Path(__file__).resolve().parents[1]
T0 = datetime(2024, 1, 1, tzinfo=UTC)


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DAGSTER_HOME holding the project's own dagster.yaml, as `make dev` sets it up (its
    storage lives under $DAGSTER_HOME)."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    yield instance
    instance.dispose()


def config_for(tmp_path: Path, api: ReadingsApi, pg_dsn: str, table: str, **limits: int):
    sources = {name: api.source_config(concurrency=limit) for name, limit in limits.items()}
    return {"sink": {"dsn": pg_dsn, "table": table}, "sources": sources,
            "landing": {"path": str(tmp_path / "landing")}}


def project_for(tmp_path: Path, api: ReadingsApi, pg_dsn: str, table: str, **limits: int):
    return make_project(tmp_path, config_for(tmp_path, api, pg_dsn, table, **limits))


def limits_of(instance: dg.DagsterInstance) -> dict[str, tuple[int, bool]]:
    return {p.name: (p.limit, p.from_default) for p in instance.event_log_storage.get_pool_limits()}


def test_shipped_dagster_yaml_limits_pools_and_retries_crashes_only(
    instance: dg.DagsterInstance,
) -> None:
    assert instance.global_op_concurrency_default_limit == 1
    assert instance.run_retries_enabled and instance.run_retries_max_retries == 2
    assert instance.run_retries_retry_on_asset_or_op_failure is False


def test_pool_limits_follow_the_config(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    instance: dg.DagsterInstance,
) -> None:
    daemon = Daemon(project_for(tmp_path, readings_api, pg_dsn, table_name, plant=1, mill=3),
                    instance, Clock(T0))
    assert "set" in (daemon.sensor_tick("apply_pool_limits").skip_message or "")
    plant, mill = SourceNames("plant").pool, SourceNames("mill").pool
    assert limits_of(instance) == {plant: (1, False), mill: (3, False)}
    assert "match" in (daemon.sensor_tick("apply_pool_limits").skip_message or "")
    # someone changes `concurrency:` for mill and reloads the code location
    daemon = Daemon(project_for(tmp_path, readings_api, pg_dsn, table_name, plant=1, mill=2),
                    instance, Clock(T0))
    daemon.sensor_tick("apply_pool_limits")
    assert limits_of(instance)[mill] == (2, False)


def test_two_backfills_of_one_source_never_fetch_at_the_same_time(
    tmp_path: Path, readings_api: ReadingsApi, pg_dsn: str, table_name: str,
    dagster_home: Path, instance: dg.DagsterInstance,
) -> None:
    readings_api.readings = sample_readings(duration=timedelta(hours=4))
    readings_api.delay = 0.05  # a slow source: two runs' fetches would overlap without a limit
    config = config_for(tmp_path, readings_api, pg_dsn, table_name, plant=1)
    (tmp_path / "sources.yaml").write_text(yaml.safe_dump(config))
    daemon = Daemon(make_project(tmp_path, config), instance, Clock(T0))
    daemon.sensor_tick("apply_pool_limits")
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home),
           "PULL_PIPELINE_CONFIG": str(tmp_path / "sources.yaml")}

    def backfill(first: str, last: str) -> subprocess.Popen[bytes]:
        """A single-run backfill of a range, in its own process, as a run worker runs it."""
        return subprocess.Popen(
            [sys.executable, "-m", "dagster", "asset", "materialize", "-m",
             "pull_pipeline.definitions", "--select", "plant/raw,plant/readings",
             "--partition-range", f"{first}...{last}"],
            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    runs = [backfill("2024-01-01-00:00", "2024-01-01-01:00"),
            backfill("2024-01-01-02:00", "2024-01-01-03:00")]
    outputs = [run.communicate(timeout=120)[0].decode() for run in runs]
    assert [run.returncode for run in runs] == [0, 0], "\n".join(outputs)[-3000:]

    split = T0.timestamp() + 2 * 3600
    first = [r.time for r in readings_api.requests if float(r.params["start"]) < split]
    second = [r.time for r in readings_api.requests if float(r.params["start"]) >= split]
    assert len(first) == len(second) == 8  # 2 windows x 4 pages each
    assert max(first) < min(second) or max(second) < min(first)  # one after the other
    assert sink_rows(pg_dsn, table_name, "plant") == expected_rows(readings_api.readings)
    pool = SourceNames("plant").pool
    assert instance.event_log_storage.get_concurrency_info(pool).claimed_slots == []
