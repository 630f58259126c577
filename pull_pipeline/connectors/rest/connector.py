"""`RestConnector`: one window of a REST source, page by page, as raw Arrow tables."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from pull_pipeline.config.models import RestSource
from pull_pipeline.connectors.base import Connector, records_to_batch
from pull_pipeline.connectors.rest.body import parse_json, records_in
from pull_pipeline.connectors.rest.client import RestClient
from pull_pipeline.connectors.rest.pagination import Page, build_paginator
from pull_pipeline.errors import PermanentSourceError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        raise ValueError("window bounds must be timezone-aware datetimes")
    return moment.astimezone(UTC)


WINDOW_FORMATS: dict[str, Callable[[datetime], Any]] = {
    "epoch_s": lambda moment: (_utc(moment) - _EPOCH) // timedelta(seconds=1),
    "epoch_ms": lambda moment: (_utc(moment) - _EPOCH) // timedelta(milliseconds=1),
    "iso8601": lambda moment: _utc(moment).isoformat().replace("+00:00", "Z"),
}


class RestConnector(Connector):
    """Pull `[start, end)` from a REST API and yield one raw table per non-empty page.

    `config` must have its `${NAME}` placeholders resolved already (`resolve_env`). The
    window goes out in `window_params`, formatted per `window_format`, next to the static
    `params`; pages follow `pagination` up to `max_pages`. Empty pages yield nothing, so a
    window without data yields no table at all (use `raw_schema` for an empty landing file).
    Rows are passed on as received: validation, not this class, rejects rows outside the
    window with their reason, so a source that ignores the window parameters is visible.
    """

    retries_requests = True

    def __init__(self, name: str, config: RestSource) -> None:
        super().__init__(name)
        self.config = config
        self._client = RestClient(name, config)

    def fetch(self, start: datetime, end: datetime) -> Iterator[pa.Table]:
        config = self.config
        paginator = build_paginator(config.pagination, self.name)
        page: Page | None = paginator.first(config.url, self._params(start, end))
        window = self._client.window()
        pages = 0
        while page is not None:
            if pages == config.max_pages:
                raise PermanentSourceError(
                    f"{self.name}: the window [{start.isoformat()}, {end.isoformat()}) needs more "
                    f"than max_pages={config.max_pages} pages; if the source really holds that "
                    "much, raise max_pages for this source in sources.yaml (or use a shorter "
                    "partition cadence), otherwise check the pagination block"
                )
            answer = self._client.send(page, window)
            pages += 1
            body = parse_json(self.name, answer)
            records = records_in(self.name, body, config.records_path)
            if records:
                yield records_to_batch(records, config.fields)
            page = paginator.next(page, answer, body, len(records))

    def probe(self) -> None:
        """Ask once (no retries) for the first page of the last second before now.

        Raises what that first page would raise in a fetch: `TransientSourceError` when the
        source is unreachable, times out or answers 408/429/5xx, `PermanentSourceError` for
        refused credentials (401/403) and other client errors. The body is read (within
        `max_response_bytes`) but not parsed.
        """
        end = datetime.now(UTC).replace(microsecond=0)
        paginator = build_paginator(self.config.pagination, self.name)
        page = paginator.first(self.config.url, self._params(end - timedelta(seconds=1), end))
        self._client.send(page, self._client.window(), attempts=1)

    def close(self) -> None:
        self._client.close()

    def _params(self, start: datetime, end: datetime) -> dict[str, Any]:
        fmt = WINDOW_FORMATS[self.config.window_format]
        names = self.config.window_params
        return {**self.config.params, names.start: fmt(start), names.end: fmt(end)}
