"""An S3-compatible server (moto in server mode) on loopback, started once per test session.

    def test_something(s3_bucket):
        s3_bucket.client.put_object(Bucket=s3_bucket.name, Key="in/x.csv", Body=b"...")
        source = {"kind": "files", "path": s3_bucket.url("in"), "s3": s3_bucket.config}

`s3_bucket.config` is the `s3:` block of sources.yaml, with the credentials as `${NAME}`
placeholders that the fixture exports, so tests see exactly what a deployment sees.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

ACCESS_KEY = "AKIAPULLPIPELINETEST"
SECRET_KEY = "moto-secret-4c1d9e7ab2f04a5b"  # distinctive: tests grep logs for it


@dataclass
class Bucket:
    endpoint: str
    name: str
    client: Any

    @property
    def config(self) -> dict[str, str]:
        return {"endpoint_url": self.endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "${TEST_S3_KEY}", "aws_secret_access_key": "${TEST_S3_SECRET}"}

    def url(self, prefix: str = "") -> str:
        return f"s3://{self.name}/{prefix}" if prefix else f"s3://{self.name}"

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.name, Prefix=prefix)
        return [item["Key"] for page in pages for item in page.get("Contents", ())]


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Bucket:
    """A new, empty bucket on the session's server; credentials exported as env variables."""
    monkeypatch.setenv("TEST_S3_KEY", ACCESS_KEY)
    monkeypatch.setenv("TEST_S3_SECRET", SECRET_KEY)
    client = boto3.client("s3", endpoint_url=s3_endpoint, region_name="us-east-1",
                          aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY)
    name = f"test-{uuid.uuid4().hex[:12]}"
    client.create_bucket(Bucket=name)
    return Bucket(s3_endpoint, name, client)
