"""Archive export and restore, without Dagster: sink windows <-> verified Parquet objects.

`export_windows` writes windows older than `export_after` to `<archive>/<source>/<key>.parquet`
and verifies each by row count and checksum before (optionally) dropping it from the sink;
`restore_windows` loads archived windows back with the sink's idempotent window replace.
"""

from pull_pipeline.archive.checksum import Checksum, Digest, file_digest, sink_digest
from pull_pipeline.archive.export import ExportPolicy, ExportReport, export_windows
from pull_pipeline.archive.restore import RestoreReport, restore_windows
from pull_pipeline.archive.store import ArchiveError, ArchiveStore

__all__ = [
    "ArchiveError", "ArchiveStore", "Checksum", "Digest", "ExportPolicy", "ExportReport",
    "RestoreReport", "export_windows", "file_digest", "restore_windows", "sink_digest",
]
