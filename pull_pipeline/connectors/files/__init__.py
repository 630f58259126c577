"""`kind: files`: CSV, Parquet, JSON and JSON lines files from a local folder or S3."""

from pull_pipeline.connectors.files.connector import FilesConnector

__all__ = ["FilesConnector"]
