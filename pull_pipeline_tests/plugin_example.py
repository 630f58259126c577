"""A package outside pull_pipeline adding a source kind, a paginator and an auth type.

Each is one class: its keys are pydantic fields, its behaviour methods, and the registry's
decorator makes sources.yaml accept it. Importing this module is all a project needs.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any, Literal

import httpx
import pyarrow as pa
from pydantic import Field, PrivateAttr

from pull_pipeline.config.models import Duration
from pull_pipeline.connectors import SOURCE_KINDS, SourceKind
from pull_pipeline.connectors.base import records_to_batch
from pull_pipeline.connectors.rest import AUTH_TYPES, PAGINATORS, Auth, Page, Paginator
from pull_pipeline.connectors.rest.auth import Flow

RAMP_START = 10.0


@SOURCE_KINDS.register
class Ramp(SourceKind):
    """`kind: ramp`: each tag reads `RAMP_START + step * n` at the n-th `every` of the day."""

    kind: Literal["ramp"]
    tags: list[str] = Field(min_length=1)
    every: Duration = timedelta(minutes=15)
    step: float = 1.0

    def fetch(self, name: str, start: datetime, end: datetime) -> Iterator[pa.Table]:
        moment, records = start, []
        midnight = start.replace(hour=0, minute=0, second=0, microsecond=0)
        while moment < end:
            value = RAMP_START + self.step * ((moment - midnight) // self.every)
            records += [{self.fields.sensor_tag: tag,
                         self.fields.relative_time: int(moment.timestamp()),
                         self.fields.sensor_value: value} for tag in self.tags]
            moment += self.every
        yield records_to_batch(records, self.fields)


@PAGINATORS.register
class SkipTake(Paginator):
    """`?skip=<records read so far>&take=<size>` until an empty page."""

    type: Literal["skip_take"]
    size: int = Field(default=100, ge=1)
    _read: int = PrivateAttr(default=0)

    def first(self, url: str, params: dict[str, Any]) -> Page:
        return Page(url, {**params, "skip": 0, "take": self.size})

    def next(self, page: Page, answer: Any, body: Any, count: int) -> Page | None:
        if count == 0:
            return None
        self._read += count
        return Page(page.url, {**page.params, "skip": self._read})


@AUTH_TYPES.register
class XToken(Auth):
    """`X-Token: <token>` on every request."""

    type: Literal["x_token"]
    token: str

    def secrets(self) -> list[str]:
        return [self.token]

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.headers["X-Token"] = self.token
        yield request
