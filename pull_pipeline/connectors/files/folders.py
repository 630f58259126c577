"""Where a files source's files live: its folder (local or S3), read file by file.

Readers need a seekable local file, so S3 objects are downloaded to a temporary file first
(memory stays bounded); `keep=True` keeps a download until `close()`, for later windows of
the same run, which content windowing reads again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

from pull_pipeline.config.models import FilesSource
from pull_pipeline.storage import Folder, ObjectInfo, open_folder


class SourceFiles:
    """The files of one source: every non-hidden object below its path."""

    def __init__(self, folder: Folder) -> None:
        self.folder = folder
        self._kept: dict[tuple[str, str], Path] = {}
        self._stack = ExitStack()

    def uri(self, name: str) -> str:
        return self.folder.uri(name)

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        return self.folder.list(under)

    @contextmanager
    def local(self, info: ObjectInfo, keep: bool) -> Iterator[Path]:
        version = (info.name, info.etag)
        if version in self._kept:
            yield self._kept[version]
        elif keep:
            self._kept[version] = self._stack.enter_context(self.folder.open(info.name))
            yield self._kept[version]
        else:
            with self.folder.open(info.name) as path:
                yield path

    def probe(self) -> None:
        self.folder.probe()

    def close(self) -> None:
        """Remove kept downloads."""
        self._stack.close()
        self._kept.clear()


def open_files(name: str, config: FilesSource) -> SourceFiles:
    """The folder of a source whose `${NAME}` placeholders are resolved."""
    return SourceFiles(open_folder(config.path, config.s3, where=f"source {name!r}"))
