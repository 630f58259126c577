"""A small demo REST API in the vendor wire format, for the quick start.

`GET /readings?start=<epoch s>&end=<epoch s>&page=1&page_size=500` with header
`X-API-Key: $DEMO_API_KEY` answers `{"data": [{"sensor_tag", "relative_time",
"sensor_value"}, ...], "next_page": 2 | null}`. Readings are computed from the window (five
sensors every 10 s, nothing in the future), so every window has data and reruns agree.

To watch a failure and its recovery, start an outage: while the file passed as
`--outage-file` exists (`make dev`: `.pull_pipeline/demo/outage`), `/readings` answers
503, as a vendor's API does when it is down.
"""

from __future__ import annotations

import argparse
import math
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import orjson

SENSORS = ("boiler_temp", "boiler_pressure", "pump_flow", "tank_level", "valve_position")
STEP_SECONDS = 10


def readings(start: int, end: int) -> list[dict[str, object]]:
    """Deterministic readings in `[start, end)`, capped at the current time."""
    end = min(end, int(time.time()))
    first = start + (-start) % STEP_SECONDS
    return [
        {
            "sensor_tag": tag,
            "relative_time": t,
            "sensor_value": round(50 + 20 * math.sin(t / 900 + index), 3),
        }
        for t in range(first, end, STEP_SECONDS)
        for index, tag in enumerate(SENSORS)
    ]


class DemoHandler(BaseHTTPRequestHandler):
    api_key = "demo-key"
    outage_file: Path | None = None

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path == "/health":
            return self._send(200, {"status": "ok"})
        if url.path != "/readings":
            return self._send(404, {"error": "not found"})
        if self.outage_file is not None and self.outage_file.exists():
            return self._send(503, {"error": f"demo outage: remove {self.outage_file} to end it"})
        if self.headers.get("X-API-Key") != self.api_key:
            return self._send(401, {"error": "invalid API key"})
        query = {key: values[0] for key, values in parse_qs(url.query).items()}
        try:
            start, end = int(query["start"]), int(query["end"])
            page, size = int(query.get("page", 1)), int(query.get("page_size", 500))
        except (KeyError, ValueError):
            return self._send(400, {"error": "start and end (epoch seconds) are required"})
        rows = readings(start, end)
        chunk = rows[(page - 1) * size: page * size]
        more = page * size < len(rows)
        self._send(200, {"data": chunk, "next_page": page + 1 if more else None})

    def _send(self, status: int, body: object) -> None:
        payload = orjson.dumps(body)
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: object) -> None:
        return


def serve(
    host: str, port: int, api_key: str, outage_file: Path | None = None
) -> ThreadingHTTPServer:
    """Bind now (so a busy port fails here, at once) and serve from a daemon thread."""
    handler = type("ConfiguredDemoHandler", (DemoHandler,),
                   {"api_key": api_key, "outage_file": outage_file})
    server = ThreadingHTTPServer((host, port), handler)
    threading.Thread(target=server.serve_forever, name="demo-api", daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--outage-file", type=Path, default=None)
    args = parser.parse_args()
    api_key = os.environ.get("DEMO_API_KEY", DemoHandler.api_key)
    server = serve(args.host, args.port, api_key, args.outage_file)
    print(f"demo API on http://{args.host}:{args.port}/readings", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.shutdown()


if __name__ == "__main__":
    main()
