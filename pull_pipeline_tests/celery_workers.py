"""Celery workers for tests: real `dagster-celery worker start` processes, each in its own
folder with its own DAGSTER_HOME and sources.yaml, on a RabbitMQ virtual host of their own.

A worker is started in a new session so that killing its process group (the CLI, Celery's main
process and its pool child) is what losing its machine looks like to the broker and to Dagster.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
AMQP = "127.0.0.1:5672"


@dataclass
class Worker:
    name: str  # Celery's node name: <name>@<host>
    folder: Path
    process: subprocess.Popen[bytes]

    @property
    def log(self) -> str:
        return (self.folder / "worker.log").read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL every process of the worker, as a lost machine: no goodbye to the broker."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)


def start_worker(root: Path, name: str, sources_yaml: str, env: dict[str, str]) -> Worker:
    """A worker in `root/name`: deploy/dagster.yaml as its DAGSTER_HOME, its own sources.yaml."""
    folder = root / name
    home = folder / "dagster_home"
    home.mkdir(parents=True)
    shutil.copy(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    (folder / "sources.yaml").write_text(sources_yaml)
    bin_dir = Path(sys.executable).parent  # dagster-celery runs `celery` from the PATH
    command = [str(bin_dir / "dagster-celery"), "worker", "start",
               "-A", "dagster_celery.app", "-y", str(DEPLOY / "celery.yaml"), "-n", name,
               "--loglevel", "WARNING", "--",
               "--concurrency=1", "--without-gossip", "--without-mingle"]
    worker_env = {**os.environ, **env, "DAGSTER_HOME": str(home),
                  "PULL_PIPELINE_CONFIG": str(folder / "sources.yaml"),
                  "PULL_PIPELINE_HOME": str(folder / ".pull_pipeline"),
                  "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                  "PYTHONPATH": str(ROOT)}  # the code, as an image would hold it
    with (folder / "worker.log").open("wb") as log:
        process = subprocess.Popen(command, cwd=folder, env=worker_env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    return Worker(f"{name}@{os.uname().nodename}", folder, process)


def wait_until_ready(broker: str, workers: list[Worker], timeout: float = 60) -> None:
    """Return once every worker answers a ping through the broker."""
    from celery import Celery

    app = Celery(broker=broker)
    deadline = time.monotonic() + timeout
    missing = {w.name for w in workers}
    try:
        while missing:
            for worker in workers:
                if worker.process.poll() is not None:
                    raise AssertionError(f"worker {worker.name} exited:\n{worker.log}")
            replies = app.control.ping(timeout=0.5)
            missing -= {name for reply in replies for name in reply}
            if missing and time.monotonic() > deadline:
                raise AssertionError(f"workers {sorted(missing)} never answered a ping")
    finally:
        app.close()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture
def celery_broker() -> Iterator[str]:
    """A broker URL on a fresh RabbitMQ virtual host, deleted afterwards: no test ever sees
    another's queued steps."""
    if shutil.which("rabbitmqctl") is None:
        pytest.skip("rabbitmqctl not found: the Celery tests need the local RabbitMQ "
                    f"({AMQP}) to create a virtual host of their own")
    vhost = f"pp_test_{uuid.uuid4().hex[:10]}"
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    yield f"pyamqp://guest:guest@{AMQP}/{vhost}"
    _rabbitmqctl("delete_vhost", vhost)
