"""REST authentication: one small `httpx.Auth` class per config `type`.

Each class applies itself to every request httpx sends (headers, query parameter or
HTTP basic), and registers its secret with `redaction` before any I/O, so a credential
can never surface in a log or an error even when the config was built in code.
Adding an auth type is adding a class decorated with `@register("<type>")`.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Generator
from typing import Any

import httpx

from pull_pipeline.config.models import ApiKeyAuth, BasicAuth, BearerAuth
from pull_pipeline.redaction import register_secret

_REGISTRY: dict[str, Callable[[Any], httpx.Auth]] = {}


def register(type_: str) -> Callable[[type[httpx.Auth]], type[httpx.Auth]]:
    """Make an auth class available under the config's `auth.type` value."""

    def add(cls: type[httpx.Auth]) -> type[httpx.Auth]:
        _REGISTRY[type_] = cls
        return cls

    return add


def build_auth(config: Any | None) -> httpx.Auth | None:
    """The auth for a source's `auth:` block (None when the source needs none)."""
    if config is None:
        return None
    return _REGISTRY[config.type](config)


@register("api_key")
class ApiKey(httpx.Auth):
    """An API key in a header (`X-API-Key: ...`) or a query parameter (`?api_key=...`)."""

    def __init__(self, config: ApiKeyAuth) -> None:
        register_secret(config.value)
        self._header = config.header
        self._query_param = config.query_param
        self._value = config.value

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self._header is not None:
            request.headers[self._header] = self._value
        else:
            # Replaces a key already in the URL (a next link may echo it) instead of repeating it.
            request.url = request.url.copy_set_param(self._query_param, self._value)
        yield request


@register("bearer")
class Bearer(httpx.Auth):
    """`Authorization: Bearer <token>`."""

    def __init__(self, config: BearerAuth) -> None:
        register_secret(config.token)
        self._header = f"Bearer {config.token}"

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


@register("basic")
class Basic(httpx.BasicAuth):
    """HTTP basic auth (username and password), via httpx's own implementation."""

    def __init__(self, config: BasicAuth) -> None:
        register_secret(config.password)
        # The header carries base64("user:password"), where the password is not a substring;
        # a server echoing the header (or a URL-safe copy of it) must not reveal it.
        pair = f"{config.username}:{config.password}".encode()
        register_secret(base64.b64encode(pair).decode())
        register_secret(base64.urlsafe_b64encode(pair).decode())
        super().__init__(config.username, config.password)
