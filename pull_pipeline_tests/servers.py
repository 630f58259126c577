"""A fake vendor readings API on loopback, for tests, benchmarks and the demo.

`ReadingsApi` serves an in-memory list of readings in the vendor wire format
(`{"sensor_tag": ..., "relative_time": <epoch s>, "sensor_value": ...}`) over real HTTP(S)
on 127.0.0.1, filtered by the window parameters, with every auth type and pagination mode
the REST connector supports, failure injection, an outage switch and a log of every request.

In pytest (this module is a plugin, see conftest.py)::

    def test_something(readings_api):                 # started, serving SAMPLE readings
        source = RestSource.model_validate(readings_api.source_config())
        readings_api.auth = {"type": "bearer", "token": "t0ken-value"}   # now required
        readings_api.pagination = {"type": "cursor", "param": "cursor", "cursor_path": "next"}
        readings_api.fail_next(2, 503, retry_after=1)  # two 503s, then normal answers
        readings_api.down = True                       # every request gets 503 until False
        readings_api.readings.append({...})            # a late row, served from now on
        assert readings_api.requests[-1].params["page"] == "4"

Outside pytest::

    with ReadingsApi(sample_readings(), page_size=10_000) as api:
        print(api.url)

Attributes can be changed at any time, also while a connector is paging; each request sees
the values current when it arrives. `auth` and `pagination` take the same dicts as the
`auth:` and `pagination:` blocks of sources.yaml, so `source_config()` can copy them.
"""

from __future__ import annotations

import base64
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import parse_qsl, urlencode, urlsplit

import orjson
import pytest

WINDOW_START = datetime(2024, 1, 1, tzinfo=UTC)
DEFAULT_TAGS = ("temperature_sensor_01", "pressure_sensor_01", "flow_sensor_01")


def sample_readings(
    start: datetime = WINDOW_START,
    duration: timedelta = timedelta(hours=1),
    step: timedelta = timedelta(minutes=1),
    tags: tuple[str, ...] = DEFAULT_TAGS,
) -> list[dict[str, Any]]:
    """Readings for every tag every `step` in `[start, start + duration)`, time-ordered.

    The default is 180 rows in the hour starting 2024-01-01T00:00:00Z; values are distinct
    per row, so a duplicated or missing row shows up in assertions.
    """
    first = int(start.timestamp())
    count = int(duration / step)
    seconds = int(step.total_seconds())
    return [
        {
            "sensor_tag": tag,
            "relative_time": first + i * seconds,
            "sensor_value": round(20.0 + t + i * 0.01, 3),
        }
        for i in range(count)
        for t, tag in enumerate(tags)
    ]


def free_port() -> int:
    """A loopback port nothing listens on now: to start a server on, or to provoke
    'connection refused'."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RecordedRequest:
    """One request as the server saw it (`time` is `time.monotonic()` at arrival)."""

    time: float
    method: str
    path: str
    params: dict[str, str]  # query string, plus the JSON body's keys for POST
    headers: dict[str, str]  # names in lower case
    client_port: int  # the same port on every page means the connection was reused
    status: int = 0  # what the server answered


@dataclass
class Fault:
    """An injected answer; `remaining` None means until `clear_faults()`."""

    status: int
    remaining: int | None
    retry_after: str | None = None
    body: bytes = b'{"error": "injected failure"}'
    content_type: str = "application/json"


_WINDOW_PARSERS: dict[str, Callable[[str], float]] = {
    "epoch_s": float,
    "epoch_ms": lambda text: float(text) / 1000,
    "iso8601": lambda text: datetime.fromisoformat(text).timestamp(),
}


class ReadingsApi:
    """A threaded HTTP(S) server on 127.0.0.1 (OS-chosen port) serving `readings`.

    Settings (attributes, changeable at any time):
    - `readings`: the rows; append late rows, or assign a new list. Rows whose
      `relative_time` is not a number are served in every window (for reject tests).
    - `auth`: None, or an `auth:` block dict; a request without it gets 401.
    - `pagination`: a `pagination:` block dict (page_number, offset, cursor, next_link, none).
    - `records_path`: where the list goes ("data", "result.items", "" = top-level list).
    - `page_size`: rows per page when the request does not say (cursor, next_link always).
    - `window_format` / `window_params`: how the window arrives (as in sources.yaml).
    - `stuck_pagination`: ignore the page/offset/cursor/link asked for and always answer the
      first page with the same continuation (an endlessly looping source).
    - `link_origin`: None for relative next links ("/readings?..."); an origin such as
      `api.origin` makes them absolute (another host's origin tests the cross-host guard).
    - `delay`: seconds to wait before answering (a slow source, for timeouts).
    - `down`: answer every request with 503 (an outage) until set back to False.
    - `delay`: seconds to wait before answering each request (a slow source).

    `port` (default: chosen by the OS) lets a test bring a stopped server back on the same
    address, to simulate an outage with refused connections.
    """

    def __init__(
        self,
        readings: list[dict[str, Any]] | None = None,
        *,
        auth: dict[str, Any] | None = None,
        pagination: dict[str, Any] | None = None,
        records_path: str = "data",
        page_size: int = 50,
        window_format: str = "epoch_s",
        window_params: tuple[str, str] = ("start", "end"),
        path: str = "/readings",
        ssl_context: ssl.SSLContext | None = None,
        port: int = 0,
    ) -> None:
        self.readings = sample_readings() if readings is None else readings
        self.auth = auth
        self.pagination = pagination or {"type": "page_number", "size": page_size}
        self.records_path = records_path
        self.page_size = page_size
        self.window_format = window_format
        self.window_params = window_params
        self.path = path
        self.stuck_pagination = False
        self.link_origin: str | None = None
        self.delay = 0.0
        self.down = False
        self.delay = 0.0
        self.requests: list[RecordedRequest] = []
        self._faults: list[Fault] = []
        self._lock = threading.Lock()
        self._cache: tuple[Any, list[dict[str, Any]]] | None = None
        self._server = _Server(self, ssl_context, port)
        self._thread: threading.Thread | None = None

    # --- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The readings endpoint, e.g. http://127.0.0.1:54321/readings."""
        return f"{self.origin}{self.path}"

    @property
    def origin(self) -> str:
        scheme = "https" if self._server.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port (open keep-alive connections die with it)."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- failure injection -----------------------------------------------------------------

    def fail_next(
        self,
        n: int,
        status: int = 503,
        *,
        retry_after: int | str | None = None,
        body: str | bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer the next `n` requests with `status` (and `Retry-After` if given)."""
        self._add_fault(n, status, retry_after, body, content_type)

    def fail_always(
        self,
        status: int = 500,
        *,
        body: str | bytes | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Answer every request with `status` until `clear_faults()`.

        Also serves odd bodies: `fail_always(200, body="<html>..", content_type="text/html")`.
        """
        self._add_fault(None, status, None, body, content_type)

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(
        self,
        n: int | None,
        status: int,
        retry_after: int | str | None,
        body: str | bytes | None,
        content_type: str,
    ) -> None:
        fault = Fault(
            status,
            n,
            retry_after=None if retry_after is None else str(retry_after),
            content_type=content_type,
        )
        if body is not None:
            fault.body = body.encode() if isinstance(body, str) else body
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self) -> Fault | None:
        with self._lock:
            if not self._faults:
                return None
            fault = self._faults[0]
            if fault.remaining is not None:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.pop(0)
            return fault

    # --- config for the connector ----------------------------------------------------------

    def source_config(self, **overrides: Any) -> dict[str, Any]:
        """A `kind: rest` source block that reads this server (validate it with RestSource).

        Retries default to 3 quick attempts (10 ms backoff) so failing tests stay fast.
        """
        config: dict[str, Any] = {
            "kind": "rest",
            "url": self.url,
            "pagination": self.pagination,
            "records_path": self.records_path,
            "window_format": self.window_format,
            "window_params": {"start": self.window_params[0], "end": self.window_params[1]},
            "partitions": {"cadence": "hourly", "start": WINDOW_START.isoformat()},
            "retries": {"attempts": 3, "backoff": "0.01s", "max_backoff": "0.1s"},
        }
        if self.auth is not None:
            config["auth"] = self.auth
        return {**config, **overrides}

    # --- serving ---------------------------------------------------------------------------

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        split = urlsplit(handler.path)
        params = dict(parse_qsl(split.query, keep_blank_values=True))
        length = int(handler.headers.get("Content-Length") or 0)
        if handler.command == "POST" and length:
            document = orjson.loads(handler.rfile.read(length))
            params.update({k: v if isinstance(v, str) else orjson.dumps(v).decode()
                           for k, v in document.items()})
        record = RecordedRequest(
            time=time.monotonic(),
            method=handler.command,
            path=split.path,
            params=params,
            headers={k.lower(): v for k, v in handler.headers.items()},
            client_port=handler.client_address[1],
        )
        with self._lock:
            self.requests.append(record)
        if self.delay:
            time.sleep(self.delay)
        if self.delay:
            time.sleep(self.delay)
        status, headers, body = self._answer(record)
        record.status = status
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _answer(self, request: RecordedRequest) -> tuple[int, dict[str, str], bytes]:
        json = {"Content-Type": "application/json"}
        if self.down:
            return 503, json, b'{"error": "down for maintenance"}'
        fault = self._take_fault()
        if fault is not None:
            headers = {"Content-Type": fault.content_type}
            if fault.retry_after is not None:
                headers["Retry-After"] = fault.retry_after
            return fault.status, headers, fault.body
        if request.path != self.path:
            return 404, json, b'{"error": "no such endpoint"}'
        if not self._authorized(request):
            challenge = {"WWW-Authenticate": 'Basic realm="readings"'}
            return 401, {**json, **challenge}, b'{"error": "unauthorized"}'
        try:
            body, headers = self._page(request, self._window_rows(request.params))
        except (KeyError, ValueError) as exc:
            return 400, json, orjson.dumps({"error": f"bad request: {exc}"})
        return 200, {**json, **headers}, orjson.dumps(body)

    def _authorized(self, request: RecordedRequest) -> bool:
        auth = self.auth
        if auth is None:
            return True
        given = request.headers.get("authorization")
        if auth["type"] == "api_key":
            key: str = auth["value"]
            if auth.get("header"):
                return request.headers.get(auth["header"].lower()) == key
            return request.params.get(auth["query_param"]) == key
        if auth["type"] == "bearer":
            return given == f"Bearer {auth['token']}"
        if auth["type"] == "basic":
            pair = f"{auth['username']}:{auth['password']}".encode()
            return given == f"Basic {base64.b64encode(pair).decode()}"
        raise ValueError(f"unknown auth type {auth['type']!r}")

    def _window_rows(self, params: dict[str, str]) -> list[dict[str, Any]]:
        """The rows in the requested window, cached until `readings` grows or is replaced."""
        parse = _WINDOW_PARSERS[self.window_format]
        start_text, end_text = (params.get(name) for name in self.window_params)
        start = parse(start_text) if start_text else float("-inf")
        end = parse(end_text) if end_text else float("inf")
        readings = self.readings
        key = (start, end, id(readings), len(readings))
        cached = self._cache
        if cached is not None and cached[0] == key:
            return cached[1]
        rows = []
        for row in readings:
            moment = _seconds(row.get("relative_time"))
            if moment is None or start <= moment < end:
                rows.append(row)
        self._cache = (key, rows)
        return rows

    def _page(
        self, request: RecordedRequest, rows: list[dict[str, Any]]
    ) -> tuple[Any, dict[str, str]]:
        """One page of `rows` per the pagination mode: (body, extra headers)."""
        mode = self.pagination
        params = request.params
        stuck = self.stuck_pagination
        extras: dict[str, Any] = {}
        headers: dict[str, str] = {}
        if mode["type"] == "none":
            records = rows
        elif mode["type"] in ("page_number", "offset"):
            numbered = mode["type"] == "page_number"
            size_param = mode.get("size_param", "page_size" if numbered else "limit")
            size = int(params.get(size_param) or self.page_size) if size_param else self.page_size
            if numbered:
                first = mode.get("first_page", 1)
                page = first if stuck else int(params.get(mode.get("param", "page"), first))
                offset = (page - first) * size
            else:
                offset = 0 if stuck else int(params.get(mode.get("param", "offset"), 0))
            records = rows[offset : offset + size]
        elif mode["type"] == "cursor":
            given = params.get(mode.get("param", "cursor"))
            offset = 0 if stuck or not given else _decode_cursor(given)
            records = rows[offset : offset + self.page_size]
            after = offset + self.page_size
            more = stuck or after < len(rows)
            extras[mode.get("cursor_path", "next_cursor")] = _encode_cursor(after) if more else None
        elif mode["type"] == "next_link":
            offset = 0 if stuck else int(params.get("after", 0))
            records = rows[offset : offset + self.page_size]
            after = offset + self.page_size
            link = None
            if stuck or after < len(rows):
                keep = {k: v for k, v in params.items() if k != self._query_secret_name()}
                link = f"{self.path}?{urlencode({**keep, 'after': after})}"
                if self.link_origin:
                    link = self.link_origin + link
            if mode.get("link_path"):
                extras[mode["link_path"]] = link
            elif link:
                headers["Link"] = f'<{link}>; rel="next"'
        else:
            raise ValueError(f"unknown pagination type {mode['type']!r}")
        if not self.records_path:
            if extras:
                raise ValueError("a top-level list body cannot carry a cursor or a link")
            return records, headers
        body: dict[str, Any] = {}
        for path, value in {self.records_path: records, **extras}.items():
            _put(body, path, value)
        return body, headers

    def _query_secret_name(self) -> str | None:
        auth = self.auth
        return auth.get("query_param") if auth and auth["type"] == "api_key" else None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs
    timeout = 10  # idle keep-alive connections close after this
    disable_nagle_algorithm = True  # headers and body go out as separate writes
    server: _Server

    def do_GET(self) -> None:
        self.server.api._handle(self)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `api.requests` instead of stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: ReadingsApi, ssl_context: ssl.SSLContext | None, port: int = 0) -> None:
        self.api = api
        self.ssl_context = ssl_context
        super().__init__(("127.0.0.1", port), _Handler)

    def get_request(self) -> tuple[Any, Any]:
        sock, address = super().get_request()
        if self.ssl_context is not None:
            # Handshake later, in the connection's own thread, so a client that rejects our
            # certificate cannot stall the accept loop.
            sock = self.ssl_context.wrap_socket(
                sock, server_side=True, do_handshake_on_connect=False
            )
        return sock, address

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (timeout, closed connection) is expected; anything else is a
        # bug in this server and is printed as usual.
        if not isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            super().handle_error(request, client_address)

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                return
        super().finish_request(request, client_address)


def _seconds(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _put(body: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for key in parents:
        body = body.setdefault(key, {})
    body[last] = value


def _encode_cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def _decode_cursor(cursor: str) -> int:
    return int(base64.urlsafe_b64decode(cursor.encode()).decode().split(":")[1])


# --- pytest fixtures ---------------------------------------------------------------------------


@pytest.fixture
def readings_api_factory() -> Iterator[Callable[..., ReadingsApi]]:
    """Start any number of `ReadingsApi(**kwargs)` servers; all stop after the test."""
    started: list[ReadingsApi] = []

    def make(*args: Any, **kwargs: Any) -> ReadingsApi:
        api = ReadingsApi(*args, **kwargs).start()
        started.append(api)
        return api

    yield make
    for api in started:
        api.stop()


@pytest.fixture
def readings_api(readings_api_factory: Callable[..., ReadingsApi]) -> ReadingsApi:
    """A started server with `sample_readings()`: page_number pages of 50 under "data"."""
    return readings_api_factory()

