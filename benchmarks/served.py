"""What a code server pays for the code location: loading it, then serving it.

`dagster definitions validate` builds the definitions and their snapshot in one process; a
real code server (`dagster code-server start`, as deploy/workspace.yaml runs it) also
serializes the repository and every job's snapshot each time the webserver or the daemon
fetches the location (at start, on reload, after a restart). Both are measured here as the
CPU time of the code server's processes: once it answers, and again after a client has
fetched the whole location as the webserver and the daemon do.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import psutil

from benchmarks.daemon import code_server


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children."""
    root = psutil.Process(pid)
    total = 0.0
    for process in (root, *root.children(recursive=True)):
        try:
            times = process.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def served(env: dict[str, str], log: Path) -> dict[str, Any]:
    """Start a code server, fetch the location from it; CPU and wall time of both steps."""
    import dagster as dg
    from dagster._core.remote_origin import GrpcServerCodeLocationOrigin

    started = time.perf_counter()
    with code_server(env, log) as (port, pid):
        loaded_cpu, loaded_wall = tree_cpu_seconds(pid), time.perf_counter() - started
        fetch_started = time.perf_counter()
        origin = GrpcServerCodeLocationOrigin(host="127.0.0.1", port=port,
                                              location_name="pull_pipeline")
        with dg.DagsterInstance.ephemeral() as instance, origin.create_location(instance) as location:
            jobs = sum(len(repo.get_all_jobs()) for repo in location.get_repositories().values())
        fetched_wall = time.perf_counter() - fetch_started
        fetched_cpu = tree_cpu_seconds(pid)
    return {"load_cpu_seconds": loaded_cpu, "load_seconds": loaded_wall,
            "serve_cpu_seconds": fetched_cpu - loaded_cpu, "serve_seconds": fetched_wall,
            "jobs": jobs}
