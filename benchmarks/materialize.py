"""Materialize one window (or a range) in a fresh process, as a scheduled run would, and
measure it.

The child is Dagster's own CLI (`dagster asset materialize`), so the wall time includes
Python and Dagster start-up, loading the definitions and writing the run's events. Peak RSS
and CPU time are the child's own (see `benchmarks.peak`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from dagster import DagsterInstance

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Process:
    """One measured child process."""

    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    returncode: int
    timed_out: bool


@dataclass
class Materialization:
    """One measured run: wall time, peak RSS and the two assets' metadata."""

    source: str
    seconds: float
    peak_rss_mb: float
    returncode: int
    log: Path
    raw: dict[str, Any] = field(default_factory=dict)
    readings: dict[str, Any] = field(default_factory=dict)
    cpu_seconds: float = 0.0


def dagster_cli() -> str:
    """The `dagster` executable next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / "dagster"
    return str(candidate) if candidate.exists() else "dagster"


def measure(command: list[str], env: dict[str, str], log: Path,
            timeout: float | None = None) -> Process:
    """Run `command` in a fresh process, killed after `timeout` seconds; output to `log`.

    Through `benchmarks.peak`, so that the peak RSS is the command's own (see there).
    """
    result = log.with_suffix(".peak.json")
    bound = ["--timeout", str(timeout)] if timeout else []
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-m", "benchmarks.peak", str(result), *bound, "--",
                        *command], env={**os.environ, **env}, stdout=out,
                       stderr=subprocess.STDOUT, cwd=PROJECT_ROOT, check=False)
    return Process(**json.loads(result.read_text()))


def materialize(source: str, partition: str, env: dict[str, str], log: Path,
                timeout: float | None = None) -> Materialization:
    """Run `<source>/raw,<source>/readings` for one partition, or for a range `first...last`
    in one run (as a backfill's run, see `benchmarks.ranged`), in a child process."""
    selection = f"{source}/raw,{source}/readings"
    command = ([sys.executable, "-m", "benchmarks.ranged", selection, partition]
               if "..." in partition else
               [dagster_cli(), "asset", "materialize", "-m", "pull_pipeline.definitions",
                "--select", selection, "--partition", partition])
    run = measure(command, env, log, timeout)
    result = Materialization(source, run.seconds, run.peak_rss_mb, run.returncode, log,
                             cpu_seconds=run.cpu_seconds)
    if run.returncode == 0:
        result.raw = latest_metadata(env["DAGSTER_HOME"], [source, "raw"])
        result.readings = latest_metadata(env["DAGSTER_HOME"], [source, "readings"])
    return result


def prepare_instance(home: Path, overrides: Mapping[str, Any] | None = None) -> None:
    """Create the Dagster instance up front, as a deployment already has it.

    It gets the project's dagster.yaml, as `make dev` sets up DAGSTER_HOME, with `overrides`
    (top-level keys, such as `storage`) replacing its own.
    """
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    settings = yaml.safe_load((PROJECT_ROOT / "dagster.yaml").read_text()) or {}
    (home / "dagster.yaml").write_text(yaml.safe_dump({**settings, **(overrides or {})}))
    with open_instance(home) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey(["warm", "up"]))


@contextmanager
def open_instance(home: str | Path) -> Iterator[DagsterInstance]:
    """The instance in `home`, with DAGSTER_HOME pointing there while it is open (the
    shipped dagster.yaml keeps its SQLite files under `{env: DAGSTER_HOME}`)."""
    import dagster as dg

    before = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            yield instance
    finally:
        if before is None:
            del os.environ["DAGSTER_HOME"]
        else:
            os.environ["DAGSTER_HOME"] = before


def latest_metadata(home: str, key: list[str]) -> dict[str, Any]:
    """The metadata of the latest materialization of `key`, as plain values."""
    import dagster as dg

    with open_instance(home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        return {}
    metadata = event.asset_materialization.metadata
    return {name: getattr(value, "value", value) for name, value in metadata.items()}
