"""Files from S3 and local folders through Dagster, and `replay_<source>` with the source gone."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from pull_pipeline.config.loader import Project
from pull_pipeline.definitions import build_definitions
from pull_pipeline_tests import python_sources
from pull_pipeline_tests.helpers import failure_text, make_project, run_source
from pull_pipeline_tests.s3_server import SECRET_KEY, Bucket

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
PARTITIONS = {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}
FIELDS = {"sensor_tag": "tag", "relative_time": "time", "sensor_value": "value"}


def hourly_csv(hour: int, per_hour: int) -> tuple[str, list[tuple[str, datetime, float]]]:
    """The CSV text of one hour's file and the readings it holds."""
    rows = []
    for i in range(per_hour):
        at = T0 + hour * HOUR + i * (HOUR / per_hour)
        for sensor in ("flow", "temp"):
            rows.append((f"{sensor}_{hour % 5}", at, round(hour * 100 + i + 0.25, 2)))
    text = "tag,time,value\n" + "".join(
        f"{tag},{int(at.timestamp())},{value}\n" for tag, at, value in rows)
    return text, rows


def sink_rows(dsn: str, table: str) -> list[tuple[str, datetime, float]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT sensor_tag, ts, sensor_value FROM {table} "
                            "ORDER BY ts, sensor_tag").fetchall()


def clear_sink(dsn: str, table: str) -> None:
    with psycopg.connect(dsn) as conn:
        conn.execute(f"DELETE FROM {table}")


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": last}


def replay(project: Project, source: str, **kwargs: object) -> dg.ExecuteInProcessResult:
    job = build_definitions(project).resolve_job_def(f"replay_{source}")
    return job.execute_in_process(raise_on_error=False, **kwargs)  # type: ignore[arg-type]


def all_event_text(result: dg.ExecuteInProcessResult) -> str:
    return "\n".join(repr(event) for event in result.all_events)


def test_a_day_of_hourly_s3_files_loads_exactly_and_replays_without_the_source(
    tmp_path: Path, pg_dsn: str, table_name: str, s3_bucket: Bucket
) -> None:
    expected = []
    for hour in range(24):
        text, rows = hourly_csv(hour, per_hour=12)
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Body=text.encode(),
                                    Key=f"vendor/readings_{(T0 + hour * HOUR):%Y%m%d%H}.csv")
        expected += rows
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "landing": {"path": s3_bucket.url("landing"), "s3": s3_bucket.config},
        "sources": {"plant": {
            "kind": "files", "path": s3_bucket.url("vendor"), "s3": s3_bucket.config,
            "pattern": "readings_{%Y%m%d%H}.csv", "fields": FIELDS, "partitions": PARTITIONS}},
    })

    pulled = run_source(project, "plant", tags=range_tags("2024-01-01-00:00", "2024-01-01-23:00"))
    assert pulled.success, failure_text(pulled)
    assert sink_rows(pg_dsn, table_name) == sorted(expected, key=lambda r: (r[1], r[0]))
    landed = s3_bucket.keys("landing/")
    assert len(landed) == 24 and "landing/plant/2024-01-01-05:00.parquet" in landed
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=landed[0])
    assert head["Metadata"]["rows"] == "24" and head["Metadata"]["run-id"] == pulled.run_id

    for key in s3_bucket.keys("vendor/"):  # the source is gone
        s3_bucket.client.delete_object(Bucket=s3_bucket.name, Key=key)
    clear_sink(pg_dsn, table_name)
    replayed = replay(project, "plant", tags=range_tags("2024-01-01-00:00", "2024-01-01-23:00"))
    assert replayed.success, failure_text(replayed)
    assert sink_rows(pg_dsn, table_name) == sorted(expected, key=lambda r: (r[1], r[0]))
    assert SECRET_KEY not in all_event_text(pulled) + all_event_text(replayed)


def test_a_week_of_hourly_local_files_loads_exactly(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    folder = tmp_path / "vendor"
    folder.mkdir()
    expected = []
    for hour in range(7 * 24):
        text, rows = hourly_csv(hour, per_hour=2)
        (folder / f"readings_{(T0 + hour * HOUR):%Y%m%d%H}.csv").write_text(text)
        expected += rows
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {"kind": "files", "path": str(folder), "fields": FIELDS,
                              "pattern": "readings_{%Y%m%d%H}.csv", "partitions": PARTITIONS}},
    })
    result = run_source(project, "plant", tags=range_tags("2024-01-01-00:00", "2024-01-07-23:00"))
    assert result.success, failure_text(result)
    assert sink_rows(pg_dsn, table_name) == sorted(expected, key=lambda r: (r[1], r[0]))


def test_replay_of_a_local_files_source_after_its_folder_was_removed(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    folder = tmp_path / "vendor"
    folder.mkdir()
    text, rows = hourly_csv(3, per_hour=6)
    (folder / "all.csv").write_text(text)  # no pattern: windowed by content
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {"kind": "files", "path": str(folder), "fields": FIELDS,
                              "partitions": PARTITIONS}},
    })
    assert run_source(project, "plant", "2024-01-01-03:00").success
    before = sink_rows(pg_dsn, table_name)
    assert len(before) == len(rows)

    shutil.rmtree(folder)
    clear_sink(pg_dsn, table_name)
    pull = run_source(project, "plant", "2024-01-01-03:00")
    assert not pull.success and "is not a folder" in failure_text(pull)
    replayed = replay(project, "plant", partition_key="2024-01-01-03:00")
    assert replayed.success, failure_text(replayed)
    assert sink_rows(pg_dsn, table_name) == before


def test_replay_of_a_python_source_that_now_raises(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    python_sources.GONE["value"] = False
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {"kind": "python",
                              "function": "pull_pipeline_tests.python_sources:fetch_pages",
                              "partitions": PARTITIONS}},
    })
    tags = range_tags("2024-01-01-00:00", "2024-01-01-01:00")
    assert run_source(project, "plant", tags=tags).success
    before = sink_rows(pg_dsn, table_name)
    calls = len(python_sources.CALLS)
    try:
        python_sources.GONE["value"] = True
        clear_sink(pg_dsn, table_name)
        replayed = replay(project, "plant", tags=tags)
    finally:
        python_sources.GONE["value"] = False
    assert replayed.success, failure_text(replayed)
    assert len(python_sources.CALLS) == calls  # the function was not called
    assert sink_rows(pg_dsn, table_name) == before and len(before) == 2 * 2 * 12


def test_replay_of_a_window_never_landed_fails_clearly(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = make_project(tmp_path, {
        "sink": {"dsn": pg_dsn, "table": table_name},
        "sources": {"plant": {"kind": "files", "path": str(tmp_path), "fields": FIELDS,
                              "partitions": PARTITIONS}},
    })
    result = replay(project, "plant", partition_key="2024-01-01-07:00")
    assert not result.success
    assert "window 2024-01-01-07:00 was never landed" in failure_text(result)


@pytest.mark.parametrize("archive", [False, True])
def test_replay_and_archive_definitions_exist_per_source(tmp_path: Path, archive: bool) -> None:
    config: dict[str, object] = {"sources": {
        name: {"kind": "files", "path": str(tmp_path), "partitions": PARTITIONS}
        for name in ("plant_a", "plant_b")}}
    if archive:
        config["archive"] = {"path": str(tmp_path / "archive"), "export_after": "0 days"}
    defs = build_definitions(make_project(tmp_path, config))
    for name in ("plant_a", "plant_b"):
        assert defs.resolve_job_def(f"replay_{name}").asset_layer.selected_asset_keys == {
            dg.AssetKey([name, "readings"])}
        assert (dg.AssetKey([name, "archive"]) in defs.resolve_all_asset_keys()) is archive
        jobs = {job.name for job in defs.resolve_all_job_defs()}
        assert (f"restore_{name}" in jobs) is archive
