"""Deadlines that hold for a whole request, not just for each socket read.

httpx applies `timeout` to each read, so a server that drips a byte now and then (in the
headers or the body) keeps a request alive forever. Here every socket operation of a client
(connect, TLS handshake, each read and write) gets the smaller of its own timeout and the
time left to the current deadline, and fails with httpcore's own timeout error once the
deadline has passed; httpx turns those into `httpx.TimeoutException`s as usual.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx


@dataclass(frozen=True)
class Bound:
    """A moment (`time.monotonic()`) some work must end by, and the config key that set it."""

    key: str  # e.g. "request_deadline", as the user writes it in sources.yaml
    seconds: float  # the configured value
    at: float

    @classmethod
    def starting_now(cls, key: str, seconds: float) -> Bound:
        return cls(key, seconds, time.monotonic() + seconds)

    def left(self) -> float:
        return self.at - time.monotonic()

    def describe(self) -> str:
        return f"{self.key}={self.seconds:g}s"


class Deadline:
    """The deadline of the request under way (None between requests), shared with the sockets."""

    def __init__(self) -> None:
        self.at: float | None = None

    def clamp(self, timeout: float | None, expired: type[Exception]) -> float | None:
        """`timeout` shortened to the time left; `expired` is raised when none is left."""
        if self.at is None:
            return timeout
        left = self.at - time.monotonic()
        if left <= 0:
            raise expired("the request's deadline has passed")
        return left if timeout is None else min(timeout, left)


class DeadlineStream(httpcore.NetworkStream):
    """A socket stream whose every operation ends by the deadline."""

    def __init__(self, stream: httpcore.NetworkStream, deadline: Deadline) -> None:
        self._stream = stream
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._deadline.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._deadline.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        return DeadlineStream(self._stream.start_tls(ssl_context, server_hostname, clamped),
                              self._deadline)

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class DeadlineBackend(httpcore.NetworkBackend):
    """httpcore's network backend, with every connection it opens bound by the deadline."""

    def __init__(self, backend: httpcore.NetworkBackend, deadline: Deadline) -> None:
        self._backend = backend
        self._deadline = deadline

    def connect_tcp(
        self, host: str, port: int, timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_tcp(host, port, clamped, local_address, socket_options)
        return DeadlineStream(stream, self._deadline)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        clamped = self._deadline.clamp(timeout, httpcore.ConnectTimeout)
        stream = self._backend.connect_unix_socket(path, clamped, socket_options)
        return DeadlineStream(stream, self._deadline)

    def sleep(self, seconds: float) -> None:
        self._backend.sleep(seconds)


def bound_sockets(client: httpx.Client, deadline: Deadline) -> None:
    """Route every connection `client` opens (directly or through a proxy) via `deadline`.

    httpx does not expose its connection pool's network backend, so this sets it on each
    `HTTPTransport`'s pool (httpx is pinned to 0.28; the deadline tests fail if that moves).
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if isinstance(transport, httpx.HTTPTransport):
            pool = transport._pool
            pool._network_backend = DeadlineBackend(pool._network_backend, deadline)
