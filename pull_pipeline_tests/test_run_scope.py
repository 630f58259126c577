"""A run worker builds only its run's sources (defs/run_scope.py), in real run workers.

Both ways Dagster starts one are exercised with a location of 12 generated sources: the
default run launcher (a code server, `dagster job launch`, the worker spawned by the code
server) and `dagster api execute_run` (what the Kubernetes and Docker launchers start). Each
run must succeed, load its window exactly, and record which sources its worker built.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml
from dagster._core.definitions.definitions_load_context import (
    DefinitionsLoadContext,
    DefinitionsLoadType,
)
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import serialize_value

from benchmarks.daemon import code_server as bench_code_server
from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs.naming import SourceNames
from pull_pipeline.defs.run_scope import api_command_args, only, scoped_to_this_run
from pull_pipeline_tests.fleet_sources import fleet_config

SOURCES = 12
WINDOW = "2026-01-01-00:00"  # a 15-minute window of fleet_0001 and fleet_0005 (python sources)
ROWS_PER_WINDOW = 6  # fetch_pages: two sensors every 5 minutes
TIMEOUT = 40
ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Location:
    home: Path
    config: Path
    env: dict[str, str]
    dsn: str
    table: str

    def instance(self) -> dg.DagsterInstance:
        return dg.DagsterInstance.from_config(str(self.home))

    def rows(self, source: str) -> int:
        with psycopg.connect(self.dsn) as conn:
            row = conn.execute(f'SELECT count(*) FROM "{self.table}" WHERE source = %s',
                               (source,)).fetchone()
        return row[0] if row else 0


@pytest.fixture
def location(tmp_path: Path, pg_dsn: str, table_name: str) -> Location:
    config = fleet_config(SOURCES, tmp_path)
    config["sink"] = {"dsn": pg_dsn, "table": table_name}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text(  # launched at once, with no daemon to dequeue runs
        "telemetry:\n  enabled: false\nrun_coordinator:\n  module: dagster._core.run_coordinator\n"
        "  class: DefaultRunCoordinator\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PULL_PIPELINE_CONFIG": str(path),
           "PULL_PIPELINE_HOME": str(tmp_path / "state")}
    return Location(home, path, env, pg_dsn, table_name)


@pytest.fixture
def code_server(location: Location, tmp_path: Path) -> Iterator[int]:
    """A long-lived `dagster code-server start`, as deploy/workspace.yaml has it run."""
    with bench_code_server(location.env, tmp_path / "code_server.log") as (port, _):
        yield port


def finished(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRun:
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline:
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            return run
        time.sleep(0.5)
    logs = [entry.message for entry in instance.all_logs(run_id)][-8:]
    raise AssertionError(f"run {run_id} did not finish within {TIMEOUT} s: {run}, {logs}")


def scope_events(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.message for entry in instance.all_logs(run_id)
            if entry.message.startswith("pull_pipeline: this run worker built")]


def test_the_default_launcher_s_worker_builds_its_job_s_source(
    location: Location, code_server: int
) -> None:
    job, run_id = SourceNames("fleet_0001").pull_job, str(uuid.uuid4())
    launched = subprocess.run(
        [sys.executable, "-m", "dagster", "job", "launch", "-j", job, "--grpc-host", "127.0.0.1",
         "--grpc-port", str(code_server), "--run-id", run_id,
         "--tags", json.dumps({"dagster/partition": WINDOW})],
        env=location.env, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    assert launched.returncode == 0, launched.stderr
    with location.instance() as instance:
        run = finished(instance, run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS, instance.all_logs(run.run_id)[-5:]
        assert scope_events(instance, run.run_id) == [
            f"pull_pipeline: this run worker built 1 of {SOURCES} sources (fleet_0001), the ones "
            + "its run needs"]
    assert location.rows("fleet_0001") == ROWS_PER_WINDOW


def test_an_execute_run_worker_builds_the_sources_its_assets_name(location: Location) -> None:
    """A run of the implicit asset job across two sources, as the UI's Materialize makes."""
    keys = [SourceNames(name).readings for name in ("fleet_0001", "fleet_0005")]
    keys += [SourceNames(name).raw for name in ("fleet_0001", "fleet_0005")]
    origin = (ReconstructableRepository.for_module("pull_pipeline.definitions", "defs", str(ROOT))
              .get_reconstructable_job("__ASSET_JOB").get_python_origin())
    repository = build_definitions(load_project(location.config)).get_repository_def()
    with location.instance() as instance:
        run = instance.create_run_for_job(
            job_def=repository.get_implicit_global_asset_job_def(), 
            asset_selection=frozenset(keys), tags={"dagster/partition": WINDOW},
            job_code_origin=origin)
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id, instance_ref=instance.get_ref(),
                              set_exit_code_on_failure=True)
        worker = subprocess.run([sys.executable, "-m", "dagster", "api", "execute_run",
                                 serialize_value(args)], env=location.env, capture_output=True,
                                text=True, timeout=TIMEOUT, check=False)
        assert worker.returncode == 0, worker.stderr[-2000:]
        run = finished(instance, run.run_id)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert scope_events(instance, run.run_id) == [
            f"pull_pipeline: this run worker built 2 of {SOURCES} sources (fleet_0001, fleet_0005), "
            + "the ones its run needs"]
    assert (location.rows("fleet_0001"), location.rows("fleet_0005")) == (ROWS_PER_WINDOW,) * 2


def test_worker_args_are_read_from_argv_and_from_the_environment() -> None:
    args = ExecuteRunArgs(
        job_origin=ReconstructableRepository.for_module("pull_pipeline.definitions", "defs")
        .get_reconstructable_job("pull_fleet_0001").get_python_origin(),
        run_id="r1", instance_ref=None)
    text = serialize_value(args)
    compressed = base64.b64encode(zlib.compress(text.encode())).decode()
    dagster = ["/venv/bin/dagster", "api", "execute_run"]
    assert api_command_args([*dagster, text], {}) == args
    assert api_command_args(dagster, {"DAGSTER_EXECUTE_RUN_ARGS": text}) == args
    assert api_command_args([*dagster, "--compressed-input-json", compressed], {}) == args
    assert api_command_args(dagster, {"DAGSTER_COMPRESSED_EXECUTE_RUN_ARGS": compressed}) == args
    assert api_command_args(["/venv/bin/dagster", "api", "grpc", "-p", "4266"], {}) is None
    assert api_command_args(["pytest", text], {"DAGSTER_EXECUTE_RUN_ARGS": text}) is None


def test_only_keeps_the_named_sources_valid_or_broken(location: Location) -> None:
    config = yaml.safe_load(location.config.read_text())
    config["sources"]["fleet_0002"]["partitions"]["cadence"] = "fortnightly"  # broken
    path = location.home / "broken.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    project = load_project(path, contain=True)
    kept = only(project, {"fleet_0001", "fleet_0002"})
    assert list(kept.config.sources) == ["fleet_0001"]
    assert [broken.name for broken in kept.broken] == ["fleet_0002"]
    assert kept.config.sink == project.config.sink


def test_unreadable_worker_args_build_every_source(location: Location) -> None:
    """Arguments this cannot read (a NUL byte, truncated JSON, a Dagster upgrade's new shape)
    cost the worker time, never its run: every source is built, and no error escapes."""
    project = load_project(location.config)
    dagster = ["/venv/bin/dagster", "api", "execute_run"]
    reconstructing = DefinitionsLoadContext(load_type=DefinitionsLoadType.RECONSTRUCTION,
                                            repository_load_data=None)
    with DefinitionsLoadContext.scoped(reconstructing):
        for bad in ['{"__class__": "ExecuteRunArgs", "run_id": "\u0000"', "{\x00}", "{}"]:
            assert scoped_to_this_run(project, [*dagster, bad], {}) is project
        assert scoped_to_this_run(
            project, dagster, {"DAGSTER_COMPRESSED_EXECUTE_RUN_ARGS": "not base64"}) is project
