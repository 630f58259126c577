"""What every connector provides, and the raw batch shape they all yield.

A connector is plain Python: given a window it yields raw batches, one per page or chunk,
and knows nothing about Dagster. A raw batch is a `pyarrow.Table` whose columns are the
source's own field names (`fields:` in the config) holding the values as received, as text
(numbers keep their exact textual form, so nothing is rounded before validation).
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from itertools import repeat
from typing import Any, Self

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from pull_pipeline.config.models import FieldMap, SourceBase


class Connector(abc.ABC):
    """Fetch one time window from a source, chunk by chunk, with bounded memory."""

    # True when the connector retries each request itself (REST honours Retry-After page by
    # page); otherwise a transient failure refetches the whole window (`pipeline.land`).
    retries_requests: bool = False

    def __init__(self, name: str) -> None:
        self.name = name

    @abc.abstractmethod
    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        """Yield raw batches for `[start, end)`; `start`/`end` are timezone-aware UTC."""

    @abc.abstractmethod
    def probe(self) -> None:
        """Raise `TransientSourceError` if the source cannot be reached right now.

        Cheap by design: recovery calls it before requesting backfills after an outage.
        """

    def close(self) -> None:  # an optional hook, not abstract
        """Release connections; the default has nothing to release."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SourceKind(SourceBase):
    """A source kind in one class: its keys are the fields, `fetch` and `probe` its behaviour.

    For kinds that need nothing kept open between windows. Register the class with
    `@SOURCE_KINDS.register` and declare `kind: Literal["<name>"]`; `fetch` yields raw batches
    (`records_to_batch` and `table_to_batch` make them). A kind that holds a connection or
    retries requests itself overrides `connector` to return its own `Connector` instead.
    """

    @abc.abstractmethod
    def fetch(self, name: str, start: datetime, end: datetime) -> Iterator[pa.Table]:
        """Yield raw batches of source `name` for `[start, end)` (timezone-aware UTC)."""

    def probe(self, name: str) -> None:
        """Raise `TransientSourceError` when the source is unreachable; by default it is not checked."""

    def connector(self, name: str) -> Connector:
        return _KindConnector(name, self)


class _KindConnector(Connector):
    """The `Connector` of a `SourceKind`: its own `fetch` and `probe`."""

    def __init__(self, name: str, config: SourceKind) -> None:
        super().__init__(name)
        self.config = config

    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        return self.config.fetch(self.name, start, end)

    def probe(self) -> None:
        self.config.probe(self.name)


def raw_schema(fields: FieldMap) -> pa.Schema:
    """The landing schema: the three mapped fields, as text, under the source's names."""
    return pa.schema(
        [pa.field(name, pa.large_string()) for name in
         (fields.sensor_tag, fields.relative_time, fields.sensor_value)]
    )


def records_to_batch(records: Sequence[Any], fields: FieldMap) -> pa.Table:
    """Turn JSON-like records (dicts) into a raw batch, vectorised where the data allows.

    Homogeneous columns convert in Arrow's C++ code; a column mixing types (a string or a
    boolean among numbers, say) falls back to JSON text per value, so a malformed row is kept
    as received and rejected later with its reason instead of failing the whole page.
    """
    schema = raw_schema(fields)
    columns = []
    for name in schema.names:
        try:  # dict.get mapped in C: faster than a comprehension, for all-dict pages
            values = list(map(dict.get, records, repeat(name)))
        except TypeError:  # some record is not an object: it maps to nulls, rejected later
            values = [record.get(name) if isinstance(record, dict) else None for record in records]
        columns.append(to_text_array(values))
    return pa.Table.from_arrays(columns, schema=schema)


def table_to_batch(table: pa.Table | pa.RecordBatch, fields: FieldMap) -> pa.Table:
    """The raw batch of a table already in the source's field names (all three must be there)."""
    schema = raw_schema(fields)
    return pa.Table.from_arrays([to_text_array(table.column(name)) for name in schema.names],
                                schema=schema)


def find_records(document: Any) -> list[Any] | None:
    """The records in a JSON document: a top-level list, or an object's only list-valued key.

    None when there is no such list, or more than one: the caller says where to look instead.
    """
    if isinstance(document, list):
        return document
    if isinstance(document, dict):
        lists = [value for value in document.values() if isinstance(value, list)]
        if len(lists) == 1:
            return lists[0]
    return None


def to_text_array(values: Sequence[Any] | pa.Array | pa.ChunkedArray) -> pa.Array:
    """Render values as text: Arrow's cast for clean columns, JSON per value otherwise.

    Booleans stay `true`/`false` (JSON's spelling), also among numbers, where Arrow would
    read them as 1.0/0.0 and so turn a wrong value into a plausible reading.
    """
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        array = values
    else:
        try:
            array = pa.array(values, from_pandas=False)
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            return _json_texts(values)
        # Only a float column can hide booleans (ints + bools fail above), so only it is scanned.
        if pa.types.is_floating(array.type) and bool in set(map(type, values)):
            return _json_texts(values)
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_large_string(array.type):
        return array
    if pa.types.is_string(array.type) or pa.types.is_null(array.type):
        return array.cast(pa.large_string())
    if pa.types.is_timestamp(array.type):
        if array.type.tz is None:
            array = array.cast(pa.timestamp(array.type.unit, tz="UTC"))
        return pc.strftime(array, format="%Y-%m-%dT%H:%M:%S%z").cast(pa.large_string())
    try:
        return array.cast(pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return _json_texts(array.to_pylist())


def _json_texts(values: Sequence[Any]) -> pa.Array:
    return pa.array([_json_text(v) for v in values], type=pa.large_string())


def _json_text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # also beyond 64 bits, which orjson refuses
    return orjson.dumps(value, default=str).decode()


def batches_of(items: Iterable[Any], size: int) -> Iterator[list[Any]]:
    """Group an iterable into lists of at most `size` items."""
    chunk: list[Any] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
