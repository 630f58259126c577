"""`make dev`, `make psql`, `make stop`: the demo API and `dagster dev`, started and stopped together.

A launcher rather than a shell line, because `make dev` must:
- refuse at once, in one line naming the fix, what would otherwise fail later run by run
  (a Python without the embedded PostgreSQL) or leave half a stack running (a busy port);
- never leave Dagster running without its UI (`dagster dev` keeps its daemon when the
  webserver dies);
- stop everything it started on Ctrl-C: Dagster, the demo API, and the embedded PostgreSQL
  that the first run starts (unless it was already running before).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import NoReturn

import httpx

from pull_pipeline.config.loader import Project, load_project
from pull_pipeline.demo import api, sqldb
from pull_pipeline.demo.history import DEMO_START_ENV, demo_start
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.sink import embedded

UI_START_TIMEOUT = 180.0  # first start on a busy 2-core machine: code location, daemon, UI
PORT_TAKEN_AFTER = 20.0  # Dagster's webserver answers as soon as it holds its port
UI_LOST_AFTER = 60.0  # the UI not answering this long means it is gone
POLL_SECONDS = 2.0
STOP_GRACE = 30.0  # `dagster dev` gets this long to stop its processes before they are killed


MAKE_TARGETS = {"run": "dev", "psql": "psql", "stop": "stop"}


class Refusal(Exception):
    """A reason not to start (or to stop), said in one line."""


@dataclass(frozen=True)
class DevArgs:
    host: str
    port: int
    demo_api_port: int
    dagster_home: Path
    workspace: Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pull_pipeline.devserver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="the demo API and the Dagster UI (make dev)")
    run.add_argument("--host", default="127.0.0.1")
    run.add_argument("--port", type=int, default=3000)
    run.add_argument("--demo-api-port", type=int, default=8080)
    run.add_argument("--dagster-home", type=Path, default=None,
                     help="default: $DAGSTER_HOME, else <state folder>/dagster_home")
    run.add_argument("--workspace", type=Path, default=Path("workspace.yaml"))
    commands.add_parser("psql", help="psql on the embedded PostgreSQL (make psql)")
    commands.add_parser("stop", help="stop the embedded PostgreSQL (make stop)")
    args = parser.parse_args(argv or ["run"])
    try:
        project = load_project(contain=True)  # a broken source shows in the UI, not here
        if args.command == "psql":
            return psql(project)
        if args.command == "stop":
            return stop(project)
        home = args.dagster_home or Path(os.environ.get("DAGSTER_HOME")
                                         or project.state_dir / "dagster_home")
        return dev(project, DevArgs(args.host, args.port, args.demo_api_port,
                                    home.resolve(), args.workspace.resolve()))
    except (Refusal, PullPipelineError) as exc:
        print(f"make {MAKE_TARGETS[args.command]}: {exc}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        return 130


def dev(project: Project, args: DevArgs) -> int:
    """Check, start the demo API and Dagster, watch the UI; on any exit stop what started."""
    check_python(project)
    check_port(args.host, args.port, "the Dagster UI", "PORT")
    check_port(args.host, args.demo_api_port, "the demo API", "DEMO_API_PORT")
    uses_embedded = embedded_sink(project)
    postgres_was_running = uses_embedded and embedded.is_running(project.state_dir)
    prepare_dagster_home(args.dagster_home)
    sqldb.build_historian(sqldb.default_path(), sqldb.default_start())
    outage = project.state_dir / "demo" / "outage"
    if outage.exists():
        say(f"the demo API answers 503 while {outage} exists (a demo outage): rm it to end it")
    env = dev_environment(args)
    demo_api = api.serve(args.host, args.demo_api_port, env["DEMO_API_KEY"], outage)
    say(f"demo API on http://{args.host}:{args.demo_api_port}/readings")
    dagster: subprocess.Popen[bytes] | None = None
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Also SIGINT: a shell starting us in the background sets it to "ignore", which
        # Python and then Dagster's processes would inherit, deaf to Ctrl-C and to us.
        signal.signal(signum, _interrupt)
    try:
        dagster = subprocess.Popen(
            [sys.executable, "-m", "dagster", "dev", "-w", str(args.workspace),
             "-h", args.host, "-p", str(args.port)],
            env=env, start_new_session=True,  # its own group: stopped by us, as a whole
        )
        return watch(dagster, args.host, args.port)
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not cut this short
        say("stopping…")
        if dagster is not None:
            stop_process_group(dagster)
        demo_api.shutdown()
        say("stopped Dagster and the demo API")
        if uses_embedded and not postgres_was_running and embedded.stop_embedded(project.state_dir):
            say("stopped the embedded PostgreSQL")


def check_python(project: Project) -> None:
    """The embedded sink needs pgserver (CPython 3.11/3.12): say so once, not in every run."""
    if embedded_sink(project) and not embedded.available():
        version = f"{sys.version_info.major}.{sys.version_info.minor}"
        raise Refusal(
            f"Python {version} has no pgserver wheel, which the embedded PostgreSQL needs: "
            "use Python 3.11 or 3.12 (rm -rf .venv; make dev PYTHON=python3.12), or set "
            "SINK_DSN=postgresql://... to load into your own PostgreSQL")


def embedded_sink(project: Project) -> bool:
    return not (project.config.sink.dsn or os.environ.get("SINK_DSN"))


def check_port(host: str, port: int, what: str, variable: str) -> None:
    """Fail before anything starts when `port` is taken, naming the make variable to change."""
    if not port_free(host, port):
        raise Refusal(f"port {port} for {what} is in use; choose another: "
                      f"make dev {variable}={port + 1}")


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def prepare_dagster_home(home: Path) -> None:
    """Dagster reads dagster.yaml from $DAGSTER_HOME: give it the project's."""
    home.mkdir(parents=True, exist_ok=True)
    if Path("dagster.yaml").is_file():
        shutil.copyfile("dagster.yaml", home / "dagster.yaml")


def dev_environment(args: DevArgs) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(args.dagster_home)
    env["DEMO_API_PORT"] = str(args.demo_api_port)
    env.setdefault("DEMO_API_KEY", "demo-key")
    env.setdefault(DEMO_START_ENV, demo_start(datetime.now(UTC)))
    return env


def watch(dagster: subprocess.Popen[bytes], host: str, port: int) -> int:
    """Wait for the UI, then keep checking it; return when Dagster exits or the UI is gone.

    The port is checked before the start, but another program may take it while Dagster
    starts: the webserver then dies and `dagster dev` carries on without it. A port held
    by something that does not answer as Dagster's UI for `PORT_TAKEN_AFTER` means that.
    """
    url = f"http://{host}:{port}"
    started, last_seen, seen = time.monotonic(), time.monotonic(), False
    taken_since: float | None = None
    while True:
        code = dagster.poll()
        if code is not None:
            say(f"dagster dev exited with status {code}")
            return code or 1
        if ui_answers(url):
            if not seen:
                say(f"Dagster UI on {url}; Ctrl-C stops everything")
            seen, last_seen = True, time.monotonic()
        elif not seen and not port_free(host, port):
            taken_since = taken_since or time.monotonic()
            if time.monotonic() - taken_since > PORT_TAKEN_AFTER:
                say(f"port {port} was taken by another program while Dagster started; "
                    f"choose another: make dev PORT={port + 1}")
                return 1
        elif not seen and time.monotonic() - started > UI_START_TIMEOUT:
            say(f"the Dagster UI did not come up on {url} within {UI_START_TIMEOUT:.0f} s")
            return 1
        elif seen and time.monotonic() - last_seen > UI_LOST_AFTER:
            say(f"the Dagster UI on {url} stopped answering, so Dagster is stopped too")
            return 1
        time.sleep(POLL_SECONDS)


def ui_answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/server_info", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Ctrl-C for `dagster dev` and its children; then kill whatever of the group is left."""
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(STOP_GRACE)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def psql(project: Project) -> NoReturn:
    """Replace this process by psql on the embedded database (its `\\q` returns to the shell)."""
    if not embedded_sink(project):
        raise Refusal("the sink is not the embedded PostgreSQL (sink.dsn or SINK_DSN is set): "
                      "use your own psql on that DSN")
    check_python(project)
    command = embedded.psql_command(project.state_dir)
    os.execv(command[0], command)


def stop(project: Project) -> int:
    check_python(project)
    if embedded.stop_embedded(project.state_dir):
        print(f"stopped the embedded PostgreSQL in {project.state_dir / 'postgres'}")
    else:
        print("the embedded PostgreSQL was not running")
    return 0


def say(message: str) -> None:
    print(f"make dev: {message}", flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
