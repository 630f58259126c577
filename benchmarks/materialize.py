"""Materialize one window in a fresh process, as a scheduled run would, and measure it.

The child is Dagster's own CLI (`dagster asset materialize`), so the wall time includes
Python and Dagster start-up, loading the definitions and writing the run's events. Peak RSS
is the child's own `ru_maxrss` (see `benchmarks.peak`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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


def dagster_cli() -> str:
    """The `dagster` executable next to this interpreter (the project's venv)."""
    candidate = Path(sys.executable).parent / "dagster"
    return str(candidate) if candidate.exists() else "dagster"


def measure(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, int]:
    """Run `command` in a fresh process: (wall seconds, peak RSS in MB, exit status).

    Through `benchmarks.peak`, so that the peak RSS is the command's own (see there).
    """
    result = log.with_suffix(".peak.json")
    with log.open("wb") as out:
        subprocess.run([sys.executable, "-m", "benchmarks.peak", str(result), "--", *command],
                       env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                       cwd=PROJECT_ROOT, check=False)
    measured = json.loads(result.read_text())
    return measured["seconds"], measured["peak_rss_mb"], measured["returncode"]


def materialize(source: str, partition_key: str, env: dict[str, str], log: Path) -> Materialization:
    """Run `<source>/raw,<source>/readings` for one partition in a child process."""
    command = [
        dagster_cli(), "asset", "materialize", "-m", "pull_pipeline.definitions",
        "--select", f"{source}/raw,{source}/readings", "--partition", partition_key,
    ]
    seconds, peak_rss_mb, returncode = measure(command, env, log)
    result = Materialization(source, seconds, peak_rss_mb, returncode, log)
    if returncode == 0:
        result.raw = latest_metadata(env["DAGSTER_HOME"], [source, "raw"])
        result.readings = latest_metadata(env["DAGSTER_HOME"], [source, "readings"])
    return result


def prepare_instance(home: Path) -> None:
    """Create the Dagster instance up front, as a deployment already has it.

    It gets the project's dagster.yaml, as `make dev` sets up DAGSTER_HOME.
    """
    import dagster as dg

    home.mkdir(parents=True, exist_ok=True)
    settings = PROJECT_ROOT / "dagster.yaml"
    if settings.exists():
        shutil.copyfile(settings, home / "dagster.yaml")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        instance.get_runs(limit=1)
        instance.get_latest_materialization_event(dg.AssetKey(["warm", "up"]))


def latest_metadata(home: str, key: list[str]) -> dict[str, Any]:
    """The metadata of the latest materialization of `key`, as plain values."""
    import dagster as dg

    with dg.DagsterInstance.from_config(home) as instance:
        event = instance.get_latest_materialization_event(dg.AssetKey(key))
    if event is None or event.asset_materialization is None:
        return {}
    metadata = event.asset_materialization.metadata
    return {name: getattr(value, "value", value) for name, value in metadata.items()}
