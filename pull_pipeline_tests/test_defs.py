"""The shipped sources.yaml builds exactly these definitions: a dropped asset, check, job,
schedule or sensor shows up here as a diff, not as a surprise in production."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs.naming import SourceNames, source_of

ROOT = Path(__file__).resolve().parents[1]


def test_demo_definitions_snapshot() -> None:
    defs = build_definitions(load_project(ROOT / "sources.yaml"))
    repo = defs.get_repository_def()
    graph = repo.asset_graph
    assert sorted("/".join(key.path) for key in graph.get_all_asset_keys()) == [
        "demo_api/raw", "demo_api/readings", "demo_historian/raw", "demo_historian/readings",
    ]
    assert sorted(f"{'/'.join(c.asset_key.path)}:{c.name}" for c in graph.asset_check_keys) == [
        "demo_api/raw:has_rows", "demo_api/readings:freshness", "demo_api/readings:gaps",
        "demo_api/readings:valid_rows", "demo_historian/raw:has_rows",
        "demo_historian/readings:gaps", "demo_historian/readings:valid_rows",
    ]
    assert sorted(job.name for job in repo.get_all_jobs()) == [
        "__ASSET_JOB", "pull_demo_api", "pull_demo_historian", "replay_demo_api",
        "replay_demo_historian", "sink_policies",
    ]
    assert sorted(s.name for s in repo.schedule_defs) == [
        "pull_demo_api_schedule", "pull_demo_historian_schedule"]
    assert sorted(s.name for s in repo.sensor_defs) == [
        "alert_on_run_failure", "apply_pool_limits", "freshness_demo_api", "recover_demo_api",
        "recover_demo_historian", "sink_health",
    ]
    # A fresh deployment pulls without clicks.
    assert all(s.default_status == dg.DefaultScheduleStatus.RUNNING for s in repo.schedule_defs)
    assert all(s.default_status == dg.DefaultSensorStatus.RUNNING for s in repo.sensor_defs)


def test_assets_are_partitioned_single_run_backfills_in_one_pool_per_source() -> None:
    defs = build_definitions(load_project(ROOT / "sources.yaml"))
    for assets_def in defs.assets or []:
        assert isinstance(assets_def, dg.AssetsDefinition)
        assert isinstance(assets_def.partitions_def, dg.TimeWindowPartitionsDefinition)
        assert assets_def.backfill_policy == dg.BackfillPolicy.single_run()
        assert assets_def.node_def.pools == {SourceNames(source_of(assets_def.key)).pool}
