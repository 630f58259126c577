"""Run workers for the distributed test: one run per window, each in its own process.

`python -m pull_pipeline_tests.run_windows KEY...` loads the code location once, sets the pool
limits as the daemon would, and forks one process per window, each orchestrating its run as the daemon's run worker would (its steps go
to the Celery workers). Forking after the load spares each run the ~5 s of CPU that starting
Python, Dagster and the definitions costs. Exit status: the number of runs that failed.
"""

from __future__ import annotations

import multiprocessing
import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository

from pull_pipeline_tests.distributed_defs import JOB


def run_window(partition: str) -> None:
    job = ReconstructableRepository.for_module(
        "pull_pipeline_tests.distributed_defs", "defs").get_reconstructable_job(JOB)
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(job, instance, tags={"dagster/partition": partition},
                                raise_on_error=False)
    sys.exit(0 if result.success else 1)


def main(partitions: list[str]) -> int:
    # Load once before forking, so every child starts with the definitions built.
    repository = ReconstructableRepository.for_module("pull_pipeline_tests.distributed_defs", "defs")
    repository.get_reconstructable_job(JOB).get_definition()
    # What the daemon's first tick of apply_pool_limits does: each source's pool gets its
    # `concurrency:` before any run claims a slot in it.
    with dg.DagsterInstance.get() as instance:
        pool_limits = repository.get_definition().get_sensor_def("apply_pool_limits")
        pool_limits(dg.build_sensor_context(instance=instance))
    context = multiprocessing.get_context("fork")
    children = [context.Process(target=run_window, args=(key,), name=key) for key in partitions]
    for child in children:
        child.start()
    for child in children:
        child.join()
    return sum(child.exitcode != 0 for child in children)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
