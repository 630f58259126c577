"""Every run can be found by source, however it was launched: the steps tag runs that came
without the tag (the UI's Materialize button, `dagster asset materialize`, backfills)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg

from pull_pipeline.defs.naming import SOURCE_TAG
from pull_pipeline_tests.helpers import failure_text, make_project, run_source

PLANT = {"kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_frame",
         "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}


def test_a_run_launched_without_tags_is_found_by_its_source(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant_a": PLANT, "plant_b": PLANT}})
    with dg.instance_for_test() as instance:
        result = run_source(project, "plant_a", "2024-01-01-01:00", instance=instance)
        assert result.success, failure_text(result)
        assert result.dagster_run.job_name == "__ephemeral_asset_job__"  # no job tags either
        found = instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_TAG: "plant_a"}))
        assert [run.run_id for run in found] == [result.run_id]
        assert not instance.get_runs(filters=dg.RunsFilter(tags={SOURCE_TAG: "plant_b"}))


def test_a_tag_given_at_launch_is_kept(tmp_path: Path, pg_dsn: str, table_name: str) -> None:
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant_a": PLANT}})
    with dg.instance_for_test() as instance:
        result = run_source(project, "plant_a", "2024-01-01-01:00", instance=instance,
                            tags={SOURCE_TAG: "plant_a", "pull_pipeline/trigger": "schedule"})
        assert result.success, failure_text(result)
        run = instance.get_run_by_id(result.run_id)
        assert run is not None and run.tags[SOURCE_TAG] == "plant_a"
        assert run.tags["pull_pipeline/trigger"] == "schedule"
