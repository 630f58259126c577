"""Run a command, write its wall time and peak RSS as JSON: `python -m benchmarks.peak OUT -- CMD`.

A child's `ru_maxrss` starts from the RSS of the process that forked it (Linux carries the
forked image's high-water mark across `exec`), so the benchmark, which holds the workload in
memory, cannot fork the measured run itself. This small process forks it instead and reads
`wait4` for that one child.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    out, separator, *command = argv
    if separator != "--" or not command:
        raise SystemExit("usage: python -m benchmarks.peak OUT -- COMMAND [ARGS...]")
    started = time.perf_counter()
    child = subprocess.Popen(command)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    Path(out).write_text(json.dumps({"seconds": seconds, "peak_rss_mb": usage.ru_maxrss / 1024,
                                     "returncode": child.returncode}))
    return child.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
