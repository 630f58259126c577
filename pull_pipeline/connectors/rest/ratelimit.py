"""Request-rate limits per source, shared by every connector of that source in a process.

A limit that only held inside one connector would let two runs of the same source (or a
probe during a run) add up to twice the rate the source's owners agreed to.
"""

from __future__ import annotations

import threading

from pyrate_limiter import Duration, Limiter, Rate

_lock = threading.Lock()
_limiters: dict[tuple[str, float], Limiter] = {}


def rate_for(per_second: float) -> Rate:
    """`max_requests_per_second` as a pyrate-limiter rate; 0.5 becomes 1 per 2000 ms."""
    if per_second >= 1 and float(per_second).is_integer():
        return Rate(int(per_second), Duration.SECOND)
    return Rate(1, max(1, round(1000 / per_second)))


def limiter_for(source: str, per_second: float) -> Limiter:
    """The process-wide limiter for `source` at this rate (made on first use)."""
    key = (source, per_second)
    with _lock:
        limiter = _limiters.get(key)
        if limiter is None:
            limiter = _limiters[key] = Limiter(rate_for(per_second))
        return limiter
