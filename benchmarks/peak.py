"""Run a command, write its wall time, CPU time and peak RSS as JSON:
`python -m benchmarks.peak OUT [--timeout SECONDS] -- CMD`.

A child's `ru_maxrss` starts from the RSS of the process that forked it (Linux carries the
forked image's high-water mark across `exec`), so the benchmark, which holds the workload in
memory, cannot fork the measured run itself. This small process forks it instead and reads
`wait4` for that one child. CPU seconds (user + system) are steadier than wall time on a
shared machine. With `--timeout`, the command is killed when it runs longer (`timed_out`),
so that one slow measurement cannot hang a benchmark.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    out, *rest = argv
    timeout = None
    if rest[:1] == ["--timeout"]:
        timeout, rest = float(rest[1]), rest[2:]
    separator, *command = rest or [""]
    if separator != "--" or not command:
        raise SystemExit("usage: python -m benchmarks.peak OUT [--timeout S] -- COMMAND [ARGS...]")
    started = time.perf_counter()
    child = subprocess.Popen(command)
    expired = threading.Event()

    def expire() -> None:
        expired.set()
        child.kill()

    timer = threading.Timer(timeout or 0, expire)
    if timeout:
        timer.start()
    _, status, usage = os.wait4(child.pid, 0)
    timer.cancel()
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    Path(out).write_text(json.dumps({
        "seconds": seconds, "cpu_seconds": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024, "returncode": child.returncode,
        "timed_out": expired.is_set()}))
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
