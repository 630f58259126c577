"""A folder on this machine. Objects are files; their metadata lives in the files themselves.

A write goes to `.<name>.<pid>.<random>.tmp` beside its target and is renamed into place when
complete, so a reader never sees half an object; `remove_orphans` tidies after killed writers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pull_pipeline.storage.base import ObjectInfo, ObjectMissing, Pending, StorageError, hidden

ORPHAN_AGE_S = 86_400.0


class LocalFolder:
    """Every non-hidden file below `root`."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).expanduser()

    def uri(self, name: str = "") -> str:
        return str(self.root / name)

    def list(self, under: str = "") -> Iterator[ObjectInfo]:
        if not self.root.is_dir():
            raise StorageError(f"{self.root} is not a folder; check the path", transient=False)
        for path in sorted(self.root.rglob("*")):
            name = path.relative_to(self.root).as_posix()
            # The string checks first: they spare a stat for every file outside `under`.
            if name.startswith(under) and not hidden(name) and path.is_file():
                yield _info(path, name)

    def info(self, name: str) -> ObjectInfo | None:
        path = self.root / name
        return _info(path, name) if path.is_file() else None

    @contextmanager
    def open(self, name: str) -> Iterator[Path]:
        path = self.root / name
        if not path.is_file():
            raise ObjectMissing(f"{path} does not exist", transient=False)
        yield path

    @contextmanager
    def write(self, name: str) -> Iterator[Pending]:
        final = self.root / name
        final.parent.mkdir(parents=True, exist_ok=True)
        remove_orphans(final.parent)
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.{os.getpid()}.",
                                   suffix=".tmp")
        os.close(fd)
        try:
            yield Pending(Path(tmp))
            os.replace(tmp, final)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    def put(self, path: Path, name: str, metadata: Mapping[str, str]) -> None:
        with self.write(name) as pending:
            shutil.copyfile(path, pending.path)

    def copy(self, source: str, target: str) -> None:
        with self.open(source) as path:
            self.put(path, target, {})

    def delete(self, name: str) -> None:
        (self.root / name).unlink(missing_ok=True)

    def probe(self) -> None:
        if not self.root.is_dir():
            raise StorageError(f"{self.root} is not reachable (not a folder)", transient=True)


def _info(path: Path, name: str) -> ObjectInfo:
    stat = path.stat()
    return ObjectInfo(name, stat.st_size, f"{stat.st_mtime_ns}-{stat.st_size}")


def remove_orphans(folder: Path, max_age_s: float = ORPHAN_AGE_S) -> list[Path]:
    """Delete partial files whose writer is gone; return what was deleted.

    A writer killed with SIGKILL cannot clean up after itself. Its file is named
    `.<name>.<pid>.<random>.tmp`: it is an orphan when that process no longer exists on
    this machine, or (a file from another machine sharing the folder) after a day.
    """
    removed = []
    now = time.time()
    for path in folder.glob(".*.tmp"):
        pid = path.name.rsplit(".", 3)[-3]
        try:
            orphan = (not _alive(int(pid))) or now - path.stat().st_mtime > max_age_s
        except (ValueError, FileNotFoundError):  # an older name without pid, or gone already
            orphan = path.exists() and now - path.stat().st_mtime > max_age_s
        if orphan:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
