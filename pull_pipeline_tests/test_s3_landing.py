"""S3 landing: objects keyed `<prefix>/<source>/<partition>.parquet` with rows and run id."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pytest
from boto3.s3.transfer import TransferConfig

from pull_pipeline.config.models import FieldMap, S3Config
from pull_pipeline.connectors.base import raw_schema
from pull_pipeline.defs.resources import LandingResource, S3Settings
from pull_pipeline.landing import LandingMissing, LandingStore
from pull_pipeline.storage import ObjectMissing, StorageError, open_folder
from pull_pipeline.storage import s3 as s3_module
from pull_pipeline.storage.s3 import S3Folder, parse_s3_url, s3_client
from pull_pipeline_tests.s3_server import SECRET_KEY, Bucket

SCHEMA = raw_schema(FieldMap())


def batch(rows: int, offset: int = 0) -> pa.Table:
    return pa.table({
        "sensor_tag": [f"sensor_{i % 3}" for i in range(offset, offset + rows)],
        "relative_time": [str(1704067200 + i) for i in range(offset, offset + rows)],
        "sensor_value": [str(i / 4) for i in range(offset, offset + rows)],
    }, schema=SCHEMA)


def landing_for(bucket: Bucket, prefix: str = "landing/zone") -> LandingStore:
    resource = LandingResource(path=bucket.url(prefix),
                               s3=S3Settings.from_config(S3Config.model_validate(bucket.config)))
    store = resource.store()
    assert isinstance(store.folder, S3Folder)
    return store


def test_parse_s3_url_means_a_folder() -> None:
    assert parse_s3_url("s3://b/landing") == ("b", "landing/")
    assert parse_s3_url("s3://b/landing/zone/") == ("b", "landing/zone/")
    assert parse_s3_url("s3://b") == ("b", "")
    with pytest.raises(ValueError, match="names no bucket"):
        parse_s3_url("s3:///x")


def test_a_window_lands_as_one_object_with_rows_and_run_id(s3_bucket: Bucket) -> None:
    landing = landing_for(s3_bucket)
    with landing.writer("plant", "2024-01-01-00:00", SCHEMA, "run-123") as writer:
        writer.write(batch(10))
        writer.write(batch(5, offset=10))

    key = "landing/zone/plant/2024-01-01-00:00.parquet"
    assert s3_bucket.keys() == [key]
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key=key)
    assert head["Metadata"] == {"rows": "15", "pages": "2", "run-id": "run-123"}
    assert landing.uri("plant", "2024-01-01-00:00") == f"s3://{s3_bucket.name}/{key}"
    assert landing.pages("plant", "2024-01-01-00:00") == 2
    back = pa.concat_tables(table for table, _ in landing.read("plant", "2024-01-01-00:00"))
    assert back.equals(pa.concat_tables([batch(10), batch(5, offset=10)]))


def test_a_failed_window_leaves_no_object(s3_bucket: Bucket) -> None:
    landing = landing_for(s3_bucket)
    with pytest.raises(RuntimeError), landing.writer("plant", "k", SCHEMA, "r") as writer:
        writer.write(batch(3))
        raise RuntimeError("the source broke half-way")
    assert s3_bucket.keys() == []
    with pytest.raises(LandingMissing, match="never landed"), landing.local_copy("plant", "k"):
        pass


def test_large_windows_upload_in_parts(
    s3_bucket: Bucket, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 5 MiB is S3's smallest part: a ~7 MiB incompressible window takes two parts.
    monkeypatch.setattr(s3_module, "transfer_config", lambda: TransferConfig(
        multipart_threshold=5 * 2**20, multipart_chunksize=5 * 2**20))
    landing = landing_for(s3_bucket)
    rows = 400_000
    noise = pa.table({
        "sensor_tag": [os.urandom(16).hex() for _ in range(rows)],
        "relative_time": [str(i) for i in range(rows)],
        "sensor_value": ["1"] * rows,
    }, schema=SCHEMA)
    with landing.writer("plant", "big", SCHEMA, "run-big") as writer:
        writer.write(noise)
    head = s3_bucket.client.head_object(Bucket=s3_bucket.name, Key="landing/zone/plant/big.parquet")
    assert head["ContentLength"] > 5 * 2**20
    assert head["ETag"].strip('"').endswith("-2")  # a multipart upload's ETag counts its parts
    assert head["Metadata"]["rows"] == str(rows)


def test_s3_errors_never_carry_the_secret(s3_bucket: Bucket) -> None:
    landing = landing_for(s3_bucket.__class__(s3_bucket.endpoint, "no-such-bucket",
                                              s3_bucket.client))
    with pytest.raises(StorageError) as info, landing.writer("plant", "k", SCHEMA, "r") as w:
        w.write(batch(1))
    assert not info.value.transient
    assert "NoSuchBucket" in str(info.value) and SECRET_KEY not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_a_ca_bundle_path_is_accepted_for_verify(tmp_path: Path) -> None:
    bundle = tmp_path / "ca.pem"
    bundle.write_text("")
    client = s3_client(S3Config(endpoint_url="https://127.0.0.1:9", verify=str(bundle)), "t")
    assert client._endpoint.http_session._verify == str(bundle)


@pytest.mark.parametrize("kind", ["local", "s3"])
def test_both_folders_keep_the_same_protocol(kind: str, tmp_path: Path, s3_bucket: Bucket) -> None:
    url = str(tmp_path / "f") if kind == "local" else s3_bucket.url("f")
    folder = open_folder(url, S3Config.model_validate(s3_bucket.config), where="test")
    with pytest.raises(RuntimeError), folder.write("a/x.txt") as pending:
        pending.path.write_text("half")
        raise RuntimeError("the writer broke")
    assert folder.info("a/x.txt") is None
    with folder.write("a/x.txt") as pending:
        pending.path.write_text("whole")
        pending.metadata["rows"] = "1"
    folder.copy("a/x.txt", "b/y.txt")
    assert [info.name for info in folder.list()] == ["a/x.txt", "b/y.txt"]
    assert [info.name for info in folder.list("b/")] == ["b/y.txt"]
    info = folder.info("b/y.txt")
    assert info is not None and info.size == 5
    assert info.metadata == ({"rows": "1"} if kind == "s3" else None)
    with folder.open("b/y.txt") as path:
        assert path.read_text() == "whole"
    folder.delete("a/x.txt")
    with pytest.raises(ObjectMissing), folder.open("a/x.txt"):
        pass
    assert folder.uri("b/y.txt").endswith("f/b/y.txt")
