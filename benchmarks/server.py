"""A loopback REST server that answers with precomputed page bodies.

The pages are serialised once, before the clock starts, so the server costs a dictionary
look-up and a socket write per request and is never what the benchmark measures. It speaks
HTTP/1.1 with keep-alive, like a vendor API behind a load balancer.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qsl, urlsplit

PATH = "/readings"
EMPTY_PAGE = b'{"data": [], "next_page": null}'


class PagesServer:
    """`GET /readings?start=&end=&page=&page_size=` with an `X-API-Key` header.

    Serves `windows[(start, end)][page - 1]` for each window `[start, end)` (epoch seconds)
    it was given, an empty page for any other window or a page past the end, 401 without
    the key and 400 for a page size other than the one the bodies were cut to.
    """

    def __init__(self, windows: Mapping[tuple[int, int], list[bytes]], page_size: int,
                 api_key: str) -> None:
        self.windows = windows
        self.page_size = page_size
        self.api_key = api_key
        self.requests = 0
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{PATH}"

    def answer(self, path: str, api_key: str | None) -> tuple[int, bytes]:
        self.requests += 1
        split = urlsplit(path)
        if split.path != PATH:
            return 404, b'{"error": "no such endpoint"}'
        if api_key != self.api_key:
            return 401, b'{"error": "invalid API key"}'
        query = dict(parse_qsl(split.query))
        try:
            window = (int(query["start"]), int(query["end"]))
            page, size = int(query.get("page", 1)), int(query["page_size"])
        except (KeyError, ValueError):
            return 400, b'{"error": "start, end and page_size are required integers"}'
        if size != self.page_size:
            return 400, b'{"error": "unsupported page_size"}'
        bodies = self.windows.get(window, [])
        if not 1 <= page <= len(bodies):
            return 200, EMPTY_PAGE
        return 200, bodies[page - 1]

    def __enter__(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def _handler_for(server: PagesServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            status, body = server.answer(self.path, self.headers.get("X-API-Key"))
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: a line per request would cost more than serving it."""

    return Handler
