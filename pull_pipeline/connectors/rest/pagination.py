"""REST pagination: one class per config `type`, with guards against endless loops.

A paginator is a pydantic model (its keys, validated when the config loads) that is also
its behaviour. The config holds one per source; `build_paginator` makes a fresh copy for
every window, with its own state. `first` turns the window's parameters into the first
page's request; `next` reads the answer and returns the following request, or None when the
window is complete. A source that repeats a cursor or a next link, or ignores the page
parameter, fails with a `PermanentSourceError` instead of looping forever (the `max_pages`
limit is enforced by the connector for every type). Adding a pagination type is one class:

    @PAGINATORS.register
    class HeaderCursor(Paginator):
        type: Literal["header_cursor"]
        header: str = "X-Next-Cursor"

        def next(self, page, answer, body, count):
            cursor = answer.response.headers.get(self.header)
            return Page(page.url, {**page.params, "cursor": cursor}) if cursor else None
"""

from __future__ import annotations

import abc
import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import httpx
from pydantic import Field, PrivateAttr

from pull_pipeline.config.models import PAGINATORS, Count, PaginationConfig
from pull_pipeline.connectors.rest.paths import MISSING, dig
from pull_pipeline.errors import PermanentSourceError

if TYPE_CHECKING:  # client.py imports Page from here
    from pull_pipeline.connectors.rest.client import Answer

Params = dict[str, Any]


@dataclass(frozen=True)
class Page:
    """One request to make: the URL and the parameters to send with it."""

    url: str
    params: Params


class Paginator(PaginationConfig, abc.ABC):
    """Walks the pages of one window. Keys are fields; per-window state is private attributes."""

    _source: str = PrivateAttr(default="")

    @property
    def source(self) -> str:
        """The name of the source whose window this paginator walks (for error messages)."""
        return self._source

    def first(self, url: str, params: Params) -> Page:
        """The first page's request, given the source URL and the window's parameters.

        By default the source URL with the window's parameters, unchanged.
        """
        return Page(url, params)

    @abc.abstractmethod
    def next(self, page: Page, answer: Answer, body: Any, count: int) -> Page | None:
        """The request after `page` (whose answer held `count` records), or None at the end."""

    def _loop(self, detail: str) -> PermanentSourceError:
        return PermanentSourceError(
            f"{self.source}: pagination loop: {detail}; the source keeps pointing back to a "
            "page already read, so this window would never finish (check the pagination block)"
        )


def build_paginator(config: PaginationConfig, source: str) -> Paginator:
    """A fresh paginator for one window of `source`: the config's keys, new private state."""
    if not isinstance(config, Paginator):
        raise TypeError(f"pagination type {config.type!r} is registered but is no Paginator")
    fresh = type(config).model_construct(**dict(config))  # private attributes start anew
    fresh._source = source
    return fresh


@PAGINATORS.register
class Single(Paginator):
    """The whole window comes back in one answer."""

    type: Literal["none"]

    def next(self, page: Page, answer: Answer, body: Any, count: int) -> Page | None:
        return None


class _Numbered(Paginator):
    """Shared by page-number and offset pagination: count pages, stop on a short page.

    Without a size parameter the server picks the page size, so only an empty page is
    known to be the last one. A page whose body is byte-for-byte the previous one means the
    server ignores the page parameter: that would never end, so it is an error.
    """

    param: str
    size_param: str | None
    size: Count = Field(default=1000, ge=1)
    _index: int = PrivateAttr(default=0)
    _previous_digest: bytes = PrivateAttr(default=b"")

    @abc.abstractmethod
    def _position(self, index: int) -> int:
        """The value of the page parameter for the `index`-th page (0-based)."""

    def _request(self, url: str, params: Params) -> Page:
        extra: Params = {self.param: self._position(self._index)}
        if self.size_param:
            extra[self.size_param] = self.size
        return Page(url, {**params, **extra})

    def first(self, url: str, params: Params) -> Page:
        return self._request(url, params)

    def next(self, page: Page, answer: Answer, body: Any, count: int) -> Page | None:
        if count == 0 or (self.size_param and count < self.size):
            return None
        digest = hashlib.blake2b(answer.content, digest_size=16).digest()
        if digest == self._previous_digest:
            raise self._loop(
                f"page {self.param}={self._position(self._index)} returned exactly the "
                f"same records as the page before it; the source seems to ignore the "
                f"'{self.param}' parameter"
            )
        self._previous_digest = digest
        self._index += 1
        return self._request(page.url, page.params)


@PAGINATORS.register
class PageNumber(_Numbered):
    """`?page=1&page_size=1000`, then page=2, ... until a short or empty page."""

    type: Literal["page_number"]
    param: str = "page"
    size_param: str | None = "page_size"
    first_page: Count = 1

    def _position(self, index: int) -> int:
        return self.first_page + index


@PAGINATORS.register
class Offset(_Numbered):
    """`?offset=0&limit=1000`, then offset=1000, ... until a short or empty page."""

    type: Literal["offset"]
    param: str = "offset"
    size_param: str = "limit"

    def _position(self, index: int) -> int:
        return index * self.size


@PAGINATORS.register
class Cursor(Paginator):
    """`?cursor=<value of cursor_path in the previous answer>` until it is missing or empty."""

    type: Literal["cursor"]
    param: str = "cursor"
    cursor_path: str = "next_cursor"
    _seen: set[str] = PrivateAttr(default_factory=set)

    def next(self, page: Page, answer: Answer, body: Any, count: int) -> Page | None:
        cursor = dig(body, self.cursor_path)
        if cursor is MISSING or cursor is None or cursor == "":
            return None
        cursor = str(cursor)
        if cursor in self._seen:
            raise self._loop(f"cursor {_short(cursor)} repeated")
        self._seen.add(cursor)
        return Page(page.url, {**page.params, self.param: cursor})


@PAGINATORS.register
class NextLink(Paginator):
    """Follow the next page's URL from the body (`link_path`) or the `Link: rel="next"` header.

    Relative links resolve against the URL just requested. The window's parameters are added
    only where the link lacks them: a link that carries its own (say, a moved `start`) wins.
    A link to another host is refused, because the source's credentials would go with it.
    """

    type: Literal["next_link"]
    link_path: str | None = None  # None: follow the `Link: <...>; rel="next"` header
    _seen: set[str] = PrivateAttr(default_factory=set)
    _params: Params = PrivateAttr(default_factory=dict)

    def first(self, url: str, params: Params) -> Page:
        self._params = params
        return Page(url, params)

    def next(self, page: Page, answer: Answer, body: Any, count: int) -> Page | None:
        if self.link_path is None:
            link = answer.response.links.get("next", {}).get("url")
        else:
            link = dig(body, self.link_path)
        if link is MISSING or not link:
            return None
        if not isinstance(link, str):
            raise PermanentSourceError(
                f"{self.source}: the next link at '{self.link_path}' is a "
                f"{type(link).__name__}, not a URL; check pagination.link_path"
            )
        url = answer.response.request.url.join(link)
        if _origin(url) != _origin(answer.response.request.url):
            raise PermanentSourceError(
                f"{self.source}: the next link points to another host "
                f"({url.scheme}://{url.netloc.decode()}); refusing to send the source's "
                "credentials there"
            )
        if str(url) in self._seen:
            raise self._loop(f"next link {url.path}?… repeated")
        self._seen.add(str(url))
        given = url.params
        return Page(str(url), {k: v for k, v in self._params.items() if k not in given})


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


def _short(text: str, limit: int = 60) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "…")
