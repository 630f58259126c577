"""Readings per sensor per time slot of a span, counted by one GROUP BY in the sink.

Only the counts come back (sensors × slots integers), never the rows, so the cost is one
index range scan of the span and of the span before it (to list sensors gone silent).
"""

from __future__ import annotations

from psycopg import sql

from pull_pipeline.coverage import SLOTS, Coverage
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline.windows import Window

_QUERY = """
SELECT sensor_tag, date_bin(make_interval(secs => %(slot)s), ts, %(start)s), count(*)
FROM {table}
WHERE source = %(source)s AND ts >= %(before)s AND ts < %(end)s
GROUP BY 1, 2
"""


def count_coverage(sink: TimescaleSink, source: str, span: Window, slots: int = SLOTS) -> Coverage:
    """Counts per (sensor, slot) of `span`; sensors seen only just before it get zeros.

    `date_bin` is the cheapest slot arithmetic measured (`extract(epoch ...)` is numeric and
    slower; see README, Performance).
    """
    length = span.end - span.start
    slot = length / slots
    params = {"source": source, "start": span.start, "end": span.end,
              "before": span.start - length, "slot": slot.total_seconds()}
    with sink.connection() as conn:
        rows = conn.execute(sql.SQL(_QUERY).format(table=sink.names.table), params).fetchall()
    counts: dict[str, list[int]] = {}
    for tag, bin_start, count in rows:
        per_slot = counts.setdefault(tag, [0] * slots)
        index = (bin_start - span.start) // slot
        if 0 <= index < slots:
            per_slot[index] += count
    return Coverage(start=span.start, end=span.end, slots=slots, counts=counts)
