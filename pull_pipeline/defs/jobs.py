"""The asset jobs of a source, and the tags every automated run carries.

Per source, partitioned like the source:
- `pull_<source>` materializes `<source>/raw` and `<source>/readings` for a window, with
  the checks that run with them (validation, gaps); freshness is judged by its sensor;
- `replay_<source>` materializes `<source>/readings` only, which reads the landing store,
  so the source is never contacted.

Every asset job is created here, so what a source costs in jobs is visible in one place:
each job costs its run-config schema and snapshot, several ms of CPU in every load of the
code location and again every time it is served (README, Performance). So `<source>/archive`
has no job of its own: its sensor requests runs of the asset, as the UI's Materialize
button does. (`restore_<source>`, an op job, is in `defs/archive.py`.)
Each is a `SourceAssetJob`: it resolves on its source's assets only (see `job_scope`).
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.job_scope import SourceAssetJob
from pull_pipeline.defs.naming import MAINTENANCE_TAG, SOURCE_TAG, TRIGGER_TAG

# Runs retry only when the run worker crashed: dagster.yaml sets run_retries with
# retry_on_asset_or_op_failure: false; the tags repeat it so these runs behave the same
# on an instance configured otherwise. Transient source errors retry inside the step.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_on_asset_or_op_failure": "false"}


def run_tags(source: str, trigger: str) -> dict[str, str]:
    """Tags of a run requested by a schedule or a sensor: filterable in the Runs page."""
    return {SOURCE_TAG: source, TRIGGER_TAG: trigger, **RETRY_TAGS}


@dataclass(frozen=True)
class AssetJobs:
    pull: UnresolvedAssetJobDefinition
    replay: UnresolvedAssetJobDefinition

    def all(self) -> list[UnresolvedAssetJobDefinition]:
        return [self.pull, self.replay]


def build_asset_jobs(ctx: SourceContext) -> AssetJobs:
    return AssetJobs(pull=_pull_job(ctx), replay=_replay_job(ctx))


def _without_freshness_check(ctx: SourceContext, selection: dg.AssetSelection) -> dg.AssetSelection:
    """`selection` less the freshness check of `<source>/readings`: its sensor judges it."""
    if ctx.config.freshness is None:
        return selection
    return selection - dg.AssetSelection.checks(ctx.names.freshness_check)


def _pull_job(ctx: SourceContext) -> UnresolvedAssetJobDefinition:
    names = ctx.names
    return SourceAssetJob(
        name=names.pull_job,
        selection=_without_freshness_check(ctx, dg.AssetSelection.assets(names.raw, names.readings)),
        tags={SOURCE_TAG: ctx.name},
        description=f"Pull windows of {ctx.name}: fetch and land the raw data, then validate "
        "and load it into the sink (one partition per window).",
    )


def _replay_job(ctx: SourceContext) -> UnresolvedAssetJobDefinition:
    """`<source>/readings` (and its checks but freshness) rebuilt from the landing store."""
    name = ctx.name
    return SourceAssetJob(
        name=ctx.names.replay_job,
        selection=_without_freshness_check(ctx, dg.AssetSelection.assets(ctx.names.readings)),
        tags={SOURCE_TAG: name, MAINTENANCE_TAG: "replay"},
        description=f"Rebuild {name}/readings for a window or a range from the landing store "
        "(the raw data as received), without contacting the source.",
    )
