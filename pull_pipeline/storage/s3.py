"""S3 and S3-compatible stores (MinIO, moto, ...) as folders.

Clients are built with boto3 from an `s3:` config block (the same keys for a files source,
`landing.s3` and `archive.s3`) with `${NAME}` resolved only now, so credentials are
registered for redaction before any request. An `s3://bucket/prefix` URL always means the
folder `prefix/`, never a string prefix: `s3://b/data` does not see `s3://b/data2/x.csv`.
Each object carries its metadata as S3 user metadata, readable with a HEAD.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

from pull_pipeline.config.env import resolve_env
from pull_pipeline.config.models import S3Config
from pull_pipeline.storage.base import (
    ObjectInfo,
    ObjectMissing,
    Pending,
    StorageError,
    hidden,
    temp_path,
)

if TYPE_CHECKING:
    from boto3.s3.transfer import TransferConfig

_TRANSIENT_CODES = {"SlowDown", "RequestTimeout", "RequestTimeTooSkewed", "Throttling",
                    "ServiceUnavailable", "InternalError", "503", "500"}
_MISSING_CODES = ("404", "NoSuchKey", "NotFound")
MAX_ATTEMPTS = 5  # botocore's "standard" retry mode, with backoff, on throttling and 5xx


@functools.cache
def transfer_config() -> TransferConfig:
    """boto3 managed transfer: multipart above 16 MiB, 4 parts in flight.

    Built on first use: importing boto3 is not free, and most runs never touch S3.
    """
    from boto3.s3.transfer import TransferConfig

    return TransferConfig(multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20,
                          max_concurrency=4)


def parse_s3_url(url: str) -> tuple[str, str]:
    """`s3://bucket/a/b` -> (`bucket`, `a/b/`); the prefix is a folder ('' for the bucket)."""
    if not url.startswith("s3://"):
        raise ValueError(f"not an s3:// URL: {url!r}")
    bucket, _, prefix = url[len("s3://"):].partition("/")
    if not bucket:
        raise ValueError(f"{url!r} names no bucket; write s3://bucket/prefix")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


def s3_client(settings: S3Config | None, where: str) -> Any:
    """A boto3 S3 client from an `s3:` block, with `${NAME}` resolved and secrets registered."""
    import boto3
    from botocore.config import Config

    resolved = resolve_env(settings, where=where) if settings else S3Config()
    session = boto3.session.Session(profile_name=resolved.profile_name)
    return session.client(
        "s3", region_name=resolved.region_name, endpoint_url=resolved.endpoint_url,
        use_ssl=resolved.use_ssl, verify=resolved.verify,
        aws_access_key_id=resolved.aws_access_key_id,
        aws_secret_access_key=resolved.aws_secret_access_key,
        aws_session_token=resolved.aws_session_token,
        config=Config(retries={"max_attempts": MAX_ATTEMPTS, "mode": "standard"}),
    )


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


class S3Folder:
    """A folder (`bucket` + `prefix/`)."""

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
        with s3_errors(f"listing {self.uri(under)}"):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(under))
            for page in pages:
                for item in page.get("Contents", ()):
                    name = item["Key"][len(self.prefix):]
                    if not item["Key"].endswith("/") and not hidden(name):  # "/": folder markers
                        yield ObjectInfo(name, int(item["Size"]), str(item.get("ETag", "")))

    def info(self, name: str) -> ObjectInfo | None:
        with s3_errors(f"reading {self.uri(name)}"):
            try:
                head = self.client.head_object(Bucket=self.bucket, Key=self.key(name))
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING_CODES:
                    return None
                raise
        return ObjectInfo(name, int(head.get("ContentLength", 0)), str(head.get("ETag", "")),
                          dict(head.get("Metadata", {})))

    @contextmanager
    def open(self, name: str) -> Iterator[Path]:
        """Download to a temporary file named like the object (readers detect .gz by name)."""
        with temp_path(f"-{PurePosixPath(name).name}") as path:
            self.download(name, path)
            yield path

    def download(self, name: str, path: Path) -> None:
        """Managed download; raises `ObjectMissing` (a `StorageError`) if there is no object."""
        with s3_errors(f"downloading {self.uri(name)}"):
            self.client.download_file(self.bucket, self.key(name), str(path),
                                      Config=transfer_config())

    @contextmanager
    def write(self, name: str) -> Iterator[Pending]:
        with temp_path(f"-{PurePosixPath(name).name}") as path:
            pending = Pending(path)
            yield pending
            self.put(path, name, pending.metadata)

    def put(self, path: Path, name: str, metadata: Mapping[str, str]) -> None:
        """Managed (multipart above the threshold) upload; the object appears only when complete."""
        with s3_errors(f"uploading {self.uri(name)}"):
            self.client.upload_file(str(path), self.bucket, self.key(name),
                                    ExtraArgs={"Metadata": dict(metadata)},
                                    Config=transfer_config())

    def copy(self, source: str, target: str) -> None:
        """Server-side managed copy; the object metadata is kept."""
        with s3_errors(f"copying {self.uri(source)} to {self.uri(target)}"):
            self.client.copy({"Bucket": self.bucket, "Key": self.key(source)}, self.bucket,
                             self.key(target), Config=transfer_config())

    def delete(self, name: str) -> None:
        with s3_errors(f"deleting {self.uri(name)}"):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(name))

    def probe(self) -> None:
        with s3_errors(f"listing {self.uri()}"):
            self.client.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
