"""The key scheme that landing and the archive share: one Parquet file per source window."""

from __future__ import annotations

from typing import Self

from pull_pipeline.config.models import S3Config
from pull_pipeline.storage import open_folder
from pull_pipeline.storage.base import Folder


class WindowFiles:
    """`<source>/<partition key>.parquet` over a folder; `WHERE` names its `s3:` block."""

    WHERE = "s3"

    def __init__(self, folder: Folder) -> None:
        self.folder = folder

    @classmethod
    def open(cls, path: str, s3: S3Config | None) -> Self:
        return cls(open_folder(path, s3, where=cls.WHERE))

    @staticmethod
    def key(source: str, partition_key: str) -> str:
        return f"{source}/{partition_key}.parquet"

    def uri(self, source: str, partition_key: str) -> str:
        """A human-readable location for metadata and messages."""
        return self.folder.uri(self.key(source, partition_key))
