"""The pull job of each source and the tags every automated run carries.

`pull_<source>` materializes `<source>/raw` and `<source>/readings` for a window, with the
checks that run with them (validation, gaps); freshness is judged by its sensor instead.
"""

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import (
    UnresolvedAssetJobDefinition,  # what define_asset_job returns; not exported by dagster
)

from pull_pipeline.defs.assets import SOURCE_TAG, raw_key, readings_key

TRIGGER_TAG = "pull_pipeline/trigger"
FRESHNESS_CHECK = "freshness"
GAP_CHECK = "gaps"
# Runs retry only when the run worker crashed: dagster.yaml sets run_retries with
# retry_on_asset_or_op_failure: false; the tags repeat it so these runs behave the same
# on an instance configured otherwise. Transient source errors retry inside the step.
RETRY_TAGS = {"dagster/max_retries": "2", "dagster/retry_on_asset_or_op_failure": "false"}


def pull_job_name(source: str) -> str:
    return f"pull_{source}"


def run_tags(source: str, trigger: str) -> dict[str, str]:
    """Tags of a run requested by a schedule or a sensor: filterable in the Runs page."""
    return {SOURCE_TAG: source, TRIGGER_TAG: trigger, **RETRY_TAGS}


def without_freshness_check(
    selection: dg.AssetSelection, name: str, has_freshness_check: bool
) -> dg.AssetSelection:
    """`selection` less the freshness check of `<name>/readings`: its sensor judges it."""
    if not has_freshness_check:
        return selection
    return selection - dg.AssetSelection.checks(dg.AssetCheckKey(readings_key(name), FRESHNESS_CHECK))


def build_pull_job(source: str, has_freshness_check: bool) -> UnresolvedAssetJobDefinition:
    selection = without_freshness_check(
        dg.AssetSelection.assets(raw_key(source), readings_key(source)), source, has_freshness_check)
    return dg.define_asset_job(
        pull_job_name(source),
        selection=selection,
        tags={SOURCE_TAG: source},
        description=f"Pull windows of {source}: fetch and land the raw data, then validate "
        "and load it into the sink (one partition per window).",
    )
