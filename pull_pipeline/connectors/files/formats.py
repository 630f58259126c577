"""Readers for CSV, Parquet, JSON and JSON lines: each streams one file as raw batches.

Memory stays bounded for CSV (pyarrow's streaming reader, all columns read as text),
Parquet (row group by row group) and JSON lines (blocks of lines). A JSON document (an
array, or an object holding one array) has to be parsed whole; use JSON lines for big files.
A file that cannot be parsed fails with its name and the line or row group at fault.
Compressed files (.gz, .bz2, .zst, ...) are decompressed by their extension.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from pull_pipeline.config.models import FilesSource
from pull_pipeline.connectors.base import (
    batches_of,
    find_records,
    raw_schema,
    records_to_batch,
    table_to_batch,
)
from pull_pipeline.errors import PermanentSourceError, first_line

CSV_BLOCK_BYTES = 8 * 2**20
LINES_BLOCK_BYTES = 8 * 2**20

Reader = Callable[[Path, str, FilesSource], Iterator[pa.Table]]


def read_file(path: Path, where: str, config: FilesSource) -> Iterator[pa.Table]:
    """Stream `path` as raw batches of at most `config.chunk_size` rows; `where` names it."""
    if path.stat().st_size == 0:  # an empty file is an empty window part, not an error
        return
    yield from READERS[config.format](path, where, config)


def unreadable(where: str, fmt: str, at: str | None, detail: object) -> PermanentSourceError:
    position = f" at {at}" if at else ""
    return PermanentSourceError(f"{where}: cannot parse as {fmt}{position}: {first_line(detail)}")


def _csv(path: Path, where: str, config: FilesSource) -> Iterator[pa.Table]:
    fields = raw_schema(config.fields).names
    bad_lines: list[int] = []

    def invalid(row: Any) -> str:
        if row.number is not None:
            bad_lines.append(row.number)
        return "error"

    try:
        reader = pacsv.open_csv(
            str(path),  # a str, so that .gz/.bz2/.zst is decompressed by its extension
            # Single-threaded parsing keeps physical line numbers for error messages.
            read_options=pacsv.ReadOptions(use_threads=False, block_size=CSV_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(delimiter=config.csv_delimiter,
                                             invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys(fields, pa.large_string()), include_columns=fields),
        )
        for batch in reader:
            yield from _slices(pa.Table.from_batches([batch]), config.chunk_size)
    except pa.ArrowKeyError as exc:
        raise unreadable(where, "CSV", "the header", f"{exc}; map the columns with fields:"
                         ) from None
    except pa.ArrowInvalid as exc:
        raise unreadable(where, "CSV", f"line {bad_lines[0]}" if bad_lines else None, exc
                         ) from None


def _parquet(path: Path, where: str, config: FilesSource) -> Iterator[pa.Table]:
    fields = raw_schema(config.fields).names
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise unreadable(where, "Parquet", None, exc) from None
    missing = [name for name in fields if name not in parquet.schema_arrow.names]
    if missing:
        raise unreadable(where, "Parquet", None, f"no column(s) {missing} (it has "
                         f"{parquet.schema_arrow.names}); map the columns with fields:")
    for group in range(parquet.metadata.num_row_groups):
        try:
            for batch in parquet.iter_batches(
                batch_size=config.chunk_size, row_groups=[group], columns=fields
            ):
                yield table_to_batch(batch, config.fields)
        except (pa.ArrowException, OSError) as exc:
            raise unreadable(where, "Parquet", f"row group {group}", exc) from None


def _jsonl(path: Path, where: str, config: FilesSource) -> Iterator[pa.Table]:
    def records() -> Iterator[Any]:
        for number, line in _lines(path):
            if not line.strip():
                continue
            try:
                yield orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise unreadable(where, "JSON lines", f"line {number}", exc) from None

    for chunk in batches_of(records(), config.chunk_size):
        yield records_to_batch(chunk, config.fields)


def _json(path: Path, where: str, config: FilesSource) -> Iterator[pa.Table]:
    with pa.input_stream(str(path)) as stream:
        text = stream.read()
    try:
        document = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise unreadable(where, "JSON", f"line {exc.lineno}, column {exc.colno}", exc) from None
    records = find_records(document)
    if records is None:
        raise unreadable(where, "JSON", None, "expected an array of records, or an object "
                         "holding exactly one array of records")
    for chunk in batches_of(records, config.chunk_size):
        yield records_to_batch(chunk, config.fields)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    """(line number, line) in blocks of bytes, decompressing by the file's extension."""
    number, rest = 0, b""
    with pa.input_stream(str(path)) as stream:
        while block := stream.read(LINES_BLOCK_BYTES):
            lines = (rest + block).split(b"\n")
            rest = lines.pop()
            for line in lines:
                number += 1
                yield number, line
    if rest:
        yield number + 1, rest


def _slices(table: pa.Table, size: int) -> Iterator[pa.Table]:
    for offset in range(0, table.num_rows, size):
        yield table.slice(offset, size)


READERS: dict[str, Reader] = {"csv": _csv, "parquet": _parquet, "json": _json, "jsonl": _jsonl}
