"""Archive export / drop / restore: verified, resumable, never overwriting a dropped window."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster._core.definitions.sensor_definition import SensorExecutionData

from pull_pipeline.archive import (
    ArchiveError,
    ArchiveStore,
    Checksum,
    ExportPolicy,
    export_windows,
    file_digest,
    restore_windows,
    sink_digest,
)
from pull_pipeline.archive import restore as restore_module
from pull_pipeline.config.loader import Project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs import archive as archive_defs
from pull_pipeline.defs.archive import cursor_start, windows_to_export
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.storage.s3 import S3Folder
from pull_pipeline.windows import Window
from pull_pipeline_tests.helpers import failure_text, make_project, run_source
from pull_pipeline_tests.s3_server import SECRET_KEY, Bucket
from pull_pipeline_tests.test_timescale import timescale_dsn  # noqa: F401 - a fixture

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
Row = tuple[str, datetime, float]
DAY = {"dagster/asset_partition_range_start": "2024-01-01-00:00",
       "dagster/asset_partition_range_end": "2024-01-01-23:00"}


def windows(hours: int, start: datetime = T0) -> list[Window]:
    return [Window(f"{start + h * HOUR:%Y-%m-%d-%H:%M}", start + h * HOUR, start + (h + 1) * HOUR)
            for h in range(hours)]


def seed(sink: TimescaleSink, source: str, spans: list[Window], per_hour: int = 4) -> list[Row]:
    """Load readings with awkward values (negative zero, huge, tiny, unicode tags)."""
    odd = [-0.0, 1e300, -2.5e-300, 22.5, 1 / 3]
    rows = [
        (tag, window.start + i * (HOUR / per_hour), odd[(n + i) % len(odd)] * (n + 1))
        for n, window in enumerate(spans)
        for i in range(per_hour)
        for tag in ("température_01", "flow|02")
    ]
    frame = pd.DataFrame({"sensor_tag": [r[0] for r in rows],
                          "ts": pd.to_datetime([r[1] for r in rows], utc=True),
                          "sensor_value": [r[2] for r in rows]})
    with sink.load(source, spans) as load:
        load.stage(frame)
    return sorted(rows, key=lambda r: (r[1], r[0]))


def rows_of(sink: TimescaleSink, source: str) -> list[Row]:
    with sink.connection() as conn:
        return [tuple(r) for r in conn.execute(
            f"SELECT sensor_tag, ts, sensor_value FROM {sink.table} WHERE source = %s "
            "ORDER BY ts, sensor_tag", (source,)).fetchall()]


@pytest.fixture
def sink(pg_dsn: str, table_name: str) -> TimescaleSink:
    return TimescaleSink(dsn=pg_dsn, table=table_name)


def archive_project(tmp_path: Path, sink: TimescaleSink, **archive: Any) -> Project:
    """An hourly source `plant` with the `archive:` block given."""
    return make_project(tmp_path, {
        "sink": {"dsn": sink.dsn, "table": sink.table},
        "sources": {"plant": {
            "kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_pages",
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}},
        "archive": archive,
    })


def s3_project(tmp_path: Path, sink: TimescaleSink, bucket: Bucket, drop: bool) -> Project:
    return archive_project(tmp_path, sink, path=bucket.url("archive"), s3=bucket.config,
                           export_after="0 days", drop_after_export=drop)


def restore(project: Project, **kwargs: Any) -> dg.ExecuteInProcessResult:
    job = build_definitions(project).resolve_job_def("restore_plant")
    return job.execute_in_process(raise_on_error=False, **kwargs)


def metadata_of(result: dg.ExecuteInProcessResult, key: list[str]) -> dict[str, Any]:
    event = [e for e in result.get_asset_materialization_events()
             if e.asset_key == dg.AssetKey(key)][-1]
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_the_checksum_is_the_same_in_sql_and_on_parquet(sink: TimescaleSink) -> None:
    spans = windows(2)
    rows = seed(sink, "plant", spans)
    table = pa.table({"sensor_tag": [r[0] for r in rows], "ts": [r[1] for r in rows],
                      "sensor_value": [r[2] for r in rows]})
    checksum = Checksum()
    checksum.update(table.slice(0, 5))
    checksum.update(table.slice(5))
    with sink.connection() as conn:
        assert sink_digest(conn, sink.names, "plant", T0, T0 + 2 * HOUR) == checksum.digest()
        assert checksum.digest().rows == len(rows) == 16
        conn.execute(f"UPDATE {sink.table} SET sensor_value = sensor_value * (1 + 1e-15)"
                     " WHERE sensor_value = 22.5")  # one reading, off in the 15th digit
        changed = sink_digest(conn, sink.names, "plant", T0, T0 + 2 * HOUR)
    assert changed.rows == 16 and changed != checksum.digest()


def test_export_drop_and_restore_round_trip_through_dagster(
    tmp_path: Path, sink: TimescaleSink, s3_bucket: Bucket, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    original = seed(sink, "plant", windows(24))
    other = seed(sink, "other", windows(24))  # another source in the same table
    project = s3_project(tmp_path, sink, s3_bucket, drop=True)

    exported = run_source(project, "plant", tags=DAY, assets=("archive",))
    assert exported.success, failure_text(exported)
    keys = s3_bucket.keys("archive/")
    assert keys == sorted(f"archive/plant/{w.key}.parquet" for w in windows(24))
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=keys[3])
    assert head["Metadata"]["rows"] == "8" and len(head["Metadata"]["checksum"]) == 16
    assert head["Metadata"]["run-id"] == exported.run_id
    downloaded = _download(s3_bucket, keys[3], tmp_path)
    archived = pq.read_table(downloaded)
    assert archived.column_names == ["source", "sensor_tag", "ts", "sensor_value", "ingested_at"]
    footer = pq.read_metadata(downloaded).metadata
    assert footer[b"checksum"].decode() == head["Metadata"]["checksum"]
    metadata = metadata_of(exported, ["plant", "archive"])
    assert metadata["exported"] == 24 and metadata["rows_exported"] == len(original)
    assert metadata["windows_dropped"] == 24 and metadata["rows_dropped"] == len(original)
    assert rows_of(sink, "plant") == [] and rows_of(sink, "other") == other

    etags = {k: s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=k)["ETag"] for k in keys}
    again = run_source(project, "plant", tags=DAY, assets=("archive",))
    assert again.success, failure_text(again)
    assert metadata_of(again, ["plant", "archive"])["already_dropped"] == 24
    assert etags == {k: s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=k)["ETag"]
                     for k in s3_bucket.keys("archive/")}  # never overwritten

    restored = restore(project, tags=DAY)
    assert restored.success, failure_text(restored)
    assert rows_of(sink, "plant") == original and rows_of(sink, "other") == other
    readings = [e for e in restored.get_asset_materialization_events()
                if e.asset_key == dg.AssetKey(["plant", "readings"])]
    assert len(readings) == 24 and readings[0].partition == "2024-01-01-00:00"

    once_more = restore(project, partition_key="2024-01-01-05:00")
    assert once_more.success and rows_of(sink, "plant") == original
    logs = "\n".join(repr(e) for r in (exported, again, restored) for e in r.all_events)
    assert SECRET_KEY not in logs + caplog.text


def test_a_killed_export_resumes_with_no_duplicate_and_no_missing_object(
    tmp_path: Path, sink: TimescaleSink, s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = seed(sink, "plant", windows(24))
    project = s3_project(tmp_path, sink, s3_bucket, drop=True)
    copies = {"n": 0}
    real_copy = S3Folder.copy

    def dying_copy(self: S3Folder, source: str, target: str) -> None:
        copies["n"] += 1
        if copies["n"] == 10:  # the 10th window is uploaded, then the process "dies"
            raise KeyboardInterrupt("killed")
        real_copy(self, source, target)

    monkeypatch.setattr(S3Folder, "copy", dying_copy)
    killed = run_source(project, "plant", tags=DAY, assets=("archive",))
    assert not killed.success
    assert len(s3_bucket.keys("archive/plant/")) == 9
    assert s3_bucket.keys("archive/_incomplete/") == [
        "archive/_incomplete/plant/2024-01-01-09:00.parquet"]
    assert rows_of(sink, "plant") == original  # nothing dropped before the run's end

    monkeypatch.setattr(S3Folder, "copy", real_copy)
    resumed = run_source(project, "plant", tags=DAY, assets=("archive",))
    assert resumed.success, failure_text(resumed)
    metadata = metadata_of(resumed, ["plant", "archive"])
    assert (metadata["already_archived"], metadata["exported"]) == (9, 15)
    assert s3_bucket.keys("archive/") == sorted(
        f"archive/plant/{w.key}.parquet" for w in windows(24))
    assert rows_of(sink, "plant") == []
    assert restore(project, tags=DAY).success and rows_of(sink, "plant") == original


def test_archive_failures_name_the_bucket_and_never_the_secret(
    tmp_path: Path, sink: TimescaleSink, s3_bucket: Bucket
) -> None:
    seed(sink, "plant", windows(1))
    missing = Bucket(s3_bucket.endpoint, "no-such-archive-bucket", s3_bucket.client)
    result = run_source(s3_project(tmp_path, sink, missing, drop=True), "plant",
                        "2024-01-01-00:00", assets=("archive",))
    assert not result.success
    assert ("plant: window 2024-01-01-00:00: uploading s3://no-such-archive-bucket/archive/"
            "_incomplete/plant/2024-01-01-00:00.parquet: S3 answered NoSuchBucket"
            ) in failure_text(result)
    assert SECRET_KEY not in "\n".join(repr(e) for e in result.all_events)
    assert len(rows_of(sink, "plant")) == 8  # nothing dropped


def test_a_killed_restore_resumes_where_it_stopped(
    tmp_path: Path, sink: TimescaleSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans = windows(6)
    original = seed(sink, "plant", spans)
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    export_windows("plant", spans, sink, store, ExportPolicy(timedelta(0), True))
    assert rows_of(sink, "plant") == []

    calls = {"n": 0}
    real = restore_module._restore_one

    def dying(*args: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt("killed")
        real(*args)

    monkeypatch.setattr(restore_module, "_restore_one", dying)
    with pytest.raises(KeyboardInterrupt):
        restore_windows("plant", spans, sink, store)
    assert len(rows_of(sink, "plant")) == 3 * 8
    monkeypatch.setattr(restore_module, "_restore_one", real)
    report = restore_windows("plant", spans, sink, store)
    assert (len(report.already_present), len(report.restored)) == (3, 3)
    assert rows_of(sink, "plant") == original


def test_windows_newer_than_export_after_are_refused_and_older_ones_exported(
    tmp_path: Path, sink: TimescaleSink
) -> None:
    spans = windows(4)
    seed(sink, "plant", spans)
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    policy = ExportPolicy(timedelta(days=1), drop_after_export=True)
    with pytest.raises(ArchiveError, match=r"2 of 4 windows archived; 2 windows are newer than "
                       r"export_after .*2024-01-01-02:00, 2024-01-01-03:00"):
        export_windows("plant", spans, sink, store, policy, now=T0 + timedelta(days=1, hours=2))
    assert sorted(p.name for p in (tmp_path / "archive" / "plant").iterdir()) == [
        "2024-01-01-00:00.parquet", "2024-01-01-01:00.parquet"]
    assert len(rows_of(sink, "plant")) == 2 * 8  # the exported windows were dropped


def test_a_window_changed_after_export_is_a_conflict_not_an_overwrite(
    tmp_path: Path, sink: TimescaleSink
) -> None:
    spans = windows(2)
    seed(sink, "plant", spans)
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    export_windows("plant", spans, sink, store, ExportPolicy(timedelta(0)))
    archived = store.digest("plant", spans[1].key)
    with sink.connection() as conn, conn.transaction():  # a late reading arrives in window 1
        conn.execute(f"INSERT INTO {sink.table} VALUES ('plant', 'late', %s, 1.0, now())",
                     (spans[1].start,))
    with pytest.raises(ArchiveError, match="1 windows differ from their existing archive"):
        export_windows("plant", spans, sink, store, ExportPolicy(timedelta(0), True))
    assert store.digest("plant", spans[1].key) == archived
    assert [r[0] for r in rows_of(sink, "plant")].count("late") == 1  # window 1 not dropped
    assert len(rows_of(sink, "plant")) == 8 + 1  # window 0 was dropped


def test_restoring_a_window_never_archived_names_it(
    tmp_path: Path, sink: TimescaleSink
) -> None:
    spans = windows(2)
    seed(sink, "plant", spans[:1])
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    export_windows("plant", spans[:1], sink, store, ExportPolicy(timedelta(0)))
    with pytest.raises(ArchiveError, match=r"1 of 2 windows restored; 1 were never archived "
                       r".*: 2024-01-01-01:00"):
        restore_windows("plant", spans, sink, store)


def test_a_corrupt_archive_is_not_restored(tmp_path: Path, sink: TimescaleSink) -> None:
    spans = windows(1)
    seed(sink, "plant", spans)
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    export_windows("plant", spans, sink, store, ExportPolicy(timedelta(0), True))
    path = tmp_path / "archive" / "plant" / f"{spans[0].key}.parquet"
    table, footer = pq.read_table(path), pq.read_metadata(path).metadata
    with pq.ParquetWriter(path, table.schema) as writer:  # same footer, one value changed
        writer.write_table(table.set_column(3, "sensor_value", pa.array(
            [1.0] * table.num_rows)))
        writer.add_key_value_metadata({k: v for k, v in footer.items() if b"ARROW" not in k})
    assert file_digest(path) != store.digest("plant", spans[0].key)
    with pytest.raises(ArchiveError, match="the window was left as it was"):
        restore_windows("plant", spans, sink, store)
    assert rows_of(sink, "plant") == []


def test_drop_chunks_only_for_whole_single_source_chunks(
    tmp_path: Path, timescale_dsn: str  # noqa: F811 - the imported fixture
) -> None:
    sink = TimescaleSink(dsn=timescale_dsn, table="readings_archive",
                         chunk_interval=timedelta(days=1))
    two_days = windows(48)
    original = seed(sink, "plant", two_days, per_hour=2)
    other = seed(sink, "other", windows(24, T0 + timedelta(days=1)), per_hour=2)
    store = ArchiveStore.open(str(tmp_path / "archive"), None)
    report = export_windows("plant", two_days, sink, store, ExportPolicy(timedelta(0), True))
    assert report.chunks_dropped == 1  # day 1; day 2 also holds "other": DELETE
    assert report.rows_dropped == len(original)
    assert rows_of(sink, "plant") == [] and rows_of(sink, "other") == other
    restore_windows("plant", two_days, sink, store)
    assert rows_of(sink, "plant") == original


def _download(bucket: Bucket, key: str, tmp_path: Path) -> Path:
    path = tmp_path / "downloaded.parquet"
    bucket.client.download_file(bucket.name, key, str(path))
    return path


def test_the_export_sensor_archives_old_windows_oldest_first_one_range_run_at_a_time(
    tmp_path: Path, sink: TimescaleSink
) -> None:
    original = seed(sink, "plant", windows(8))
    project = archive_project(tmp_path, sink, path=str(tmp_path / "archive"),
                              export_after="1 day", windows_per_run=5)
    now = T0 + timedelta(days=1, hours=8, minutes=30)  # windows 0..7 are a day old, 8 is not
    defs = build_definitions(project, clock=lambda: now)
    sensor = defs.resolve_sensor_def("archive_plant")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        for window in windows(9):  # loaded, as the pull runs record it
            instance.report_runless_asset_event(
                dg.AssetMaterialization(dg.AssetKey(["plant", "readings"]), partition=window.key))

        def tick() -> SensorExecutionData:
            return sensor.evaluate_tick(dg.build_sensor_context(instance=instance,
                                                                definitions=defs))

        ranges = []
        while (requests := tick().run_requests):
            [request] = requests
            ranges.append((request.tags["dagster/asset_partition_range_start"],
                           request.tags["dagster/asset_partition_range_end"]))
            assert request.tags["pull_pipeline/operation"] == "archive"
            # a run of the asset, as the UI's Materialize button launches: no job of its own
            assert request.job_name == "__ASSET_JOB"
            assert request.asset_selection == [dg.AssetKey(["plant", "archive"])]
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance, tags=dict(request.tags), raise_on_error=False,
                asset_selection=request.asset_selection)
            assert result.success, failure_text(result)
        assert ranges == [("2024-01-01-00:00", "2024-01-01-04:00"),
                          ("2024-01-01-05:00", "2024-01-01-07:00")]
        assert "nothing to export" in (tick().skip_message or "")
    archived = sorted((tmp_path / "archive" / "plant").glob("*.parquet"))
    assert [p.name for p in archived] == [f"{w.key}.parquet" for w in windows(8)]
    assert sum(file_digest(p).rows for p in archived) == len(original)


def test_the_export_sensor_moves_a_cursor_over_bounded_spans(
    tmp_path: Path, sink: TimescaleSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each tick looks at SCAN_WINDOWS windows from its cursor: past what is archived, never
    loaded (window 2) or failed to export, so a tick never lists the history again."""
    monkeypatch.setattr(archive_defs, "SCAN_WINDOWS", 3)
    seed(sink, "plant", windows(8))
    project = archive_project(tmp_path, sink, path=str(tmp_path / "archive"),
                              export_after="1 day", windows_per_run=5)
    now = T0 + timedelta(days=1, hours=8, minutes=30)
    defs = build_definitions(project, clock=lambda: now)
    sensor = defs.resolve_sensor_def("archive_plant")
    with dg.instance_for_test() as instance:
        for window in windows(8):
            if window.key != "2024-01-01-02:00":  # never loaded
                instance.report_runless_asset_event(dg.AssetMaterialization(
                    dg.AssetKey(["plant", "readings"]), partition=window.key))
        cursor: str | None = None
        seen: list[tuple[str, str] | str | None] = []
        for _ in range(6):
            result = sensor.evaluate_tick(dg.build_sensor_context(
                instance=instance, definitions=defs, cursor=cursor))
            cursor = result.cursor
            for request in result.run_requests or []:
                seen.append((request.tags["dagster/asset_partition_range_start"],
                             request.tags["dagster/asset_partition_range_end"]))
                run = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                    instance=instance, tags=dict(request.tags), raise_on_error=False,
                    asset_selection=request.asset_selection)
                assert run.success, failure_text(run)
            if not result.run_requests:
                seen.append(result.skip_message)
    assert seen == [
        ("2024-01-01-00:00", "2024-01-01-01:00"),  # window 2 was never loaded
        "plant: nothing to export from 2024-01-01 00:00 to 2024-01-01 03:00",
        ("2024-01-01-03:00", "2024-01-01-05:00"),
        "plant: nothing to export from 2024-01-01 03:00 to 2024-01-01 06:00",
        ("2024-01-01-06:00", "2024-01-01-07:00"),
        "plant: nothing to export from 2024-01-01 06:00 to 2024-01-01 08:30",
    ]
    assert cursor == "2024-01-01T08:00:00+00:00"  # the next tick starts after window 7


def test_windows_to_export_are_one_unbroken_stretch_and_skip_failed_exports() -> None:
    done, failed = dg.AssetPartitionStatus.MATERIALIZED, dg.AssetPartitionStatus.FAILED
    keys = ["a", "b", "c", "d", "e", "f"]
    readings = {"a": done, "b": done, "c": done, "e": done, "f": done}  # d never loaded
    assert windows_to_export(keys, readings, {"a": done, "b": failed}, 10) == ["c"]
    assert windows_to_export(keys, readings, {"a": done, "b": done, "c": done}, 10) == ["e", "f"]
    assert windows_to_export(keys, readings, {}, 2) == ["a", "b"]
    assert windows_to_export(keys, {}, {}, 2) == []


def test_the_export_sensor_is_off_when_auto_export_is(tmp_path: Path, sink: TimescaleSink) -> None:
    project = archive_project(tmp_path, sink, path=str(tmp_path / "archive"), auto_export=False)
    defs = build_definitions(project)
    sensor = defs.resolve_sensor_def("archive_plant")
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        result = sensor.evaluate_tick(dg.build_sensor_context(instance=instance, definitions=defs))
    assert "auto_export: false" in (result.skip_message or "")


def test_a_cursor_set_by_hand_is_a_time_or_a_clear_error() -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    assert cursor_start("plant", None, start) == start
    assert cursor_start("plant", "2023-06-01T00:00:00+00:00", start) == start  # never before
    assert cursor_start("plant", "2024-02-01T00:00:00", start) == datetime(2024, 2, 1, tzinfo=UTC)
    with pytest.raises(ValueError) as error:
        cursor_start("plant", "x\x00y", start)  # a NUL, shown escaped
    assert "plant: the cursor of archive_plant is 'x\\x00y', not a window start" in str(error.value)
    assert "clear it in the UI" in str(error.value)
