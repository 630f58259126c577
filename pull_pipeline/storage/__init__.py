"""One storage abstraction: a `Folder` that is a local folder or an `s3://bucket/prefix`."""

from __future__ import annotations

from pull_pipeline.config.models import S3Config
from pull_pipeline.storage.base import (
    Folder,
    ObjectInfo,
    ObjectMissing,
    Pending,
    StorageError,
    temp_path,
)
from pull_pipeline.storage.local import LocalFolder


def is_s3_url(url: str) -> bool:
    return url.startswith("s3://")


def open_folder(url: str, s3: S3Config | None, where: str) -> Folder:
    """The folder at `url`; `s3` (placeholders unresolved) connects an `s3://` URL.

    `where` names the config block in messages about its `${NAME}` placeholders.
    """
    if is_s3_url(url):
        from pull_pipeline.storage.s3 import S3Folder  # botocore only when S3 is used

        return S3Folder.from_url(url, s3, where)
    return LocalFolder(url)


__all__ = ["Folder", "LocalFolder", "ObjectInfo", "ObjectMissing", "Pending", "StorageError",
           "is_s3_url", "open_folder", "temp_path"]
