"""S3 and S3-compatible stores (MinIO, moto, ...): clients, folders, and the S3 landing store.

Clients are built by dagster-aws from an `s3:` config block (the same keys for a files
source, `landing.s3` and `archive.s3`) with `${NAME}` resolved only now, so credentials are
registered for redaction before any request. An `s3://bucket/prefix` URL always means the
folder `prefix/`, never a string prefix: `s3://b/data` does not see `s3://b/data2/x.csv`.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import S3Config
from pull_pipeline.errors import PullPipelineError
from pull_pipeline.landing import LandingMissing, LandingStore, WindowWriter

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig

_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
                    "ServiceUnavailable", "InternalError", "503", "500"}
_MISSING_CODES = ("404", "NoSuchKey", "NotFound")


@functools.cache
def transfer_config() -> TransferConfig:
    """boto3 managed transfer: multipart above 16 MiB, 4 parts in flight.

    Built on first use: importing boto3 costs ~0.1 s, and most runs never touch S3.
    """
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20,
                          max_concurrency=4)


class StorageError(PullPipelineError):
    """S3 refused a request or could not be reached; `transient` says whether a retry may help."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class ObjectMissing(StorageError):
    """S3 answered that the object does not exist (404, NoSuchKey, NotFound)."""


def is_s3_url(path: str) -> bool:
    return path.startswith("s3://")


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b/`); the prefix is a folder ('' for the bucket)."""
    if not is_s3_url(url):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(settings: S3Config | None, where: str) -> Any:
    """A boto3 S3 client from an `s3:` block, with `${NAME}` resolved and secrets registered."""
    # Imported here: dagster_aws costs ~0.5 s at start-up, and most runs never touch S3.
    from dagster_aws.s3 import S3Resource
    from dagster_aws.s3.utils import construct_s3_client

    resolved = resolve_env(settings, where=where) if settings else S3Config()
    options = resolved.model_dump(exclude={"verify"})
    if isinstance(resolved.verify, str):
        # A CA bundle path: S3Resource's config schema takes only a bool, so call the
        # function it delegates to, which boto3 lets take the path as well.
        return construct_s3_client(max_attempts=5, verify=resolved.verify, **options)
    return S3Resource(verify=resolved.verify, **options).get_client()


def storage_error(exc: Exception, what: str) -> StorageError:
    """Describe a botocore/boto3 failure without its request details; classify it for retries."""
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return StorageError(
            f"{what}: no usable S3 credentials ({type(exc).__name__}); set aws_access_key_id and "
            "aws_secret_access_key (or profile_name) in the s3: block", transient=False)
    cause = exc if isinstance(exc, ClientError) else exc.__context__
    if isinstance(cause, ClientError):
        error = cause.response.get("Error", {})
        code = str(error.get("Code", "Unknown"))
        status = cause.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        transient = code in _TRANSIENT_CODES or status >= 500
        kind = ObjectMissing if code in _MISSING_CODES else StorageError
        return kind(f"{what}: S3 answered {code} ({error.get('Message') or status})",
                    transient=transient)
    return StorageError(f"{what}: S3 is unreachable ({type(exc).__name__}: {exc})",
                        transient=True)


@contextmanager
def s3_errors(what: str) -> Iterator[None]:
    """Turn S3 client failures into `StorageError` (chained to nothing: no request details)."""
    try:
        yield
    except Exception as exc:
        if not _from_aws(exc):
            raise
        raise storage_error(exc, what) from None


def _from_aws(exc: Exception) -> bool:
    module = type(exc).__module__
    return module.startswith(("botocore", "boto3", "s3transfer"))


@dataclass(frozen=True)
class ObjectInfo:
    """One object under a folder: its path relative to the folder, size and version tag."""

    name: str
    size: int
    etag: str


class S3Folder:
    """A folder (`bucket` + `prefix/`) with the few operations this project needs."""

    def __init__(self, client: Any, bucket: str, prefix: str) -> None:
        self.client, self.bucket, self.prefix = client, bucket, prefix

    @classmethod
    def from_url(cls, url: str, settings: S3Config | None, where: str) -> S3Folder:
        bucket, prefix = parse_s3_url(url)
        return cls(s3_client(settings, where), bucket, prefix)

    def key(self, name: str) -> str:
        return self.prefix + name

    def uri(self, name: str = "") -> str:
        return f"s3://{self.bucket}/{self.key(name)}"

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        """Every object below `under` (a name prefix relative to the folder), in key order."""
        with s3_errors(f"listing {self.uri(under)}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(under))
            for page in pages:
                for item in page.get("Contents", ()):
                    if not item["Key"].endswith("/"):  # "folder" marker objects
                        yield ObjectInfo(item["Key"][len(self.prefix):], int(item["Size"]),
                                         str(item.get("ETag", "")))

    def head(self, name: str) -> dict[str, str] | None:
        """The object's user metadata, or None if there is no such object."""
        with s3_errors(f"reading {self.uri(name)}"):
            try:
                response = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                    return None
                raise
        return dict(response.get("Metadata", {}))

    def upload(self, path: Path, name: str, metadata: Mapping[str, str]) -> None:
        """Managed (multipart above the threshold) upload; the object appears only when complete."""
        with s3_errors(f"uploading {self.uri(name)}"):
            self.client.upload_file(str(path), self.bucket, self.key(name),
                                    ExtraArgs={"Metadata": dict(metadata)}, Config=transfer_config())

    def download(self, name: str, path: Path) -> None:
        """Managed download; raises `ObjectMissing` (a `StorageError`) if there is no object."""
        with s3_errors(f"downloading {self.uri(name)}"):
            self.client.download_file(self.bucket, self.key(name), str(path), Config=transfer_config())

    def copy(self, source: str, target: str) -> None:
        """Server-side managed copy within the folder; the object metadata is kept."""
        with s3_errors(f"copying {self.uri(source)} to {self.uri(target)}"):
            self.client.copy({"Bucket": self.bucket, "Key": self.key(source)}, self.bucket,
                             self.key(target), Config=transfer_config())

    def delete(self, name: str) -> None:
        with s3_errors(f"deleting {self.uri(name)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def probe(self) -> None:
        """One cheap listing: raises `StorageError` if the bucket cannot be read now."""
        with s3_errors(f"listing {self.uri()}"):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)


@contextmanager
def temp_path(suffix: str = "") -> Iterator[Path]:
    """A temporary file path, removed afterwards (the suffix keeps compression detectable)."""
    fd, name = tempfile.mkstemp(prefix="pull_pipeline_", suffix=suffix)
    os.close(fd)
    try:
        yield Path(name)
    finally:
        if os.path.exists(name):
            os.unlink(name)


class S3Landing(LandingStore):
    """Raw windows under `s3://bucket/prefix/<source>/<partition>.parquet`.

    Each object carries its row count, page count and the writing run's id as S3 user
    metadata (`x-amz-meta-rows`, `-pages`, `-run-id`), so they are readable with a HEAD.
    """

    def __init__(self, folder: S3Folder) -> None:
        self.folder = folder

    @classmethod
    def from_settings(cls, path: str, s3_json: str | None) -> S3Landing:
        settings = S3Config.model_validate_json(s3_json) if s3_json else None
        return cls(S3Folder.from_url(path, settings, where="landing.s3"))

    def uri(self, source: str, partition_key: str) -> str:
        return self.folder.uri(self.key(source, partition_key))

    @contextmanager
    def writer(
        self, source: str, partition_key: str, schema: pa.Schema, run_id: str
    ) -> Iterator[WindowWriter]:
        with temp_path(".parquet") as path:
            writer = WindowWriter(path, schema)
            yield writer
            writer.close(run_id)
            self.folder.upload(path, self.key(source, partition_key), {
                "rows": str(writer.rows), "pages": str(writer.pages), "run-id": run_id})

    @contextmanager
    def local_copy(self, source: str, partition_key: str) -> Iterator[Path]:
        with temp_path(".parquet") as path:
            try:
                self.folder.download(self.key(source, partition_key), path)
            except ObjectMissing:
                raise LandingMissing(
                    f"{source}: window {partition_key} was never landed at "
                    f"{self.uri(source, partition_key)}; materialize {source}/raw for it first"
                ) from None
            yield path

    def exists(self, source: str, partition_key: str) -> bool:
        return self.folder.head(self.key(source, partition_key)) is not None

    def pages(self, source: str, partition_key: str) -> int:
        """From the object's metadata: no download."""
        metadata = self.folder.head(self.key(source, partition_key)) or {}
        return int(metadata.get("pages", 0))
