"""`kind: python`: the user's own `fetch(start, end, **options)`, for any other source.

This is the escape hatch that in-house `fetch_helper(start, end)` connectors needed, done
once: the function returns or yields DataFrames, Arrow tables or lists of dicts in the
source's own field names, and gets the same mapping, validation, landing and checks as
every built-in kind. An optional `probe()` beside it tells recovery whether it is back.

A `ConnectionError` or `TimeoutError` raised by the function counts as transient (retried,
and recovered after an outage); the function may also raise `TransientSourceError` or
`PermanentSourceError` itself. Any other exception fails the window as a bug would.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from types import ModuleType
from typing import Any

import pandas as pd
import pyarrow as pa

from pull_pipeline.config.models import PythonSource
from pull_pipeline.connectors.base import Connector, raw_schema, records_to_batch, table_to_batch
from pull_pipeline.errors import PermanentSourceError, TransientSourceError


class PythonConnector(Connector):
    """Call a user function for each window and turn whatever it returns into raw batches."""

    def __init__(self, name: str, config: PythonSource) -> None:
        super().__init__(name)
        self.config = config
        self._module, self.function = _import(name, config.function)

    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        with self._transient_errors():
            result = self.function(start, end, **self.config.options)
            if result is None:
                return
            if isinstance(result, (pd.DataFrame, pa.Table, pa.RecordBatch)) or _is_records(result):
                result = [result]
            for index, part in enumerate(result):
                yield self._batch(part, index)

    def probe(self) -> None:
        probe = getattr(self._module, "probe", None)
        if callable(probe):
            with self._transient_errors():
                probe()

    @contextmanager
    def _transient_errors(self) -> Iterator[None]:
        try:
            yield
        except (ConnectionError, TimeoutError) as exc:
            raise TransientSourceError(
                f"{self.name}: {self.config.function} failed: {type(exc).__name__}: {exc}"
            ) from None

    def _batch(self, part: Any, index: int) -> pa.Table:
        if isinstance(part, pd.DataFrame):
            part = pa.Table.from_pandas(part, preserve_index=False)
        if isinstance(part, pa.RecordBatch):
            part = pa.Table.from_batches([part])
        if isinstance(part, pa.Table):
            fields = raw_schema(self.config.fields).names
            missing = [name for name in fields if name not in part.column_names]
            if missing:
                raise PermanentSourceError(
                    f"{self.name}: {self.config.function} returned a table without the "
                    f"column(s) {missing} (it has {part.column_names}); return the source's "
                    "field names or set fields: in the config"
                )
            return table_to_batch(part, self.config.fields)
        if _is_records(part):
            return records_to_batch(list(part), self.config.fields)
        raise PermanentSourceError(
            f"{self.name}: {self.config.function} produced a {type(part).__name__} as item "
            f"{index}; return or yield pandas DataFrames, Arrow tables or lists of dicts"
        )


def _is_records(value: Any) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], Mapping))


def _import(name: str, dotted: str) -> tuple[ModuleType, Callable[..., Any]]:
    """The module named in `module:function`, and the function in it."""
    module_name, _, attr = dotted.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PermanentSourceError(
            f"{name}: cannot import {module_name!r} for function {dotted!r} ({exc}); install "
            "the package or put the module on PYTHONPATH"
        ) from None
    function = getattr(module, attr, None)
    if not callable(function):
        raise PermanentSourceError(f"{name}: {module_name!r} has no function {attr!r}")
    return module, function
