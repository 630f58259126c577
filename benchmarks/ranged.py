"""One run over a range of windows: `python -m benchmarks.ranged SELECTION FIRST...LAST`.

This is the run the daemon launches for each part of a backfill: the assets' implicit job,
tagged with the range's first and last partition key, executed in this process. `dagster
asset materialize --partition-range` does the same, but only for assets whose backfill
policy is `single_run`; the project's assets cut backfills into runs of
`backfill.windows_per_run` windows (`multi_run`), so the benchmark launches such a run itself.
"""

from __future__ import annotations

import sys

import dagster as dg
from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
)

MODULE = "pull_pipeline.definitions"


def main(selection: str, partition_range: str) -> int:
    first, last = partition_range.split("...")
    recon_repo = ReconstructableRepository.for_module(MODULE, "defs")
    repo = recon_repo.get_definition()
    keys = dg.AssetSelection.from_coercible(selection.split(",")).resolve(repo.asset_graph)
    job = repo.get_implicit_job_def_for_assets(keys)
    if job is None:
        raise SystemExit(f"{selection}: the assets do not share one partitions definition")
    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(
            recon_repo.get_reconstructable_job(job.name), instance=instance,
            asset_selection=list(keys),
            tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last})
    return 0 if result.success else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
