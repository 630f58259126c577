"""REST authentication: one class per config `type`, holding its keys and how it signs.

An auth type is a pydantic model (its keys, validated when the config loads) that is also
its behaviour: `auth_flow` signs each request httpx sends (httpx's own auth protocol), and
`secrets` lists the values `build_auth` registers with `redaction` before any I/O, so a
credential never surfaces in a log or an error, even when the config was built in code.
Adding an auth type is one class:

    @AUTH_TYPES.register
    class HmacAuth(Auth):
        type: Literal["hmac"]
        key: str
        def secrets(self) -> list[str]: return [self.key]
        def auth_flow(self, request): request.headers["X-Sig"] = sign(self.key, request); yield request
"""

from __future__ import annotations

import abc
import base64
from collections.abc import Generator
from typing import Literal

import httpx
from pydantic import model_validator

from pull_pipeline.config.models import AUTH_TYPES, AuthConfig
from pull_pipeline.redaction import register_secret

Flow = Generator[httpx.Request, httpx.Response, None]


class Auth(AuthConfig, abc.ABC):
    """An `auth:` type: its keys are the model's fields, its behaviour `auth_flow`."""

    def secrets(self) -> list[str]:
        """The values to mask everywhere (keys, tokens, passwords and their encodings)."""
        return []

    @abc.abstractmethod
    def auth_flow(self, request: httpx.Request) -> Flow:
        """Sign `request` and yield it (httpx's `Auth.auth_flow`: it may send more than one)."""


class _Signer(httpx.Auth):
    """httpx's side of an `Auth` block."""

    def __init__(self, auth: Auth) -> None:
        self._auth = auth

    def auth_flow(self, request: httpx.Request) -> Flow:
        return self._auth.auth_flow(request)


def build_auth(config: AuthConfig | None) -> httpx.Auth | None:
    """The httpx auth for a source's `auth:` block (None when the source needs none)."""
    if config is None:
        return None
    if not isinstance(config, Auth):
        raise TypeError(f"auth type {config.type!r} is registered but is no Auth subclass")
    for secret in config.secrets():
        register_secret(secret)
    return _Signer(config)


@AUTH_TYPES.register
class ApiKey(Auth):
    """An API key in a header (`X-API-Key: ...`) or a query parameter (`?api_key=...`)."""

    type: Literal["api_key"]
    value: str
    header: str | None = None
    query_param: str | None = None

    @model_validator(mode="after")
    def _one_place(self) -> ApiKey:
        if (self.header is None) == (self.query_param is None):
            raise ValueError("api_key auth needs exactly one of 'header' or 'query_param'")
        return self

    def secrets(self) -> list[str]:
        return [self.value]

    def auth_flow(self, request: httpx.Request) -> Flow:
        if self.header is not None:
            request.headers[self.header] = self.value
        else:
            # Replaces a key already in the URL (a next link may echo it) instead of repeating it.
            request.url = request.url.copy_set_param(str(self.query_param), self.value)
        yield request


@AUTH_TYPES.register
class Bearer(Auth):
    """`Authorization: Bearer <token>`."""

    type: Literal["bearer"]
    token: str

    def secrets(self) -> list[str]:
        return [self.token]

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.headers["Authorization"] = f"Bearer {self.token}"
        yield request


@AUTH_TYPES.register
class Basic(Auth):
    """HTTP basic auth (username and password)."""

    type: Literal["basic"]
    username: str
    password: str

    def _pair(self) -> bytes:
        return f"{self.username}:{self.password}".encode()

    def secrets(self) -> list[str]:
        # The header carries base64("user:password"), where the password is not a substring;
        # a server echoing the header (or a URL-safe copy of it) must not reveal it.
        pair = self._pair()
        return [self.password, base64.b64encode(pair).decode(),
                base64.urlsafe_b64encode(pair).decode()]

    def auth_flow(self, request: httpx.Request) -> Flow:
        request.headers["Authorization"] = f"Basic {base64.b64encode(self._pair()).decode()}"
        yield request
