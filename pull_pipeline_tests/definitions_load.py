"""Load a code location the way Dagster's code server does, and report what it cost.

`python -m pull_pipeline_tests.definitions_load SOURCES_YAML [--profile OUT]` loads the
definitions through the entry point Dagster calls (`pull_pipeline.definitions:defs`, with
$PULL_PIPELINE_CONFIG set), resolves every job, and makes the repository's snapshot with
every job's (what the code server sends to the webserver and the daemon), then prints one
JSON line: CPU seconds of the whole process (imports included) and of the load alone, wall
seconds, peak RSS, and the number of warnings by category.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import time
import warnings
from typing import Any


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def load(path: str) -> dict[str, Any]:
    """Build, resolve and snapshot the definitions of `path`; what it took."""
    started_cpu, started_wall = cpu_seconds(), time.perf_counter()
    from dagster._core.remote_representation.external_data import RepositorySnap

    from pull_pipeline.config.loader import CONFIG_ENV
    from pull_pipeline.definitions import defs

    os.environ[CONFIG_ENV] = path
    imported = cpu_seconds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        repository = defs().get_repository_def()
        jobs = repository.get_all_jobs()
        RepositorySnap.from_def(repository)
    return {
        "jobs": len(jobs),
        "cpu_s": round(cpu_seconds(), 2),
        "load_cpu_s": round(cpu_seconds() - imported, 2),
        "import_cpu_s": round(imported - started_cpu, 2),
        "wall_s": round(time.perf_counter() - started_wall, 2),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "warnings": dict(collections.Counter(w.category.__name__ for w in caught)),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m pull_pipeline_tests.definitions_load")
    parser.add_argument("config")
    parser.add_argument("--profile", help="write a cProfile of the load to this file")
    args = parser.parse_args(argv)
    if args.profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(load, args.config)
        profiler.dump_stats(args.profile)
    else:
        result = load(args.config)
    json.dump(result, sys.stdout)
    print()


if __name__ == "__main__":
    main()
