"""The REST connector against sources that misbehave: odd JSON, slow drips, endless or
inflating bodies, and servers that ask to be left alone for a day.

Every server is real HTTP on 127.0.0.1: `ReadingsApi` (servers.py) for well-formed answers,
`ScriptedServer` below for answers no honest server sends. Bound tests assert the elapsed time:
each must end within its bound plus a small margin.
"""

from __future__ import annotations

import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pyarrow as pa
import pytest
from pydantic import ValidationError

from pull_pipeline.canonical import to_canonical
from pull_pipeline.config.models import RestSource
from pull_pipeline.connectors.rest import RestConnector
from pull_pipeline.errors import PermanentSourceError, TransientSourceError
from pull_pipeline.validation import validate
from pull_pipeline_tests.servers import WINDOW_START, ReadingsApi, sample_readings

START = WINDOW_START + timedelta(hours=1)
END = START + timedelta(hours=1)
T0 = int(START.timestamp())
MARGIN = 0.6  # seconds a bound may overrun: one drip interval plus scheduling noise

Script = Callable[[BaseHTTPRequestHandler], None]


class ScriptedServer(ThreadingHTTPServer):
    """HTTP/1.1 on 127.0.0.1 answering every request with `script(handler)`.

    `stopping` is set when the test ends, so scripts that would run forever can return.
    """

    daemon_threads = True

    def __init__(self, script: Script) -> None:
        self.script = script
        self.stopping = threading.Event()
        super().__init__(("127.0.0.1", 0), ScriptedHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/readings"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Quiet: a client that gives up mid-answer is the point of these tests."""


class ScriptedHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ScriptedServer

    def do_GET(self) -> None:
        self.server.script(self)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], str]]:
    """Start a `ScriptedServer(script)` and return its URL; all stop after the test."""
    started: list[ScriptedServer] = []

    def make(script: Script) -> str:
        server = ScriptedServer(script)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        started.append(server)
        return server.url

    yield make
    for server in started:
        server.stopping.set()
        server.shutdown()
        server.server_close()


@pytest.fixture
def api(readings_api_factory: Callable[..., ReadingsApi]) -> ReadingsApi:
    """Three hours of readings, the window's 180 in one answer."""
    return readings_api_factory(sample_readings(duration=timedelta(hours=3)),
                                pagination={"type": "none"})


def source(url: str, **overrides: Any) -> RestSource:
    config: dict[str, Any] = {
        "kind": "rest",
        "url": url,
        "params": {"site": "north"},  # a query string, which must never reach a message
        "records_path": "data",
        "partitions": {"start": WINDOW_START.isoformat()},
        "retries": {"attempts": 1, "backoff": "0.01s", "max_backoff": "0.1s"},
    }
    return RestSource.model_validate({**config, **overrides})


def fetch(config: RestSource) -> list[pa.Table]:
    with RestConnector("plant_a", config) as connector:
        return list(connector.fetch(START, END))


def timed_failure(config: RestSource, error: type[Exception]) -> tuple[str, float]:
    """Fetch a window that must fail with `error`: (message, seconds it took)."""
    began = time.monotonic()
    with pytest.raises(error) as caught:
        fetch(config)
    elapsed = time.monotonic() - began
    message = str(caught.value)
    assert "?" not in message and "site=" not in message and "start=" not in message
    return message, elapsed


def headers(handler: BaseHTTPRequestHandler, **extra: str) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    for name, value in extra.items():
        handler.send_header(name.replace("_", "-"), value)
    handler.end_headers()


def reasons(config: RestSource, tables: list[pa.Table]) -> dict[str, str]:
    """Validate fetched raw tables: {sensor_tag: reason} of the rejected rows."""
    raw = pa.concat_tables(tables)
    checked = validate(to_canonical(raw, config), raw, config.fields, START, END)
    return {json.loads(row)["sensor_tag"]: reason
            for row, reason in zip(checked.rejects["raw_row"], checked.rejects["reason"],
                                   strict=True)}


# --- JSON that orjson and Arrow would bend ----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "texts"),
    [
        ([21.5, True, 22.0, False], ["21.5", "true", "22.0", "false"]),  # Arrow: 1.0 / 0.0
        ([21, True, 22, False], ["21", "true", "22", "false"]),
        ([True, False, True, False], ["true", "false", "true", "false"]),
    ],
    ids=["floats_and_bools", "ints_and_bools", "all_bools"],
)
def test_booleans_land_as_received_and_are_rejected(
    readings_api: ReadingsApi, values: list[Any], texts: list[str]
) -> None:
    rows = [{"sensor_tag": f"s{i}", "relative_time": T0 + i, "sensor_value": value}
            for i, value in enumerate(values)]
    readings_api.fail_always(200, body=json.dumps({"data": rows}))
    config = source(readings_api.url)
    tables = fetch(config)
    assert pa.concat_tables(tables).column("sensor_value").to_pylist() == texts
    rejected = reasons(config, tables)
    for i, text in enumerate(texts):
        if text in ("true", "false"):
            assert rejected[f"s{i}"] == f"sensor_value is missing or not a number (got '{text}')"
        else:
            assert f"s{i}" not in rejected


def test_a_boolean_time_lands_as_received_and_is_rejected(readings_api: ReadingsApi) -> None:
    rows = [{"sensor_tag": "ok", "relative_time": T0 + 0.5, "sensor_value": 1},
            {"sensor_tag": "bad", "relative_time": True, "sensor_value": 2}]
    readings_api.fail_always(200, body=json.dumps({"data": rows}))
    config = source(readings_api.url)
    tables = fetch(config)
    assert pa.concat_tables(tables).column("relative_time").to_pylist() == [str(T0 + 0.5), "true"]
    assert reasons(config, tables) == {
        "bad": "relative_time is missing or could not be parsed as a time (check time_unit) "
               "(got 'true')"
    }


def test_nan_and_infinity_literals_land_as_text_and_the_rest_loads(
    readings_api: ReadingsApi,
) -> None:
    values = {"nan": float("nan"), "inf": float("inf"), "minus_inf": float("-inf"), "ok": 21.5}
    rows = [{"sensor_tag": tag, "relative_time": T0 + i, "sensor_value": value}
            for i, (tag, value) in enumerate(values.items())]
    body = json.dumps({"data": rows})  # Python writes NaN, Infinity, -Infinity bare
    huge = f'{{"sensor_tag": "huge", "relative_time": {T0 + 9}, "sensor_value": 1e309}}'
    body = body.replace("]}", f", {huge}]}}")
    assert "NaN" in body and "-Infinity" in body
    readings_api.fail_always(200, body=body)
    config = source(readings_api.url)
    tables = fetch(config)
    raw = pa.concat_tables(tables)
    assert raw.column("sensor_value").to_pylist() == [
        "NaN", "Infinity", "-Infinity", "21.5", "1e309"]
    assert reasons(config, tables) == {
        "nan": "sensor_value is missing or not a number (got 'NaN')",
        "inf": "sensor_value is NaN or infinite (got 'Infinity')",
        "minus_inf": "sensor_value is NaN or infinite (got '-Infinity')",
        "huge": "sensor_value is NaN or infinite (got '1e309')",
    }


def test_a_body_that_is_not_json_even_for_the_fallback_still_fails(
    readings_api: ReadingsApi,
) -> None:
    readings_api.fail_always(200, body="[" * 100_000)  # deeper than Python's stack, too
    with pytest.raises(PermanentSourceError, match="the answer is not JSON"):
        fetch(source(readings_api.url))


# --- bounds -----------------------------------------------------------------------------------


def drip(handler: BaseHTTPRequestHandler, byte: bytes, every: float = 0.5) -> None:
    """Send `byte` every `every` seconds until the client or the test gives up."""
    while not handler.server.stopping.wait(every):  # type: ignore[attr-defined]
        handler.wfile.write(byte)


def drip_body(handler: BaseHTTPRequestHandler) -> None:
    headers(handler, Content_Length="1000")
    drip(handler, b" ")


def drip_headers(handler: BaseHTTPRequestHandler) -> None:
    handler.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    drip(handler, b"x")


@pytest.mark.parametrize("script", [drip_body, drip_headers], ids=["body", "headers"])
def test_a_dripping_server_is_cut_at_the_request_deadline(
    scripted: Callable[[Script], str], script: Script
) -> None:
    url = scripted(script)
    message, elapsed = timed_failure(source(url, request_deadline="2s"),
                                     TransientSourceError)
    assert 2 <= elapsed < 2 + MARGIN
    assert message == (
        f"plant_a: no usable answer after 1 attempt(s); last: no complete answer within "
        f"request_deadline=2s at {url} (raise request_deadline for this source, or use "
        "a smaller page size). The source may be down or overloaded; the window can be "
        "retried later"
    )


def test_retries_stop_at_the_window_deadline(scripted: Callable[[Script], str]) -> None:
    url = scripted(drip_body)
    config = source(url, request_deadline="1s", window_deadline="1.5s",
                    retries={"attempts": 5, "backoff": "0.01s"})
    message, elapsed = timed_failure(config, TransientSourceError)
    assert 1.5 <= elapsed < 1.5 + MARGIN
    assert message == (
        "plant_a: no usable answer after 2 attempt(s) within window_deadline=1.5s; last: "
        f"window_deadline=1.5s ran out at {url}. The window can be retried later; if the source "
        "is just slow, raise window_deadline for this source, or use a shorter partition cadence"
    )


def test_the_window_deadline_spans_all_pages(readings_api_factory: Callable[..., ReadingsApi]) -> None:
    api = readings_api_factory(sample_readings(duration=timedelta(hours=3)), page_size=10)
    api.delay = 0.2  # per page; 18 pages would take several seconds
    config = RestSource.model_validate(api.source_config(window_deadline="1s"))
    pages: list[pa.Table] = []
    began = time.monotonic()
    with pytest.raises(TransientSourceError, match=r"within window_deadline=1s"):
        pages.extend(RestConnector("plant_a", config).fetch(START, END))
    elapsed = time.monotonic() - began
    assert 1 <= elapsed < 1 + MARGIN
    assert 1 <= len(pages) < 18


def test_an_endless_chunked_body_is_cut_at_the_request_deadline(
    scripted: Callable[[Script], str],
) -> None:
    url = scripted(endless_chunks(pause=0.02))
    message, elapsed = timed_failure(source(url, request_deadline="1s"),
                                     TransientSourceError)
    assert 1 <= elapsed < 1 + MARGIN
    assert "no complete answer within request_deadline=1s" in message


def test_an_endless_fast_body_is_cut_at_max_response_bytes(
    scripted: Callable[[Script], str],
) -> None:
    url = scripted(endless_chunks(pause=0))
    message, elapsed = timed_failure(source(url, max_response_bytes=1_000_000),
                                     PermanentSourceError)
    assert elapsed < 2
    assert "exceeded max_response_bytes=1000000" in message


def endless_chunks(pause: float) -> Script:
    def script(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, Transfer_Encoding="chunked")
        chunk = b"%x\r\n%s\r\n" % (8192, b" " * 8192)  # JSON whitespace, forever
        while not handler.server.stopping.wait(pause):  # type: ignore[attr-defined]
            handler.wfile.write(chunk)

    return script


def gzip_of(data: Callable[[], Iterator[bytes]]) -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return b"".join(compressor.compress(block) for block in data()) + compressor.flush()


def whitespace(megabytes: int) -> Callable[[], Iterator[bytes]]:
    return lambda: (b" " * (1 << 20) for _ in range(megabytes))


def serve_bytes(body: bytes, **extra: str) -> Script:
    def script(handler: BaseHTTPRequestHandler) -> None:
        headers(handler, Content_Length=str(len(body)), **extra)
        handler.wfile.write(body)

    return script


def test_a_gzip_bomb_is_refused_after_decompression(
    scripted: Callable[[Script], str],
) -> None:
    bomb = gzip_of(whitespace(64))  # 64 MiB of JSON whitespace in ~64 KB
    assert len(bomb) < 100_000
    url = scripted(serve_bytes(bomb, Content_Encoding="gzip"))
    message, elapsed = timed_failure(source(url, max_response_bytes=1 << 20),
                                     PermanentSourceError)
    assert elapsed < 2
    assert message == (
        f"plant_a: the answer exceeded max_response_bytes=1048576 after decompression at "
        f"{url}; raise max_response_bytes for this source or use a smaller page size"
    )


def test_a_body_compressed_twice_over_is_refused(scripted: Callable[[Script], str]) -> None:
    twice = gzip_of(lambda: iter([gzip_of(whitespace(1))]))
    url = scripted(serve_bytes(twice, Content_Encoding="gzip, gzip"))
    message, _ = timed_failure(source(url), PermanentSourceError)
    assert "compressed 2 times over (Content-Encoding: gzip, gzip)" in message


def test_a_gzip_body_within_the_cap_loads(scripted: Callable[[Script], str]) -> None:
    rows = [{"sensor_tag": "a", "relative_time": T0, "sensor_value": 1.5}]
    body = gzip_of(lambda: iter([json.dumps({"data": rows}).encode()]))
    url = scripted(serve_bytes(body, Content_Encoding="gzip"))
    tables = fetch(source(url, max_response_bytes=100))
    assert pa.concat_tables(tables).to_pylist() == [
        {"sensor_tag": "a", "relative_time": str(T0), "sensor_value": "1.5"}]


# --- Retry-After ------------------------------------------------------------------------------


def test_a_retry_after_longer_than_max_retry_after_fails_at_once(api: ReadingsApi) -> None:
    api.fail_next(1, 429, retry_after=86400)
    config = RestSource.model_validate(api.source_config())
    message, elapsed = timed_failure(config, TransientSourceError)
    assert elapsed < 1
    assert message == (
        "plant_a: the server asked to wait 86400 s (HTTP 429 Too Many Requests, Retry-After), "
        "more than retries.max_retry_after=300s; not waiting: recovery will retry the window "
        "later"
    )
    assert len(api.requests) == 1


def test_a_retry_after_longer_than_the_window_has_left_fails_at_once(api: ReadingsApi) -> None:
    api.fail_next(1, 503, retry_after=60)
    config = RestSource.model_validate(api.source_config(window_deadline="10s"))
    message, elapsed = timed_failure(config, TransientSourceError)
    assert elapsed < 1
    assert message.startswith("plant_a: the server asked to wait 60 s (HTTP 503 Service "
                              "Unavailable, Retry-After), more than the ")
    assert message.endswith(" s left of window_deadline=10s; not waiting: recovery will retry "
                            "the window later")


def test_a_short_retry_after_is_waited_in_full(api: ReadingsApi) -> None:
    api.fail_next(1, 429, retry_after=1)
    config = RestSource.model_validate(api.source_config())  # max_backoff 0.1 s
    assert len(pa.concat_tables(fetch(config))) == 180
    first, second = api.requests[:2]
    assert second.time - first.time >= 0.95


# --- config -----------------------------------------------------------------------------------


def test_bounds_have_defaults_and_validate() -> None:
    defaults = source("http://127.0.0.1/readings")
    assert defaults.request_deadline == timedelta(minutes=2)
    assert defaults.window_deadline == timedelta(minutes=30)
    assert defaults.max_response_bytes == 256 * 1024 * 1024
    assert defaults.retries.max_retry_after == timedelta(minutes=5)
    custom = source("http://127.0.0.1/readings", request_deadline="10s", window_deadline="1h",
                    max_response_bytes=1024, retries={"max_retry_after": "1min"})
    assert custom.request_deadline == timedelta(seconds=10)
    assert custom.window_deadline == timedelta(hours=1)
    assert custom.retries.max_retry_after == timedelta(minutes=1)
    for bad in ({"request_deadline": "0s"}, {"window_deadline": "soon"},
                {"max_response_bytes": 0}, {"request_deadlines": "1s"},
                {"retries": {"max_retry_afer": "1s"}}):
        with pytest.raises(ValidationError):
            source("http://127.0.0.1/readings", **bad)
