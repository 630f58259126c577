"""Where a files source's files live: a local folder or an S3 folder, behind one interface.

Both list files as `ObjectInfo` (path relative to the folder, size, a version tag) and hand
out a local path to read. S3 objects are downloaded to a temporary folder first (readers
need seekable files, and memory stays bounded); `keep=True` keeps a download for later
windows of the same run, which content windowing reads again.
"""

from __future__ import annotations

import itertools
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pull_pipeline.config.models import FilesSource
from pull_pipeline.errors import PermanentSourceError, TransientSourceError
from pull_pipeline.s3 import ObjectInfo, S3Folder, is_s3_url


class LocalFiles:
    """Every non-hidden file below a local folder (hidden: any path part starting with '.')."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def uri(self, name: str) -> str:
        return str(self.root / name)

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise PermanentSourceError(f"{self.root} is not a folder; check the source's path")
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            # The string checks first: they spare a stat for every file outside `under`.
            if name.startswith(under) and not _hidden(name) and path.is_file():
                stat = path.stat()
                yield ObjectInfo(name, stat.st_size, f"{stat.st_mtime_ns}-{stat.st_size}")

    @contextmanager
    def local(self, info: ObjectInfo, keep: bool) -> Iterator[Path]:
        yield self.root / info.name

    def probe(self) -> None:
        if not self.root.is_dir():
            raise TransientSourceError(f"{self.root} is not reachable (not a folder)")

    def close(self) -> None:
        """Nothing to release."""


class S3Files:
    """Every object below `s3://bucket/prefix/`, downloaded on demand."""

    def __init__(self, folder: S3Folder) -> None:
        self.folder = folder
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._kept: dict[tuple[str, str], Path] = {}
        self._numbers = itertools.count()

    def uri(self, name: str) -> str:
        return self.folder.uri(name)

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        return (info for info in self.folder.list(under) if not _hidden(info.name))

    @contextmanager
    def local(self, info: ObjectInfo, keep: bool) -> Iterator[Path]:
        kept = self._kept.get((info.name, info.etag))
        if kept is not None:
            yield kept
            return
        if self._tmp is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="pull_pipeline_files_")
        # Keep the name's suffixes so that readers detect compression (.csv.gz).
        path = Path(self._tmp.name) / f"{next(self._numbers)}-{Path(info.name).name}"
        self.folder.download(info.name, path)
        try:
            yield path
        finally:
            if keep:
                self._kept[(info.name, info.etag)] = path
            else:
                path.unlink(missing_ok=True)

    def probe(self) -> None:
        self.folder.probe()

    def close(self) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
            self._kept.clear()


def open_files(name: str, source: FilesSource) -> LocalFiles | S3Files:
    """The folder of a source whose `${NAME}` placeholders are resolved."""
    if is_s3_url(source.path):
        return S3Files(S3Folder.from_url(source.path, source.s3, where=f"source {name!r}"))
    return LocalFiles(Path(source.path).expanduser())


def _hidden(name: str) -> bool:
    return any(part.startswith(".") for part in name.split("/"))
