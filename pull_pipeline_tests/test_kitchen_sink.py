"""Everything Dagster sees of the kitchen-sink config, through `build_definitions`, as JSON.

`kitchen_sink/sources.yaml` uses every feature that changes the definitions; the snapshot
(`kitchen_sink/definitions.json`) lists asset specs, checks, jobs with their selections,
schedules and sensors. A renamed job, a lost check or a sensor that now starts stopped shows
up as a readable diff. After an intended change, regenerate the snapshot and review its diff:

    PULL_PIPELINE_UPDATE_SNAPSHOT=1 .venv-test/bin/python -m pytest \
        pull_pipeline_tests/test_kitchen_sink.py -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import dagster as dg

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions

HERE = Path(__file__).resolve().parent / "kitchen_sink"
SNAPSHOT = HERE / "definitions.json"
UPDATE = "PULL_PIPELINE_UPDATE_SNAPSHOT"


def partitions(definition: dg.PartitionsDefinition | None) -> dict[str, Any] | None:
    if definition is None:
        return None
    assert isinstance(definition, dg.TimeWindowPartitionsDefinition)
    return {
        "cron": definition.cron_schedule,
        "timezone": definition.timezone,
        "fmt": definition.fmt,
        "start": definition.start.isoformat(),
        "end": definition.end.isoformat() if definition.end else None,
    }


def entity(key: dg.AssetKey | dg.AssetCheckKey) -> str:
    return key.to_user_string()


def asset_specs(graph: Any) -> dict[str, Any]:
    specs = {}
    for key in sorted(graph.get_all_asset_keys()):
        node = graph.get(key)
        policy = node.backfill_policy
        specs[entity(key)] = {
            "group": node.group_name,
            "deps": sorted(entity(parent) for parent in node.parent_keys),
            "partitions": partitions(node.partitions_def),
            "backfill": policy.policy_type.value if policy else None,
            "kinds": sorted(node.kinds),
            "tags": dict(sorted(node.tags.items())),
            "metadata_keys": sorted(node.metadata),
            "pools": sorted(node.pools or ()),
            "checks": sorted(check.name for check in node.check_keys),
            "description": node.description,
        }
    return specs


def checks(graph: Any) -> dict[str, Any]:
    return {
        entity(key): {
            "blocking": node.blocking,
            "partitioned": node.partitions_def is not None,
            "description": node.description,
        }
        for key in sorted(graph.asset_check_keys, key=entity)
        if (node := graph.get(key))
    }


def jobs(repo: dg.RepositoryDefinition) -> dict[str, Any]:
    result = {}
    for job in sorted(repo.get_all_jobs(), key=lambda job: job.name):
        layer = job.asset_layer
        result[job.name] = {
            "assets": sorted(entity(key) for key in layer.selected_asset_keys),
            "checks": sorted(entity(key) for key in layer.asset_graph.asset_check_keys),
            "ops": sorted(node.name for node in job.graph.node_defs),
            "partitions": partitions(job.partitions_def),
            "executor": job.executor_def.name,
            "tags": dict(sorted(job.tags.items())),
            "description": job.description,
        }
    return result


def schedules(repo: dg.RepositoryDefinition) -> dict[str, Any]:
    return {
        schedule.name: {
            "cron": schedule.cron_schedule,
            "timezone": schedule.execution_timezone,
            "job": schedule.job_name,
            "default_status": schedule.default_status.value,
            "description": schedule.description,
        }
        for schedule in sorted(repo.schedule_defs, key=lambda schedule: schedule.name)
    }


def sensors(repo: dg.RepositoryDefinition) -> dict[str, Any]:
    return {
        sensor.name: {
            "type": sensor.sensor_type.value,
            "job": sensor.job_name if sensor.has_jobs else None,
            "default_status": sensor.default_status.value,
            "minimum_interval_seconds": sensor.minimum_interval_seconds,
            "description": sensor.description,
        }
        for sensor in sorted(repo.sensor_defs, key=lambda sensor: sensor.name)
    }


def snapshot(defs: dg.Definitions) -> dict[str, Any]:
    repo = defs.get_repository_def()
    return {
        "assets": asset_specs(repo.asset_graph),
        "checks": checks(repo.asset_graph),
        "jobs": jobs(repo),
        "schedules": schedules(repo),
        "sensors": sensors(repo),
        "resources": sorted(defs.resources or {}),
    }


def test_kitchen_sink_definitions_match_the_snapshot() -> None:
    actual = snapshot(build_definitions(load_project(HERE / "sources.yaml")))
    text = json.dumps(actual, indent=2, sort_keys=False) + "\n"
    if os.environ.get(UPDATE):
        SNAPSHOT.write_text(text)
    assert json.loads(SNAPSHOT.read_text()) == actual, (
        f"definitions differ from {SNAPSHOT.name}; if intended, rerun with {UPDATE}=1 and "
        "review the diff")
