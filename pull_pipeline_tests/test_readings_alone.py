"""Materializing `readings` alone for a window that was never landed lands it first, as
`raw` would; a replay, which promises never to contact the source, refuses it instead."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import psycopg

from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests import python_sources
from pull_pipeline_tests.helpers import failure_text, make_project, run_source

PLANT = {"kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_frame",
         "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}
KEY = "2024-01-01-03:00"
RAW = dg.AssetKey(["plant", "raw"])


def rows(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        (count,) = conn.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
    return int(count)


def test_readings_alone_lands_a_never_landed_window_first(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": PLANT}})
    python_sources.CALLS.clear()
    with dg.instance_for_test() as instance:
        result = run_source(project, "plant", KEY, instance=instance, assets=("readings",))
        assert result.success, failure_text(result)
        assert len(python_sources.CALLS) == 1  # fetched once, as raw would have
        assert rows(pg_dsn, table_name) > 0
        landed = instance.get_latest_materialization_event(RAW)
        assert landed is not None and landed.asset_materialization is not None
        assert landed.asset_materialization.partition == KEY
        assert (tmp_path / "landing" / "plant" / f"{KEY}.parquet").exists()

        again = run_source(project, "plant", KEY, instance=instance, assets=("readings",))
        assert again.success, failure_text(again)
        assert len(python_sources.CALLS) == 1  # landed now: rebuilt from the landing store


def test_a_replay_refuses_a_never_landed_window_without_calling_the_source(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = make_project(tmp_path, {"sink": {"dsn": pg_dsn, "table": table_name},
                                      "sources": {"plant": PLANT}})
    python_sources.CALLS.clear()
    job = build_definitions(project).resolve_job_def("replay_plant")
    result = job.execute_in_process(partition_key=KEY, raise_on_error=False)
    assert not result.success
    text = failure_text(result)
    assert f"window {KEY} was never landed" in text and "run pull_plant" in text
    assert not python_sources.CALLS
