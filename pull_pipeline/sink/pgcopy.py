"""PostgreSQL's binary COPY format for readings, built column by column.

Binary COPY spares the server parsing text (floats and timestamps are most of the cost of
a CSV COPY), and the buffer is assembled by numpy and one Arrow kernel
(`binary_join_element_wise`), with no Python code per row: each row is a fixed-width
prefix (field count, [source,] tag length), the tag bytes, and a fixed-width suffix (time,
value), and Arrow concatenates the three per row in C++.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc

HEADER = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags, header extension length
TRAILER = b"\xff\xff"
# timestamptz travels as microseconds since 2000-01-01 UTC.
PG_EPOCH_US = 946_684_800_000_000
_SUFFIX = np.dtype([("ts_len", ">i4"), ("ts", ">i8"), ("value_len", ">i4"), ("value", ">f8")])
_EMPTY = pa.scalar(b"", pa.large_binary())


def write_binary(copy: psycopg.Copy, rows: pa.Buffer | Iterable[pa.Buffer]) -> None:
    """Send `rows` (from `encode_readings`, one buffer or several in turn) as one complete
    binary COPY stream."""
    copy.write(HEADER)
    for chunk in [rows] if isinstance(rows, pa.Buffer) else rows:
        copy.write(chunk)
    copy.write(TRAILER)


def encode_readings(
    tags: pa.Array | pa.ChunkedArray,
    ts_us: np.ndarray,
    values: np.ndarray,
    source: str | None = None,
) -> pa.Buffer:
    """Rows `([source,] sensor_tag, ts, sensor_value)` in binary COPY format (no header).

    `tags` are non-null strings, `ts_us` int64 microseconds since the Unix epoch (UTC),
    `values` float64; all the same length. The result is a slice of Arrow memory, not a copy.
    """
    n = len(ts_us)
    if n == 0:
        return pa.py_buffer(b"")
    tags = pa.chunked_array([tags]) if isinstance(tags, pa.Array) else tags
    tags = tags.combine_chunks().cast(pa.large_binary())
    constant = source.encode() if source is not None else b""
    fields = [("fields", ">i2")]
    if source is not None:
        fields += [("source_len", ">i4"), ("source", f"S{len(constant)}")]
    fields.append(("tag_len", ">i4"))
    prefix = np.empty(n, dtype=np.dtype(fields))
    prefix["fields"] = 3 if source is None else 4
    if source is not None:
        prefix["source_len"] = len(constant)
        prefix["source"] = constant
    prefix["tag_len"] = pc.binary_length(tags).to_numpy(zero_copy_only=False)
    suffix = np.empty(n, dtype=_SUFFIX)
    suffix["ts_len"] = 8
    suffix["ts"] = np.asarray(ts_us, dtype=np.int64) - PG_EPOCH_US
    suffix["value_len"] = 8
    suffix["value"] = values
    rows = pc.binary_join_element_wise(_fixed(prefix), tags, _fixed(suffix), _EMPTY)
    offsets = rows.buffers()[1]
    first, last = np.frombuffer(offsets, dtype=np.int64, count=n + 1)[[0, n]]
    return rows.buffers()[2][first:last]


def _fixed(records: np.ndarray) -> pa.Array:
    """A structured numpy array as a large_binary Arrow array, one element per record (no copy)."""
    width = records.dtype.itemsize
    offsets = np.arange(len(records) + 1, dtype=np.int64) * width
    return pa.Array.from_buffers(
        pa.large_binary(), len(records),
        [None, pa.py_buffer(offsets), pa.py_buffer(records.view(np.uint8))],
    )
