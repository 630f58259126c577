"""`make dev` as the browser tests start it: the launcher, on free ports, in a temp folder.

The stack is the real one (`python -m pull_pipeline.devserver run`: the demo API, `dagster
dev`, the embedded PostgreSQL), with the repository's demo config changed only where a test
must be in control: every source paused (no schedule or recovery run races the clicks),
no in-step retries on the demo API (a window fails at once during an outage), a short
history (three windows), and paths inside the temp folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import yaml

from pull_pipeline.config.loader import CONFIG_ENV, STATE_ENV, read_yaml
from pull_pipeline.demo.history import DEMO_START_ENV
from pull_pipeline.sink import embedded
from pull_pipeline_tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
HISTORY_WINDOWS = 3
START_TIMEOUT = 240.0  # the launcher's own UI timeout is 180 s; a loaded 2-core box is slow

Config = dict[str, Any]


@dataclass(frozen=True)
class DevStack:
    """A running stack: where its UI is, and the demo API's outage switch."""

    url: str
    state: Path
    config: Path
    windows: tuple[str, ...]  # the partition keys of the demo sources, oldest first

    @property
    def outage_file(self) -> Path:
        return self.state / "demo" / "outage"

    def outage(self, on: bool) -> None:
        """Make the demo API answer 503 (on) or serve again (off)."""
        if on:
            self.outage_file.parent.mkdir(parents=True, exist_ok=True)
            self.outage_file.touch()
        else:
            self.outage_file.unlink(missing_ok=True)


def demo_config(state: Path) -> Config:
    """The repository's sources.yaml, made deterministic for clicking through (see above)."""
    config: Config = read_yaml((ROOT / "sources.yaml").read_text())
    config["landing"] = {"path": str(state / "landing")}
    for source in config["sources"].values():
        source["paused"] = True
    config["sources"]["demo_api"]["retries"] = {"attempts": 1}
    config["sources"]["demo_historian"]["url"] = f"sqlite:///{state / 'demo' / 'historian.db'}"
    return config


def history(now: datetime) -> tuple[str, tuple[str, ...]]:
    """The demo start (`HISTORY_WINDOWS` hours before this hour) and its hourly keys."""
    hour = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    start = hour - timedelta(hours=HISTORY_WINDOWS)
    keys = tuple((start + timedelta(hours=i)).strftime("%Y-%m-%d-%H:%M")
                 for i in range(HISTORY_WINDOWS))
    return start.strftime("%Y-%m-%dT%H:%M:%SZ"), keys


@contextmanager
def running_stack(
    workdir: Path, configure: Callable[[Config], Config] = lambda config: config
) -> Iterator[DevStack]:
    """Start the launcher with `configure(demo_config(...))`; stop it (as Ctrl-C does) after."""
    state = workdir / "state"
    state.mkdir(parents=True)
    config_path = workdir / "sources.yaml"
    config_path.write_text(yaml.safe_dump(configure(demo_config(state)), sort_keys=False))
    port, api_port = free_port(), free_port()
    start, windows = history(datetime.now(UTC))
    env = {key: value for key, value in os.environ.items() if key != "SINK_DSN"}
    env.update({CONFIG_ENV: str(config_path), STATE_ENV: str(state), DEMO_START_ENV: start})
    log = (workdir / "dev.log").open("wb")
    launcher = subprocess.Popen(
        [sys.executable, "-m", "pull_pipeline.devserver", "run", "--port", str(port),
         "--demo-api-port", str(api_port), "--dagster-home", str(workdir / "dagster_home")],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ui(url, launcher, workdir / "dev.log")
        yield DevStack(url=url, state=state, config=config_path, windows=windows)
    finally:
        launcher.send_signal(signal.SIGINT)
        try:
            launcher.wait(90)
        except subprocess.TimeoutExpired:
            launcher.kill()
            launcher.wait()
        log.close()
    assert_stopped(launcher, workdir, state, (port, api_port))


def assert_stopped(launcher: subprocess.Popen[bytes], workdir: Path, state: Path,
                   ports: tuple[int, ...]) -> None:
    """Ctrl-C left nothing behind: no Dagster process, no demo API, no embedded PostgreSQL."""
    import psutil  # installed with pgserver

    assert launcher.returncode == 0, (workdir / "dev.log").read_text()[-3000:]
    assert not embedded.is_running(state), "the embedded PostgreSQL still runs"
    left = [p.info["cmdline"] for p in psutil.process_iter(["cmdline"])
            if str(workdir) in " ".join(p.info["cmdline"] or [])]
    assert left == [], f"still running: {left}"
    for port in ports:
        with socket.socket() as probe:  # free again (as the launcher itself checks)
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", port))


def wait_for_ui(url: str, launcher: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if launcher.poll() is not None:
            raise RuntimeError(f"the dev launcher exited ({launcher.returncode}):\n"
                               + log.read_text()[-3000:])
        try:
            if httpx.get(f"{url}/server_info", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)
    raise RuntimeError(f"the Dagster UI did not answer on {url}:\n" + log.read_text()[-3000:])
