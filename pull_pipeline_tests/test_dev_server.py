"""`make dev`'s launcher refuses at start-up, in one line, what would fail later.

The whole stack (start, UI, Ctrl-C leaving nothing behind) is exercised by the browser tests
(pull_pipeline_tests/browser/stack.py); these are the checks that must answer in seconds.
"""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from pull_pipeline import devserver
from pull_pipeline.config.loader import load_project
from pull_pipeline.demo import api
from pull_pipeline.demo.history import DEMO_SOURCES, demo_start, with_demo_start
from pull_pipeline.sink import embedded

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def launch(*args: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pull_pipeline.devserver", "run", *args,
         "--dagster-home", str(tmp_path / "home")],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "", "PULL_PIPELINE_HOME": str(tmp_path / "state")},
    )


@pytest.mark.parametrize(("flag", "variable"), [("--port", "PORT"),
                                                ("--demo-api-port", "DEMO_API_PORT")])
def test_a_busy_port_fails_at_once_naming_the_override(
    busy_port: int, flag: str, variable: str, tmp_path: Path
) -> None:
    done = launch(flag, str(busy_port), tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"make dev: port {busy_port} for "
                           f"{'the Dagster UI' if variable == 'PORT' else 'the demo API'} is in "
                           f"use; choose another: make dev {variable}={busy_port + 1}\n")
    assert done.stdout == ""
    assert not (tmp_path / "home").exists()  # nothing was started or written


def test_a_python_without_the_embedded_postgresql_is_refused_once(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(embedded, "available", lambda: False)  # as on Python 3.13
    monkeypatch.delenv("SINK_DSN", raising=False)
    monkeypatch.chdir(ROOT)
    assert devserver.main(["run", "--port", "1"]) == 2
    line = capsys.readouterr().err
    assert line.count("\n") == 1
    assert "has no pgserver wheel" in line and "python3.12" in line and "SINK_DSN" in line

    monkeypatch.setenv("SINK_DSN", "postgresql://pipeline@db.example.com/metrics")
    devserver.check_python(load_project(ROOT / "sources.yaml"))  # your own database: fine


@pytest.mark.parametrize("now", [datetime(2026, 3, 1, 0, 0, 1, tzinfo=UTC),
                                 datetime(2026, 3, 1, 23, 59, 59, tzinfo=UTC)])
def test_the_demo_history_stays_within_its_recovery_horizon(now: datetime) -> None:
    project = with_demo_start(load_project(ROOT / "sources.yaml"), demo_start(now))
    for name in DEMO_SOURCES:
        source = project.config.sources[name]
        start = datetime.fromisoformat(source.partitions.start)
        assert start == datetime(2026, 2, 28, tzinfo=UTC)
        # Covered from the first start, and still after a day of running.
        assert now + timedelta(days=1) - start <= source.recovery.horizon, name


def test_the_demo_api_answers_503_during_an_outage(tmp_path: Path) -> None:
    outage = tmp_path / "outage"
    server = api.serve("127.0.0.1", 0, "demo-key", outage)
    url = f"http://127.0.0.1:{server.server_address[1]}/readings?start=0&end=60"
    try:
        assert httpx.get(url, headers={"X-API-Key": "demo-key"}).status_code == 200
        outage.touch()
        answer = httpx.get(url, headers={"X-API-Key": "demo-key"})
        assert answer.status_code == 503 and str(outage) in answer.json()["error"]
        outage.unlink()
        assert httpx.get(url, headers={"X-API-Key": "wrong"}).status_code == 401
    finally:
        server.shutdown()
