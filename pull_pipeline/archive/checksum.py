"""The row count and checksum that prove an archive holds exactly a window's rows.

checksum = (sum over rows of h(row)) mod 2**64, where h(row) is the first 8 bytes of
md5("<sensor_tag>|<ts as epoch microseconds>|<sensor_value's IEEE-754 bits as int64>")
read as a signed big-endian integer. A sum does not depend on row order, so PostgreSQL
(`SINK_CHECKSUM_SQL`) and the Parquet file (`Checksum`) compute the same number without
sorting; a missing, duplicated or changed reading changes it. `source` is fixed per window
and `ingested_at` is not part of a reading (a restore sets it anew), so neither is hashed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from psycopg import sql

from pull_pipeline.sink.timescale import TableNames

MODULUS = 2**64
READ_BATCH_ROWS = 100_000

SINK_CHECKSUM_SQL = (
    "SELECT count(*), coalesce(sum(('x' || left(md5("
    " sensor_tag || '|' || (extract(epoch FROM ts) * 1000000)::bigint || '|' ||"
    " ('x' || encode(float8send(sensor_value), 'hex'))::bit(64)::bigint"
    "), 16))::bit(64)::bigint::numeric), 0)"
    " FROM {} WHERE source = %s AND ts >= %s AND ts < %s"
)


@dataclass(frozen=True)
class Digest:
    """A window's row count and checksum (16 hex digits)."""

    rows: int
    checksum: str

    def __str__(self) -> str:
        return f"{self.rows} rows, checksum {self.checksum}"


def sink_digest(
    conn: psycopg.Connection, names: TableNames, source: str, start: datetime, end: datetime
) -> Digest:
    """The digest of `source`'s rows in `[start, end)`, computed by PostgreSQL."""
    row = conn.execute(sql.SQL(SINK_CHECKSUM_SQL).format(names.table), (source, start, end)
                       ).fetchone()
    assert row is not None
    return Digest(int(row[0]), f"{int(row[1]) % MODULUS:016x}")


class Checksum:
    """The same digest, accumulated over Arrow tables with sensor_tag, ts and sensor_value."""

    def __init__(self) -> None:
        self.rows = 0
        self.total = 0

    def update(self, table: pa.Table) -> None:
        ts_us = pc.cast(table.column("ts"), pa.timestamp("us", tz="UTC")).cast(pa.int64())
        values = table.column("sensor_value").to_numpy().astype("float64", copy=False)
        bits = pa.array(values.view(np.int64))
        text = pc.binary_join_element_wise(
            table.column("sensor_tag"), pc.cast(ts_us, pa.string()), pc.cast(bits, pa.string()),
            "|").cast(pa.binary())
        md5 = hashlib.md5
        self.total += sum(int.from_bytes(md5(row).digest()[:8], "big", signed=True)
                          for row in text.to_pylist())
        self.rows += table.num_rows

    def digest(self) -> Digest:
        return Digest(self.rows, f"{self.total % MODULUS:016x}")


def reading_batches(path: Path) -> Iterator[pa.Table]:
    """An archive file's sensor_tag, ts and sensor_value, in tables of `READ_BATCH_ROWS` rows."""
    for batch in pq.ParquetFile(path).iter_batches(
        batch_size=READ_BATCH_ROWS, columns=["sensor_tag", "ts", "sensor_value"]
    ):
        yield pa.Table.from_batches([batch])


def file_digest(path: Path) -> Digest:
    """The digest of an archive file, read in bounded batches."""
    checksum = Checksum()
    for table in reading_batches(path):
        checksum.update(table)
    return checksum.digest()
