"""`kind: files`: every format, windowing by name and by content, bad files, S3 folders."""

from __future__ import annotations

import gzip
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import FilesSource
from pull_pipeline.connectors.files import FilesConnector
from pull_pipeline.connectors.files.pattern import FilePattern
from pull_pipeline.errors import ConfigError, PermanentSourceError, TransientSourceError
from pull_pipeline.storage.s3 import S3Folder
from pull_pipeline_tests.s3_server import Bucket

T0 = datetime(2024, 1, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
FIELDS = {"sensor_tag": "tag", "relative_time": "time", "sensor_value": "value"}
Row = dict[str, Any]


def hour_rows(hour: int, per_hour: int = 6, sensors: int = 3) -> list[Row]:
    """Readings in hour `hour` after T0, with distinct values."""
    start = T0 + hour * HOUR
    return [
        {"tag": f"sensor_{s}", "time": int((start + i * (HOUR / per_hour)).timestamp()),
         "value": hour * 1000 + i * 10 + s + 0.5}
        for i in range(per_hour) for s in range(sensors)
    ]


def write_csv(path: Path, rows: list[Row]) -> None:
    lines = ["tag,time,value"] + [f"{r['tag']},{r['time']},{r['value']}" for r in rows]
    text = ("\n".join(lines) + "\n").encode()
    path.write_bytes(gzip.compress(text) if path.suffix == ".gz" else text)


def write_parquet(path: Path, rows: list[Row]) -> None:
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=5)


def write_json(path: Path, rows: list[Row]) -> None:
    path.write_bytes(orjson.dumps(rows, option=orjson.OPT_INDENT_2))


def write_json_object(path: Path, rows: list[Row]) -> None:
    path.write_bytes(orjson.dumps({"meta": {"site": "north"}, "readings": rows}))


def write_jsonl(path: Path, rows: list[Row]) -> None:
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))


FORMATS: dict[str, tuple[str, str, Callable[[Path, list[Row]], None]]] = {
    # name: (format key, file suffix, writer)
    "csv": ("csv", ".csv", write_csv),
    "csv.gz": ("csv", ".csv.gz", write_csv),
    "parquet": ("parquet", ".parquet", write_parquet),
    "json array": ("json", ".json", write_json),
    "json object": ("json", ".json", write_json_object),
    "jsonl": ("jsonl", ".jsonl", write_jsonl),
}


def connector(path: str, fmt: str = "csv", **extra: Any) -> FilesConnector:
    source = FilesSource.model_validate({
        "kind": "files", "path": path, "format": fmt, "fields": FIELDS,
        "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}, **extra})
    return FilesConnector("plant", resolve_env(source, where="test"))


def fetched(conn: FilesConnector, start: datetime, end: datetime) -> list[tuple[str, int, float]]:
    """The window's rows as (tag, time, value), read back from the raw text batches."""
    rows = []
    for batch in conn.fetch(start, end):
        assert batch.schema.names == ["tag", "time", "value"]
        assert all(pa.types.is_large_string(t) for t in batch.schema.types)  # as received: text
        rows += [(r["tag"], int(r["time"]), float(r["value"])) for r in batch.to_pylist()]
    return rows


def as_tuples(rows: list[Row]) -> list[tuple[str, int, float]]:
    return [(r["tag"], r["time"], r["value"]) for r in rows]


@pytest.mark.parametrize("name", list(FORMATS))
def test_every_format_windowed_by_file_name(tmp_path: Path, name: str) -> None:
    fmt, suffix, write = FORMATS[name]
    for hour in range(3):
        write(tmp_path / f"readings_{(T0 + hour * HOUR):%Y%m%d%H}{suffix}", hour_rows(hour))
    conn = connector(str(tmp_path), fmt, pattern=f"readings_{{%Y%m%d%H}}{suffix}", chunk_size=7)

    assert fetched(conn, T0 + HOUR, T0 + 2 * HOUR) == as_tuples(hour_rows(1))
    assert sorted(fetched(conn, T0, T0 + 3 * HOUR)) == sorted(
        as_tuples(hour_rows(0) + hour_rows(1) + hour_rows(2)))


@pytest.mark.parametrize("name", ["csv", "parquet", "jsonl"])
def test_content_windowing_keeps_only_rows_inside_the_window(tmp_path: Path, name: str) -> None:
    fmt, suffix, write = FORMATS[name]
    # Files cut across hours: a window's rows come from two files, each partly.
    rows = [row for hour in range(4) for row in hour_rows(hour)]
    write(tmp_path / f"a{suffix}", rows[:30])
    write(tmp_path / f"b{suffix}", rows[30:])
    (tmp_path / ".partial.csv").write_text("garbage that a hidden file may hold\n")
    conn = connector(str(tmp_path), fmt)

    windows = [fetched(conn, T0 + h * HOUR, T0 + (h + 1) * HOUR) for h in range(4)]
    for hour, got in enumerate(windows):
        assert sorted(got) == sorted(as_tuples(hour_rows(hour))), hour
    assert fetched(conn, T0 + 10 * HOUR, T0 + 11 * HOUR) == []


def test_content_windowing_skips_unreadable_times_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows = hour_rows(0)
    write_csv(tmp_path / "a.csv", rows)
    with (tmp_path / "a.csv").open("a") as file:
        file.write("sensor_0,not-a-time,1.0\n")
    conn = connector(str(tmp_path))
    with caplog.at_level(logging.WARNING, "pull_pipeline.files"):
        assert sorted(fetched(conn, T0, T0 + HOUR)) == sorted(as_tuples(rows))
    assert "1 rows have no readable time" in caplog.text


def test_a_window_without_files_has_zero_rows_and_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write_csv(tmp_path / "readings_2024010100.csv", hour_rows(0))
    conn = connector(str(tmp_path), pattern="readings_{%Y%m%d%H}.csv")
    with caplog.at_level(logging.WARNING, "pull_pipeline.files"):
        assert fetched(conn, T0 + 5 * HOUR, T0 + 6 * HOUR) == []
    assert "has no rows (0 files read" in caplog.text


def test_empty_files_are_empty_not_errors(tmp_path: Path) -> None:
    (tmp_path / "readings_2024010100.parquet").write_bytes(b"")
    conn = connector(str(tmp_path), "parquet", pattern="readings_{%Y%m%d%H}.parquet")
    assert fetched(conn, T0, T0 + HOUR) == []


@pytest.mark.parametrize(("fmt", "name", "content", "where"), [
    ("csv", "x.csv", b"tag,time,value\na,1704067200,1\nb,1704067260\n", "line 3"),
    ("csv", "x.csv", b"sensor,time,value\na,1704067200,1\n", "the header"),
    ("jsonl", "x.jsonl", b'{"tag": "a", "time": 1704067200, "value": 1}\n{"tag": "b", \n',
     "line 2"),
    ("json", "x.json", b'[\n {"tag": "a", "time": 1704067200, "value": 1},\n {"tag": ]\n',
     "line 3"),
    ("json", "x.json", b'{"a": 1}', "one array of records"),
    ("parquet", "x.parquet", b"PAR1 this is not parquet", "Parquet"),
])
def test_a_malformed_file_is_named_with_its_line(
    tmp_path: Path, fmt: str, name: str, content: bytes, where: str
) -> None:
    (tmp_path / name).write_bytes(content)
    conn = connector(str(tmp_path), fmt)
    with pytest.raises(PermanentSourceError) as info:
        fetched(conn, T0, T0 + HOUR)
    message = str(info.value)
    assert f"plant: {tmp_path / name}: cannot parse" in message
    assert where in message


def test_a_corrupt_parquet_row_group_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.parquet"
    write_parquet(path, hour_rows(0))  # 18 rows in row groups of 5
    data = bytearray(path.read_bytes())
    column = pq.ParquetFile(path).metadata.row_group(2).column(0)
    start = column.dictionary_page_offset or column.data_page_offset
    data[start:start + 16] = b"\xff" * 16  # the first page header of row group 2
    path.write_bytes(bytes(data))
    with pytest.raises(PermanentSourceError, match=r"x\.parquet: cannot parse as Parquet at "
                       r"row group 2"):
        fetched(connector(str(tmp_path), "parquet"), T0, T0 + HOUR)


def test_a_missing_folder_is_permanent_for_fetch_and_transient_for_probe(tmp_path: Path) -> None:
    conn = connector(str(tmp_path / "gone"))
    with pytest.raises(PermanentSourceError, match="is not a folder"):
        fetched(conn, T0, T0 + HOUR)
    with pytest.raises(TransientSourceError):
        conn.probe()


def test_pattern_reads_utc_times_in_folders_and_offsets() -> None:
    pattern = FilePattern("{%Y/%m/%d}/plant_{%H%M}.csv")
    assert pattern.prefix == ""
    assert pattern.time_of("2024/01/02/plant_0315.csv") == datetime(2024, 1, 2, 3, 15, tzinfo=UTC)
    assert pattern.time_of("2024/01/02/plant_0315.csv.bak") is None
    assert pattern.time_of("2024/13/02/plant_0315.csv") is None
    zoned = FilePattern("r_{%Y%m%dT%H%z}.json")
    assert zoned.prefix == "r_"
    assert zoned.time_of("r_20240101T05+0200.json") == datetime(2024, 1, 1, 3, tzinfo=UTC)
    with pytest.raises(ConfigError, match="no {strftime} part"):
        FilePattern("readings.csv")


def put_hourly_csv(bucket: Bucket, prefix: str, hours: int, per_hour: int = 6) -> list[Row]:
    rows = []
    for hour in range(hours):
        part = hour_rows(hour, per_hour)
        path_rows = "\n".join(f"{r['tag']},{r['time']},{r['value']}" for r in part)
        bucket.client.put_object(Bucket=bucket.name,
                                 Key=f"{prefix}readings_{(T0 + hour * HOUR):%Y%m%d%H}.csv",
                                 Body=f"tag,time,value\n{path_rows}\n".encode())
        rows += part
    return rows


def test_s3_folder_means_the_folder_not_a_string_prefix(s3_bucket: Bucket) -> None:
    put_hourly_csv(s3_bucket, "data/", 1)
    put_hourly_csv(s3_bucket, "data2/", 2)  # must not be read through s3://bucket/data
    by_name = connector(s3_bucket.url("data"), pattern="readings_{%Y%m%d%H}.csv",
                        s3=s3_bucket.config)
    assert len(fetched(by_name, T0, T0 + 2 * HOUR)) == 18
    by_content = connector(s3_bucket.url("data/"), s3=s3_bucket.config)
    assert len(fetched(by_content, T0, T0 + 2 * HOUR)) == 18
    by_content.close()


def test_s3_content_windowing_downloads_each_file_once_per_run(s3_bucket: Bucket) -> None:
    rows = put_hourly_csv(s3_bucket, "in/", 4)
    conn = connector(s3_bucket.url("in"), s3=s3_bucket.config)
    downloads: list[str] = []
    folder = conn.files.folder
    assert isinstance(folder, S3Folder)
    original = folder.download

    def download(name: str, path: Path) -> None:
        downloads.append(name)
        original(name, path)

    folder.download = download  # type: ignore[method-assign]  # counting calls
    got = [row for h in range(4) for row in fetched(conn, T0 + h * HOUR, T0 + (h + 1) * HOUR)]
    assert sorted(got) == sorted(as_tuples(rows))
    assert sorted(downloads) == sorted(set(downloads)) and len(downloads) == 4
    conn.close()


def test_s3_errors_are_classified_and_name_the_folder(s3_bucket: Bucket) -> None:
    missing = connector("s3://no-such-bucket-here/in", s3=s3_bucket.config)
    with pytest.raises(PermanentSourceError, match="NoSuchBucket") as info:
        fetched(missing, T0, T0 + HOUR)
    assert "s3://no-such-bucket-here/in/" in str(info.value)
    down = connector(s3_bucket.url("in"), s3={**s3_bucket.config,
                                              "endpoint_url": "http://127.0.0.1:9"})
    with pytest.raises(TransientSourceError, match="unreachable"):
        down.probe()
