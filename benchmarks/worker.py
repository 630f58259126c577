"""One source's run worker in a fresh process, as Dagster starts one.

`python -m benchmarks.worker SOURCE PARTITION` (with DAGSTER_HOME and PULL_PIPELINE_CONFIG
set) creates a run of `pull_<SOURCE>` for one window and prints the command of its worker:
`dagster api execute_run <args>`, what the Kubernetes and Docker run launchers start (the
default launcher's worker, spawned by the code server, loads the definitions the same way).
The caller measures that command: its CPU time is Python's and Dagster's start-up, loading
the definitions (in a run worker only the run's sources, `pull_pipeline/defs/run_scope.py`)
and the run's own work, so a window with no rows shows the start-up alone.
"""

from __future__ import annotations

import json
import os
import sys

from benchmarks.materialize import PROJECT_ROOT


def worker_command(source: str, partition: str) -> list[str]:
    """Create the run (on the instance of $DAGSTER_HOME); its worker's command line."""
    import dagster as dg
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import serialize_value

    from pull_pipeline.config.loader import load_project
    from pull_pipeline.definitions import build_definitions
    from pull_pipeline.defs.naming import SourceNames
    from pull_pipeline.defs.run_scope import only

    job = SourceNames(source).pull_job
    job_def = build_definitions(only(load_project(), {source})).get_repository_def().get_job(job)
    origin = (ReconstructableRepository.for_module("pull_pipeline.definitions", "defs",
                                                   str(PROJECT_ROOT))
              .get_reconstructable_job(job).get_python_origin())
    with dg.DagsterInstance.from_config(os.environ["DAGSTER_HOME"]) as instance:
        run = instance.create_run_for_job(job_def=job_def, job_code_origin=origin,
                                          tags={"dagster/partition": partition})
        args = ExecuteRunArgs(job_origin=origin, run_id=run.run_id,
                              instance_ref=instance.get_ref(), set_exit_code_on_failure=True)
    return [sys.executable, "-m", "dagster", "api", "execute_run", serialize_value(args)]


if __name__ == "__main__":
    print(json.dumps(worker_command(sys.argv[1], sys.argv[2])))
