"""Restore archived windows into the sink, never contacting the source.

Each window is loaded with the sink's window replace (one transaction: the window's rows
are deleted and the archive's inserted), and its digest is checked while it streams in: a
corrupt archive rolls the window back. A window whose sink rows already equal the archive
is skipped, so a killed restore, run again, continues where it stopped.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pull_pipeline.archive.checksum import Checksum, Digest, reading_batches, sink_digest
from pull_pipeline.archive.store import ArchiveError, ArchiveStore, keys_listed, window_errors
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window

log = logging.getLogger("pull_pipeline.archive")


@dataclass
class RestoreReport:
    windows: int = 0
    restored: list[str] = field(default_factory=list)
    already_present: list[str] = field(default_factory=list)
    rows_restored: int = 0
    not_archived: list[str] = field(default_factory=list)

    @property
    def done(self) -> int:
        return len(self.restored) + len(self.already_present)


def restore_windows(
    name: str,
    windows: Sequence[Window],
    sink: TimescaleSink,
    store: ArchiveStore,
    run_id: str = "",
    progress: Callable[[str], None] = log.info,
    on_restored: Callable[[Window, int], None] | None = None,
) -> RestoreReport:
    """Restore each archived window; raise `ArchiveError` at the end for windows never archived.

    `on_restored(window, rows)` is called after each window that was loaded into the sink.
    """
    report = RestoreReport(windows=len(windows))
    for window in windows:
        with window_errors(name, window.key):
            archived = store.digest(name, window.key)
        if archived is None:
            report.not_archived.append(window.key)
            continue
        with sink.connection() as conn:
            present = sink_digest(conn, sink.names, name, window.start, window.end)
        if present == archived:
            report.already_present.append(window.key)
            outcome = "already present"
        else:
            with window_errors(name, window.key):
                _restore_one(name, window, sink, store, archived, run_id)
            report.restored.append(window.key)
            report.rows_restored += archived.rows
            outcome = "restored"
            if on_restored:
                on_restored(window, archived.rows)
        progress(f"{name}: {window.key}: {outcome} ({archived}); {report.done} of "
                 f"{report.windows} windows done")
    if report.not_archived:
        keys = report.not_archived
        raise ArchiveError(
            f"{name}: {report.done} of {report.windows} windows restored; {len(keys)} were "
            f"never archived under {store.source_uri(name)}: {keys_listed(keys)}")
    return report


def _restore_one(
    name: str, window: Window, sink: TimescaleSink, store: ArchiveStore, expected: Digest,
    run_id: str,
) -> None:
    checksum = Checksum()
    with store.local_copy(name, window.key) as path, sink.load(
        name, [window], run_id, replace_rejects=False
    ) as load:
        for table in reading_batches(path):
            checksum.update(table)
            load.stage(table.to_pandas())
        if checksum.digest() != expected:
            raise ArchiveError(
                f"{name}: window {window.key}: {store.uri(name, window.key)} holds "
                f"{checksum.digest()}, not the {expected} it was archived with; the window "
                "was left as it was")
