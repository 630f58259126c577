"""Source slots: `concurrency:` holds across threads and processes, on the real PostgreSQL."""

from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack

from pull_pipeline.sink.slots import source_slot
from pull_pipeline.sink.timescale import TimescaleSink


def hold_in_thread(sink: TimescaleSink, source: str, slots: int, seconds: float,
                   spans: list[tuple[float, float]], log: list[str]) -> threading.Thread:
    """Take a slot, keep it `seconds`, and record when it was held."""
    def run() -> None:
        with source_slot(sink.connect, source, slots, log.append, poll_seconds=0.05):
            start = time.monotonic()
            time.sleep(seconds)
            spans.append((start, time.monotonic()))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


def overlapping(spans: list[tuple[float, float]]) -> bool:
    ordered = sorted(spans)
    return any(later[0] < earlier[1] for earlier, later in itertools.pairwise(ordered))


def test_one_slot_serialises_holders_and_says_why_it_waits(pg_dsn: str) -> None:
    sink, source = TimescaleSink(dsn=pg_dsn), f"plant_{uuid.uuid4().hex[:6]}"
    spans: list[tuple[float, float]] = []
    log: list[str] = []
    with source_slot(sink.connect, source, 1, log.append):
        start = time.monotonic()
        threads = [hold_in_thread(sink, source, 1, 0.2, spans, log) for _ in range(2)]
        assert wait_for(lambda: sum("concurrency: 1" in line for line in log) == 2)
        spans.append((start, time.monotonic()))
    for thread in threads:
        thread.join(timeout=10)
    assert len(spans) == 3 and not overlapping(spans)
    assert all("taken by other runs calling this source" in line for line in log[:2])


def test_slots_allow_that_many_holders_at_once(pg_dsn: str) -> None:
    sink, source = TimescaleSink(dsn=pg_dsn), f"mill_{uuid.uuid4().hex[:6]}"
    with ExitStack() as held:
        taken = {held.enter_context(source_slot(sink.connect, source, 2, print)) for _ in range(2)}
        assert taken == {0, 1}
        # a third holder waits; another source does not
        spans: list[tuple[float, float]] = []
        log: list[str] = []
        third = hold_in_thread(sink, source, 2, 0.0, spans, log)
        other = hold_in_thread(sink, f"other_{source}", 2, 0.0, spans, log)
        other.join(timeout=5)
        assert wait_for(lambda: any("taken by other runs" in line for line in log))
        assert len(spans) == 1 and third.is_alive()
    third.join(timeout=5)
    assert len(spans) == 2


def test_a_killed_holder_frees_its_slot(pg_dsn: str) -> None:
    """A run worker killed mid-fetch must not keep its source blocked."""
    source = f"kiln_{uuid.uuid4().hex[:6]}"
    script = (
        "import time\n"
        "from pull_pipeline.sink.slots import source_slot\n"
        "from pull_pipeline.sink.timescale import TimescaleSink\n"
        f"with source_slot(TimescaleSink(dsn={pg_dsn!r}).connect, {source!r}, 1, print):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        log: list[str] = []
        spans: list[tuple[float, float]] = []
        waiter = hold_in_thread(TimescaleSink(dsn=pg_dsn), source, 1, 0.0, spans, log)
        assert wait_for(lambda: any("taken by other runs" in line for line in log))
        assert waiter.is_alive() and not spans  # blocked while the holder lives
        holder.kill()
        waiter.join(timeout=10)
        assert len(spans) == 1 and any("got a source slot" in line for line in log)
    finally:
        holder.kill()
        holder.wait()
