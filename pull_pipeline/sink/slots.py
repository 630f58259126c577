"""Source slots: a cross-process semaphore per source, held while a step calls the source.

A source's `concurrency:` is a promise to whoever runs that API or database. Dagster's pools
(`pull_pipeline_<source>`) queue steps and show them in the UI, but with the default SQLite
instance storage two processes that claim a pool slot in the same instant can both get it:
SQLite storage claims a slot with a SELECT and then an UPDATE, with no row lock between them
(PostgreSQL instance storage uses `FOR UPDATE SKIP LOCKED`). So the promise is also kept
here, with session-level advisory locks on the sink database, which every run worker on
every machine already shares. A lock dies with its connection: a killed run frees its slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import psycopg

from pull_pipeline.errors import TransientSourceError

# Pairs with a hash of the source's name; a hash collision only serialises two sources.
_KEY = "pull_pipeline:source:{name}"


@contextmanager
def source_slot(
    connect: Callable[..., psycopg.Connection],
    name: str,
    slots: int,
    log: Callable[[str], None],
    poll_seconds: float = 1.0,
    max_wait: float = 3600.0,
) -> Iterator[int]:
    """Hold one of `slots` slots of source `name` for the block; wait while all are taken.

    Waiting is bounded by `max_wait` seconds (the source's `slot_timeout`): past it, a
    transient `SourceBusy` names the bound, so a run stuck behind a hung one fails and is
    retried later instead of waiting for ever.

    `connect` opens a connection to the sink (autocommit); yields the slot's number. The
    slot is released by closing the connection, which ends its session-level lock even
    when the connection broke during the block.
    """
    with connect(autocommit=True, keepalives=1, keepalives_idle=30) as conn:
        yield _wait_for_slot(conn, name, slots, log, poll_seconds, max_wait)


class SourceBusy(TransientSourceError):
    """Every slot of the source stayed taken for longer than its `slot_timeout`."""


def _wait_for_slot(
    conn: psycopg.Connection, name: str, slots: int, log: Callable[[str], None],
    poll_seconds: float, max_wait: float,
) -> int:
    key = _KEY.format(name=name)
    started, told = time.monotonic(), False
    while True:
        for slot in range(slots):
            row = conn.execute("SELECT pg_try_advisory_lock(hashtext(%s), %s::int)", (key, slot)).fetchone()
            if row and row[0]:
                if told:
                    log(f"{name}: got a source slot after {time.monotonic() - started:.1f} s")
                return slot
        waited = time.monotonic() - started
        if waited >= max_wait:
            raise SourceBusy(
                f"{name}: waited {waited:.0f} s, longer than slot_timeout ({max_wait:g} s), for "
                f"one of its {slots} source slot(s) (concurrency: {slots}); other runs of this "
                "source still hold them (find them in Runs by the tag pull_pipeline/source). "
                "The window is retried later; raise slot_timeout or concurrency if that is "
                "expected")
        if not told:
            log(f"{name}: all {slots} source slot(s) are taken by other runs calling this "
                f"source (concurrency: {slots}); waiting for one")
            told = True
        time.sleep(poll_seconds)
