"""More than one machine: every step on dagster-celery workers that share no disk.

The deployment of deploy/: runs, events and schedules in PostgreSQL (deploy/dagster.yaml),
steps sent through RabbitMQ to Celery workers (deploy/celery.yaml), raw windows landed in S3,
step logs uploaded to S3. Two workers and the daemon's run workers (run_windows.py) run in
folders of their own. One worker is killed in the middle of a window: its step goes back on
the queue, the other worker runs it again, and every window's rows are exact.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest
import yaml

from pull_pipeline.defs.executor import BROKER_ENV, CELERY_SETTINGS
from pull_pipeline_tests import helm_chart
from pull_pipeline_tests.celery_workers import (
    DEPLOY,
    ROOT,
    Worker,
    celery_broker,  # noqa: F401 - fixture
    start_worker,
    wait_until_ready,
)
from pull_pipeline_tests.dagster_pg import DagsterDb, dagster_db  # noqa: F401 - fixture
from pull_pipeline_tests.s3_server import ACCESS_KEY, SECRET_KEY, Bucket
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

# The suite's second pass changes only the sink (TimescaleDB); nothing in the Celery deployment
# depends on it, and its two worker processes are the slowest part of this file.
plain_pass_only = pytest.mark.skipif(
    bool(os.environ.get("PULL_PIPELINE_TIMESCALE_DSN")),
    reason="the Celery deployment runs in the plain PostgreSQL pass only: the sink flavour "
    "changes nothing in it, and it costs ~20 s of CPU in five processes",
)

WINDOWS = ["2024-01-01-00:00", "2024-01-01-01:00", "2024-01-01-02:00"]
HOUR = timedelta(hours=1)


def test_the_fleet_workspace_is_valid_and_names_the_location() -> None:
    """deploy/workspace.yaml, checked by Dagster's own workspace schema (no server needed)."""
    from dagster._core.workspace.config_schema import ensure_workspace_config

    path = DEPLOY / "workspace.yaml"
    config = yaml.safe_load(path.read_text())
    ensure_workspace_config(config, str(path))
    [entry] = config["load_from"]
    assert entry["grpc_server"]["location_name"] == "pull_pipeline"
    assert f"-p {entry['grpc_server']['port']}" in path.read_text()  # the command it documents


def test_deploy_settings_match_the_shipped_ones() -> None:
    """deploy/ repeats what the project's own files decide: keep them equal."""
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    assert {k: v for k, v in deployed.items() if k not in ("storage", "compute_logs")} == {
        k: v for k, v in shipped.items() if k != "storage"}, (
        "deploy/dagster.yaml must repeat every setting of dagster.yaml but storage and compute_logs")
    assert shipped["storage"]["custom"]["class"] == "SqliteStorage"  # one machine's
    storage = deployed["storage"]["custom"]
    assert (storage["module"], storage["class"]) == ("pull_pipeline.defs.instance_storage",
                                                      "PooledPostgresStorage")
    assert storage["config"]["postgres_db"]["scheme"] == "postgresql+psycopg2"
    celery = yaml.safe_load((DEPLOY / "celery.yaml").read_text())["execution"]["config"]
    assert celery["config_source"] == CELERY_SETTINGS
    assert celery["broker"] == {"env": BROKER_ENV}


def test_helm_values_fit_the_chart_and_the_project() -> None:
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    assert helm_chart.problems(values) == []
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert importlib.util.find_spec(args[args.index("-m") + 1]) is not None
    launcher = values["runLauncher"]["config"]["k8sRunLauncher"]
    assert launcher["envSecrets"] == deployment["envSecrets"]  # run pods see the same secrets
    # What the chart cannot express comes from dagster.yaml, unchanged.
    shipped = yaml.safe_load((ROOT / "dagster.yaml").read_text())
    extra = values["additionalInstanceConfig"]
    assert extra == {key: shipped[key] for key in extra}
    assert values["pythonLogs"]["managedPythonLoggers"] == (
        shipped["python_logs"]["managed_python_loggers"])
    deployed = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    s3_logs = values["computeLogManager"]["config"]["s3ComputeLogManager"]
    assert s3_logs["prefix"] == deployed["compute_logs"]["config"]["prefix"]


def test_the_image_recipe_builds_from_this_repository() -> None:
    """No Docker engine here: check what a build would need. Every COPY source exists and is
    not in the build's ignore file, the extras it installs exist, its Python is one the
    project supports, and its default command serves the module the Helm values name."""
    lines = (DEPLOY / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(maxsplit=1) for line in lines if line and not line.startswith("#")]
    ignored = {line for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
               if line and not line.startswith("#")}
    copies = [args.split()[:-1] for op, args in instructions if op == "COPY"]
    for source in (s for sources in copies for s in sources):
        assert (ROOT / source).exists() and source not in ignored, source
    (base,) = [args for op, args in instructions if op == "FROM"]
    assert base == "python:3.12-slim"  # pgserver (the embedded sink) has 3.11/3.12 wheels only
    (install,) = [args for op, args in instructions if op == "RUN" and "pip install" in args]
    extras = install.split("[")[1].split("]")[0].split(",")
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert set(extras) <= set(pyproject["project"]["optional-dependencies"])
    (command,) = [json.loads(args) for op, args in instructions if op == "CMD"]
    values = yaml.safe_load((DEPLOY / "helm-values.yaml").read_text())
    grpc_args = values["dagster-user-deployments"]["deployments"][0]["dagsterApiGrpcArgs"]
    assert command[command.index("-m"):] == grpc_args


@pytest.fixture
def deployment_env(
    celery_broker: str, dagster_db: DagsterDb, s3_bucket: Bucket,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """What every machine of the deployment gets in its environment."""
    env = {
        "PULL_PIPELINE_EXECUTOR": "celery",
        "DAGSTER_CELERY_BROKER_URL": celery_broker,
        **dagster_db.env(),
        "DAGSTER_COMPUTE_LOG_BUCKET": s3_bucket.name,
        "AWS_ENDPOINT_URL_S3": s3_bucket.endpoint,
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": "us-east-1",
        "TEST_S3_KEY": ACCESS_KEY,
        "TEST_S3_SECRET": SECRET_KEY,
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


@pytest.fixture
def daemon(tmp_path: Path, deployment_env: dict[str, str], sources_yaml: str,
           monkeypatch: pytest.MonkeyPatch) -> Path:
    """The run workers' machine (this test's process and the runs it starts): its own folder
    with deploy/dagster.yaml as DAGSTER_HOME, and the instance's tables created once, as
    `dagster instance migrate` does before a deployment starts."""
    machine = tmp_path / "daemon"
    home = machine / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    (machine / "sources.yaml").write_text(sources_yaml)
    for key, value in {"DAGSTER_HOME": home, "PULL_PIPELINE_CONFIG": machine / "sources.yaml",
                       "PULL_PIPELINE_HOME": machine / ".pull_pipeline"}.items():
        monkeypatch.setenv(key, str(value))
    dg.DagsterInstance.from_config(str(home)).dispose()
    return machine


@pytest.fixture
def workers(tmp_path: Path, daemon: Path, deployment_env: dict[str, str],
            sources_yaml: str) -> Iterator[list[Worker]]:
    started = [start_worker(tmp_path / "machines", name, sources_yaml, deployment_env)
               for name in ("worker_a", "worker_b")]
    try:
        yield started
    finally:
        for worker in started:
            if worker.process.poll() is None:
                worker.kill()


@pytest.fixture
def sources_yaml(
    readings_api: ReadingsApi, s3_bucket: Bucket, pg_dsn: str, table_name: str
) -> str:
    readings_api.readings = sample_readings(duration=len(WINDOWS) * HOUR)
    source = readings_api.source_config(concurrency=2)
    return yaml.safe_dump({
        "sink": {"dsn": pg_dsn, "table": table_name},
        "landing": {"path": s3_bucket.url("landing"), "s3": s3_bucket.config},
        "sources": {"plant": source},
    })


def launch(machine: Path, partitions: list[str]) -> subprocess.Popen[bytes]:
    """One run per window, each orchestrated by a process of its own on the daemon's machine."""
    with (machine / "runs.log").open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "pull_pipeline_tests.run_windows", *partitions],
            cwd=machine, stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": str(ROOT)})


def celery_steps(instance: dg.DagsterInstance) -> list[tuple[str, str, str]]:
    """(run id, step key, worker) for every step a Celery worker started, oldest first."""
    steps = []
    for run in instance.get_runs():
        records = instance.get_records_for_run(
            run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT).records
        for record in records:
            event = record.event_log_entry.dagster_event
            data = event.engine_event_data if event else None
            if event and data and "Celery worker" in data.metadata:
                steps.append((run.run_id, str(event.step_key),
                              str(data.metadata["Celery worker"].value)))
    return steps


@plain_pass_only
def test_windows_spread_over_workers_and_survive_a_killed_one(
    tmp_path: Path, daemon: Path, workers: list[Worker], deployment_env: dict[str, str],
    readings_api: ReadingsApi, s3_bucket: Bucket, pg_dsn: str, table_name: str
) -> None:
    # Two seconds a page until the kill: the first windows are still being fetched then.
    readings_api.delay = 2.0
    started = time.monotonic()
    runs = launch(daemon, WINDOWS)  # while the workers boot
    home = daemon / "dagster_home"
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            wait_until_ready(deployment_env["DAGSTER_CELERY_BROKER_URL"], workers)
            victim = wait_for_a_fetching_step(instance, readings_api, workers)
            victim.kill()
            killed_at = time.monotonic() - started
            readings_api.delay = 0.0
            failed_runs = runs.wait(timeout=120)
            elapsed = time.monotonic() - started
            steps = celery_steps(instance)
            statuses = [run.status for run in instance.get_runs()]
    finally:
        if runs.poll() is None:
            runs.kill()

    assert failed_runs == 0, (daemon / "runs.log").read_text()[-5000:]
    assert statuses == [dg.DagsterRunStatus.SUCCESS] * len(WINDOWS)
    survivor = next(w for w in workers if w is not victim)
    by_worker = {worker for _, _, worker in steps}
    assert {victim.name, survivor.name} <= by_worker, steps
    # The step the victim had started was run again, to the end, by the survivor.
    cut = [(run, step) for run, step, worker in steps if worker == victim.name]
    assert any((run, step, survivor.name) in steps for run, step in cut), steps

    assert loaded_rows(pg_dsn, table_name) == expected_rows()
    landed = sorted(key for key in s3_bucket.keys("landing/"))
    assert landed == [f"landing/plant/{w}.parquet" for w in WINDOWS]
    assert s3_bucket.keys("dagster/compute-logs/"), "no step log reached S3"
    # Every machine's folder holds only what it was given and its own logs: no landed window,
    # no step output, no compute log that another machine would have to read.
    local = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert local == {"dagster.yaml", "sources.yaml", "worker.log", "runs.log",
                     "dagster_celery_config.py"}
    print(f"\n3 windows, 2 workers, one killed at {killed_at:.1f} s: done in {elapsed:.1f} s")


def wait_for_a_fetching_step(
    instance: dg.DagsterInstance, api: ReadingsApi, workers: list[Worker], timeout: float = 60
) -> Worker:
    """The worker running a `raw` step that has already fetched a page from the source."""
    deadline = time.monotonic() + timeout
    names = {w.name: w for w in workers}
    while time.monotonic() < deadline:
        fetching = [worker for _, step, worker in celery_steps(instance) if step.endswith("raw")]
        if fetching and api.requests:
            return names[fetching[0]]
        time.sleep(0.2)
    raise AssertionError(f"no raw step started on a worker within {timeout} s")


def loaded_rows(dsn: str, table: str) -> list[tuple[str, float, float]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(f"SELECT sensor_tag, extract(epoch FROM ts)::float8, sensor_value "
                            f"FROM {table} ORDER BY sensor_tag, ts").fetchall()
    return [(tag, float(ts), float(value)) for tag, ts, value in rows]


def expected_rows() -> list[tuple[str, float, float]]:
    readings = sample_readings(duration=len(WINDOWS) * HOUR)
    return sorted((r["sensor_tag"], float(r["relative_time"]), float(r["sensor_value"]))
                  for r in readings)
