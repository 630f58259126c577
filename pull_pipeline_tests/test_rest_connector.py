"""The REST connector against real HTTP(S) servers on loopback (see `servers.py`).

Every auth type and every paginator is exercised end to end; failures are injected at the
server, and timings are read from the server's own request log.
"""

from __future__ import annotations

import logging
import ssl
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
import trustme

from pull_pipeline.config.models import RestSource
from pull_pipeline.connectors.rest import RestConnector
from pull_pipeline.connectors.rest.client import retry_after
from pull_pipeline.connectors.rest.ratelimit import rate_for
from pull_pipeline.errors import ConfigError, PermanentSourceError, TransientSourceError
from pull_pipeline_tests.servers import WINDOW_START, ReadingsApi, free_port, sample_readings

START = WINDOW_START + timedelta(hours=1)  # the middle hour of three: rows on both sides
END = START + timedelta(hours=1)

AUTHS: dict[str, dict[str, Any]] = {
    "api_key_header": {"type": "api_key", "header": "X-API-Key", "value": "k3y-in-header-5ecret"},
    "api_key_query": {"type": "api_key", "query_param": "api_key", "value": "k3y-in-query-5ecret"},
    "bearer": {"type": "bearer", "token": "t0ken-bearer-5ecret"},
    "basic": {"type": "basic", "username": "reader", "password": "pa55word-basic-5ecret"},
}
SECRET_KEYS = ("value", "token", "password")

# name -> (pagination block, requests for the 180 rows of START..END at 40 rows a page)
PAGINATIONS: dict[str, tuple[dict[str, Any], int]] = {
    "page_number": (
        {"type": "page_number", "param": "page", "size_param": "page_size", "size": 40},
        5,
    ),
    "page_number_from_0": ({"type": "page_number", "size": 40, "first_page": 0}, 5),
    "offset": ({"type": "offset", "param": "offset", "size_param": "limit", "size": 40}, 5),
    "cursor": ({"type": "cursor", "param": "cursor", "cursor_path": "meta.next_cursor"}, 5),
    "next_link_body": ({"type": "next_link", "link_path": "links.next"}, 5),
    "next_link_header": ({"type": "next_link"}, 5),
    "none": ({"type": "none"}, 1),
}


@pytest.fixture
def api(readings_api_factory: Callable[..., ReadingsApi]) -> ReadingsApi:
    """Three hours of readings (540 rows), 40 rows a page: START..END spans 5 pages."""
    return readings_api_factory(sample_readings(duration=timedelta(hours=3)), page_size=40)


def connect(api: ReadingsApi, name: str = "plant_a", **overrides: Any) -> RestConnector:
    return RestConnector(name, RestSource.model_validate(api.source_config(**overrides)))


def rows(tables: list[pa.Table]) -> list[tuple[str, int, float]]:
    return [
        (row["sensor_tag"], int(row["relative_time"]), float(row["sensor_value"]))
        for table in tables
        for row in table.to_pylist()
    ]


def expected(api: ReadingsApi, start: datetime = START, end: datetime = END) -> list[tuple]:
    low, high = start.timestamp(), end.timestamp()
    return [
        (r["sensor_tag"], r["relative_time"], r["sensor_value"])
        for r in api.readings
        if low <= r["relative_time"] < high
    ]


def fetch(connector: RestConnector, start: datetime = START, end: datetime = END) -> list:
    with connector:
        return list(connector.fetch(start, end))


def wrong(auth: dict[str, Any]) -> dict[str, Any]:
    return {k: f"wrong-{v}" if k in SECRET_KEYS else v for k, v in auth.items()}


def secret_of(auth: dict[str, Any]) -> str:
    secret: str = next(auth[k] for k in SECRET_KEYS if k in auth)
    return secret


# --- auth ------------------------------------------------------------------------------------


@pytest.mark.parametrize("auth", AUTHS.values(), ids=AUTHS.keys())
def test_correct_credentials_load_the_window(api: ReadingsApi, auth: dict[str, Any]) -> None:
    api.auth = auth
    assert rows(fetch(connect(api))) == expected(api)
    assert [r.status for r in api.requests] == [200] * 5


@pytest.mark.parametrize("auth", AUTHS.values(), ids=AUTHS.keys())
def test_wrong_credentials_fail_at_once(api: ReadingsApi, auth: dict[str, Any]) -> None:
    api.auth = auth
    with pytest.raises(PermanentSourceError) as caught:
        fetch(connect(api, auth=wrong(auth)))
    assert len(api.requests) == 1
    message = str(caught.value)
    assert message.startswith("plant_a: the source refused the credentials (HTTP 401")
    assert "check the auth block" in message


def test_missing_auth_block_says_to_add_one(api: ReadingsApi) -> None:
    api.auth = AUTHS["bearer"]
    config = api.source_config()
    del config["auth"]
    with pytest.raises(PermanentSourceError, match="no auth block; add one"):
        fetch(RestConnector("plant_a", RestSource.model_validate(config)))


# --- pagination ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pagination", "requests"), PAGINATIONS.values(), ids=PAGINATIONS.keys()
)
def test_every_paginator_returns_each_row_once(
    api: ReadingsApi, pagination: dict[str, Any], requests: int
) -> None:
    api.pagination = pagination
    if pagination["type"] == "cursor":
        api.records_path = "data"
    tables = fetch(connect(api))
    assert rows(tables) == expected(api)
    assert len(api.requests) == requests
    assert all(table.num_rows > 0 for table in tables)  # empty pages are not yielded
    assert len({r.client_port for r in api.requests}) == 1  # one keep-alive connection


def test_page_number_without_size_param_stops_on_an_empty_page(api: ReadingsApi) -> None:
    api.pagination = {"type": "page_number", "size_param": None}
    api.page_size = 50  # the server's own page size, unknown to the connector
    assert rows(fetch(connect(api))) == expected(api)
    assert [r.params["page"] for r in api.requests] == ["1", "2", "3", "4", "5"]
    assert all("page_size" not in r.params for r in api.requests)


def test_absolute_next_links_on_the_same_host_are_followed(api: ReadingsApi) -> None:
    api.pagination = {"type": "next_link", "link_path": "links.next"}
    api.link_origin = api.origin
    assert rows(fetch(connect(api))) == expected(api)


def test_next_link_to_another_host_is_refused(api: ReadingsApi) -> None:
    api.pagination = {"type": "next_link"}
    api.link_origin = api.origin.replace("127.0.0.1", "localhost")
    with pytest.raises(PermanentSourceError, match="points to another host"):
        fetch(connect(api))
    assert len(api.requests) == 1


@pytest.mark.parametrize(
    ("pagination", "message"),
    [
        ({"type": "cursor"}, r"pagination loop: cursor '.+' repeated"),
        ({"type": "next_link", "link_path": "next"}, r"loop: next link /readings\?… repeated"),
        ({"type": "next_link"}, r"pagination loop: next link"),
        ({"type": "page_number", "size": 40}, r"pagination loop: .*ignore the 'page' parameter"),
        ({"type": "offset", "size": 40}, r"pagination loop: .*ignore the 'offset' parameter"),
    ],
    ids=["cursor", "next_link_body", "next_link_header", "page_number", "offset"],
)
def test_endless_pagination_is_stopped(
    api: ReadingsApi, pagination: dict[str, Any], message: str
) -> None:
    api.pagination = pagination
    api.stuck_pagination = True
    with pytest.raises(PermanentSourceError, match=message) as caught:
        fetch(connect(api))
    assert str(caught.value).startswith("plant_a: ")
    assert len(api.requests) == 2


def test_max_pages_stops_a_long_window_and_says_how_to_raise_it(api: ReadingsApi) -> None:
    with pytest.raises(PermanentSourceError, match=r"more than max_pages=3 pages.*raise max_pages"):
        fetch(connect(api, max_pages=3))
    assert len(api.requests) == 3


# --- window, params, body --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("window_format", "start_text", "end_text"),
    [
        ("epoch_s", "1704070800", "1704074400"),
        ("epoch_ms", "1704070800000", "1704074400000"),
        ("iso8601", "2024-01-01T01:00:00Z", "2024-01-01T02:00:00Z"),
    ],
)
def test_window_formats(
    api: ReadingsApi, window_format: str, start_text: str, end_text: str
) -> None:
    api.window_format = window_format
    api.window_params = ("from", "to")
    assert rows(fetch(connect(api))) == expected(api)
    assert {(r.params["from"], r.params["to"]) for r in api.requests} == {(start_text, end_text)}


def test_static_params_and_headers_are_sent_on_every_page(api: ReadingsApi) -> None:
    fetch(connect(api, params={"site": "north", "raw": True}, headers={"X-Tenant": "acme"}))
    assert len(api.requests) == 5
    assert all(r.params["site"] == "north" and r.params["raw"] == "true" for r in api.requests)
    assert all(r.headers["x-tenant"] == "acme" for r in api.requests)


def test_requests_go_through_the_proxy(api: ReadingsApi) -> None:
    # The test server answers proxy-style requests itself; the host below does not resolve,
    # so rows coming back prove that the proxy carried them.
    tables = fetch(connect(api, url="http://readings.invalid/readings", proxy=api.origin))
    assert rows(tables) == expected(api)


def test_post_sends_the_parameters_as_a_json_body(api: ReadingsApi) -> None:
    assert rows(fetch(connect(api, method="POST"))) == expected(api)
    assert {r.method for r in api.requests} == {"POST"}
    assert api.requests[1].params["page"] == "2"


@pytest.mark.parametrize(
    ("server_path", "records_path"),
    [("data", "data"), ("result.items", "result.items"), ("", ""), ("data", None), ("", None)],
    ids=["data", "nested", "top_level", "detect_object", "detect_list"],
)
def test_records_path(api: ReadingsApi, server_path: str, records_path: str | None) -> None:
    api.records_path = server_path
    assert rows(fetch(connect(api, records_path=records_path))) == expected(api)


def test_records_path_not_in_the_answer_names_the_keys_found(api: ReadingsApi) -> None:
    with pytest.raises(PermanentSourceError, match=r"records_path 'items' is not in .*'data'"):
        fetch(connect(api, records_path="items"))


def test_ambiguous_answer_asks_for_records_path(api: ReadingsApi) -> None:
    api.fail_always(200, body='{"readings": [], "errors": [], "count": 0}')
    with pytest.raises(PermanentSourceError) as caught:
        fetch(connect(api, records_path=None))
    message = str(caught.value)
    assert "'readings', 'errors', 'count'" in message
    assert "set records_path" in message


def test_records_path_that_is_not_a_list(api: ReadingsApi) -> None:
    api.fail_always(200, body='{"data": {"sensor_tag": "x"}}')
    with pytest.raises(PermanentSourceError, match="holds an object, not a list"):
        fetch(connect(api))


def test_non_json_answer_is_a_clear_error(api: ReadingsApi) -> None:
    page = "<html><head><title>Sign in</title></head><body>" + "x" * 300 + "TAILMARK</body>"
    api.fail_always(200, body=page, content_type="text/html; charset=utf-8")
    with pytest.raises(PermanentSourceError) as caught:
        fetch(connect(api))
    message = str(caught.value)
    assert message.startswith("plant_a: the answer is not JSON (content-type text/html")
    assert "<html><head><title>Sign in" in message
    assert "TAILMARK" not in message
    assert len(api.requests) == 1


def test_empty_window_yields_nothing(api: ReadingsApi) -> None:
    assert fetch(connect(api), START - timedelta(days=30), END - timedelta(days=30)) == []
    assert len(api.requests) == 1


def test_late_rows_are_picked_up_by_the_next_fetch(api: ReadingsApi) -> None:
    connector = connect(api)
    assert len(rows(list(connector.fetch(START, END)))) == 180
    moment = int(START.timestamp()) + 7
    api.readings.append({"sensor_tag": "late", "relative_time": moment, "sensor_value": 1.5})
    assert ("late", moment, 1.5) in rows(fetch(connector))


def test_naive_window_bounds_are_refused(api: ReadingsApi) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        fetch(connect(api), START.replace(tzinfo=None), END.replace(tzinfo=None))


# --- status codes and retries ----------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(api: ReadingsApi, status: int) -> None:
    api.fail_next(1, status)
    assert rows(fetch(connect(api))) == expected(api)
    assert [r.status for r in api.requests] == [status] + [200] * 5


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (400, r"rejected the request \(HTTP 400 Bad Request\): '\{\"error\": \"injected fail"),
        (401, r"refused the credentials \(HTTP 401 Unauthorized\)"),
        (403, r"refused the credentials \(HTTP 403 Forbidden\)"),
        (404, r"not found \(HTTP 404 Not Found\) at http://127\.0\.0\.1:\d+/readings; check url$"),
        (405, r"HTTP 405 Method Not Allowed"),
        (422, r"HTTP 422 Unprocessable"),
        (301, r"redirects \(HTTP 301 Moved Permanently\)"),
    ],
)
def test_client_errors_fail_at_once(api: ReadingsApi, status: int, message: str) -> None:
    api.fail_next(1, status)
    with pytest.raises(PermanentSourceError, match=message):
        fetch(connect(api))
    assert len(api.requests) == 1


def test_unknown_path_is_not_found_without_the_query_string(api: ReadingsApi) -> None:
    with pytest.raises(PermanentSourceError) as caught:
        fetch(connect(api, url=api.origin + "/v2/readings"))
    message = str(caught.value)
    assert "not found" in message and "/v2/readings; check url" in message
    assert "?" not in message and "start=" not in message


def test_two_failures_then_success_loads_and_logs_each_retry(
    api: ReadingsApi, caplog: pytest.LogCaptureFixture
) -> None:
    api.pagination = {"type": "none"}
    api.fail_next(2, 500)
    with caplog.at_level(logging.WARNING, logger="pull_pipeline.rest"):
        assert rows(fetch(connect(api))) == expected(api)
    assert [r.status for r in api.requests] == [500, 500, 200]
    retries = [r.getMessage() for r in caplog.records if r.name == "pull_pipeline.rest"]
    assert len(retries) == 2
    assert all("plant_a: attempt" in m and "HTTP 500" in m for m in retries)


def test_retries_exhausted_raise_transient_naming_attempts_and_status(api: ReadingsApi) -> None:
    api.fail_always(503)
    with pytest.raises(TransientSourceError) as caught:
        fetch(connect(api))
    message = str(caught.value)
    assert message.startswith("plant_a: no usable answer after 3 attempt(s)")
    assert "HTTP 503 Service Unavailable" in message
    assert len(api.requests) == 3


def test_retry_after_is_honoured(api: ReadingsApi) -> None:
    api.pagination = {"type": "none"}
    api.fail_next(1, 429, retry_after=1)
    retries = {"attempts": 3, "backoff": "0.01s", "max_backoff": "5s"}
    assert rows(fetch(connect(api, retries=retries))) == expected(api)
    first, second = api.requests
    assert second.time - first.time >= 0.95


def test_retry_after_is_not_cut_to_max_backoff(api: ReadingsApi) -> None:
    """max_backoff caps the backoff only (a too long Retry-After: test_rest_hostile.py)."""
    api.pagination = {"type": "none"}
    api.fail_next(1, 503, retry_after=1)
    fetch(connect(api))  # max_backoff is 0.1 s in source_config()
    first, second = api.requests
    assert second.time - first.time >= 0.95


def test_retry_after_as_an_http_date() -> None:
    later = datetime.now(UTC) + timedelta(seconds=30)
    header = later.strftime("%a, %d %b %Y %H:%M:%S GMT")
    seconds = retry_after(httpx.Response(503, headers={"Retry-After": header}))
    assert seconds is not None and 27 <= seconds <= 30
    assert retry_after(httpx.Response(503, headers={"Retry-After": "7"})) == 7
    assert retry_after(httpx.Response(503, headers={"Retry-After": "soon"})) is None


def test_connection_refused_is_transient_after_the_attempts() -> None:
    source = RestSource.model_validate(
        {
            "kind": "rest",
            "url": f"http://127.0.0.1:{free_port()}/readings",
            "partitions": {"start": "2024-01-01"},
            "retries": {"attempts": 3, "backoff": "0.01s", "max_backoff": "0.05s"},
        }
    )
    began = time.monotonic()
    with pytest.raises(TransientSourceError) as caught:
        fetch(RestConnector("plant_a", source))
    assert time.monotonic() - began < 2
    message = str(caught.value)
    assert "after 3 attempt(s)" in message and "ConnectError" in message


def test_timeouts_are_retried_then_transient(api: ReadingsApi) -> None:
    api.pagination = {"type": "none"}
    api.delay = 0.5
    with pytest.raises(TransientSourceError, match=r"2 attempt\(s\); last: timed out after 0.2 s"):
        fetch(connect(api, timeout="0.2s", retries={"attempts": 2, "backoff": "0.01s"}))
    assert len(api.requests) == 2


# --- secrets ---------------------------------------------------------------------------------


def _provoke(api: ReadingsApi, auth: dict[str, Any], path: str) -> Exception:
    """Make the connector fail along `path` while holding the credentials in `auth`."""
    api.auth = auth
    overrides: dict[str, Any] = {}
    if path == "refused":
        api.auth = wrong(auth)
    elif path == "server_error":
        api.fail_always(500)
    elif path == "echoed_in_body":
        api.fail_always(400, body=f"bad credentials: {secret_of(auth)}")
    elif path == "unreachable":
        overrides["url"] = f"http://127.0.0.1:{free_port()}/readings"
    with pytest.raises((PermanentSourceError, TransientSourceError)) as caught:
        fetch(connect(api, auth=auth, **overrides))
    return caught.value


@pytest.mark.parametrize("path", ["refused", "server_error", "echoed_in_body", "unreachable"])
@pytest.mark.parametrize("auth", AUTHS.values(), ids=AUTHS.keys())
def test_no_secret_in_errors_or_logs(
    api: ReadingsApi, auth: dict[str, Any], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    error = _provoke(api, auth, path)
    secret = secret_of(auth)
    shown = [str(error), "".join(traceback.format_exception(error)), caplog.text]
    shown += [record.getMessage() for record in caplog.records]
    assert all(secret not in text for text in shown)
    assert error.__cause__ is None and error.__context__ is None  # no httpx exception attached
    if path == "server_error":
        assert any(r.name == "pull_pipeline.rest" for r in caplog.records)  # retries were logged
    if path == "echoed_in_body":
        assert "bad credentials: ***" in str(error)  # masked, not dropped


# --- rate limit ------------------------------------------------------------------------------


def test_rate_limit_holds_across_pages_and_connectors(readings_api: ReadingsApi) -> None:
    readings_api.pagination = {"type": "page_number", "size": 30}  # 6 full pages + 1 empty
    name = "rate_limited_source"  # limiters are per source name and process-wide
    hour = (WINDOW_START, WINDOW_START + timedelta(hours=1))
    fetch(connect(readings_api, name, max_requests_per_second=5), *hour)
    first_run = [r.time for r in readings_api.requests]
    half_hour = (WINDOW_START, WINDOW_START + timedelta(minutes=30))  # 3 full pages + 1 empty
    fetch(connect(readings_api, name, max_requests_per_second=5), *half_hour)
    times = [r.time for r in readings_api.requests]
    assert len(first_run) == 7 and len(times) == 11
    assert first_run[-1] - first_run[0] >= 0.95  # across pages of one connector
    assert 1.9 <= times[-1] - times[0] < 3.5  # 11 requests at 5/s, shared by both connectors


@pytest.mark.parametrize(
    ("per_second", "limit", "interval_ms"), [(10, 10, 1000), (0.5, 1, 2000), (2.5, 1, 400)]
)
def test_fractional_rates(per_second: float, limit: int, interval_ms: int) -> None:
    rate = rate_for(per_second)
    assert (rate.limit, rate.interval) == (limit, interval_ms)


# --- TLS -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def _tls_server(
    factory: Callable[..., ReadingsApi], ca: trustme.CA, client_certs: bool = False
) -> ReadingsApi:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    if client_certs:
        context.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(context)
    return factory(pagination={"type": "none"}, ssl_context=context)


def test_tls_with_a_custom_ca(
    readings_api_factory: Callable[..., ReadingsApi], ca: trustme.CA, ca_file: str
) -> None:
    api = _tls_server(readings_api_factory, ca)
    assert api.url.startswith("https://")
    start, end = WINDOW_START, WINDOW_START + timedelta(hours=1)
    loaded = fetch(connect(api, tls={"ca_bundle": ca_file}), start, end)
    assert rows(loaded) == expected(api, start, end)


def test_tls_default_verification_refuses_an_unknown_ca(
    readings_api_factory: Callable[..., ReadingsApi], ca: trustme.CA
) -> None:
    api = _tls_server(readings_api_factory, ca)
    with pytest.raises(PermanentSourceError) as caught:
        fetch(connect(api))
    message = str(caught.value)
    assert message.startswith("plant_a: TLS certificate verification failed for https://127.0.0.1:")
    assert "set tls.ca_bundle" in message
    assert api.requests == []


def test_tls_verify_false_accepts_any_certificate(
    readings_api_factory: Callable[..., ReadingsApi], ca: trustme.CA
) -> None:
    api = _tls_server(readings_api_factory, ca)
    assert len(fetch(connect(api, tls={"verify": False}), WINDOW_START, START)) == 1


def test_tls_client_certificate(
    readings_api_factory: Callable[..., ReadingsApi], ca: trustme.CA, ca_file: str, tmp_path: Path
) -> None:
    api = _tls_server(readings_api_factory, ca, client_certs=True)
    client = ca.issue_cert("pull-pipeline@example.com")
    cert, key = tmp_path / "client.pem", tmp_path / "client.key"
    client.cert_chain_pems[0].write_to_path(str(cert))
    client.private_key_pem.write_to_path(str(key))
    tls = {"ca_bundle": ca_file, "client_cert": str(cert), "client_key": str(key)}
    assert len(fetch(connect(api, tls=tls), WINDOW_START, START)) == 1
    with pytest.raises(PermanentSourceError, match="TLS handshake .* failed .*tls.client_cert"):
        fetch(connect(api, tls={"ca_bundle": ca_file}), WINDOW_START, START)


def test_missing_ca_bundle_is_a_config_error(api: ReadingsApi, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.pem"
    with pytest.raises(ConfigError, match=f"plant_a: cannot load the files in tls.*{missing}"):
        connect(api, tls={"ca_bundle": str(missing)})


# --- probe -----------------------------------------------------------------------------------


def test_probe_asks_once_for_the_last_second(api: ReadingsApi) -> None:
    with connect(api) as connector:
        connector.probe()
    (request,) = api.requests
    start, end = int(request.params["start"]), int(request.params["end"])
    assert end - start == 1 and abs(end - time.time()) < 5


def test_probe_during_an_outage_and_after_it(api: ReadingsApi) -> None:
    with connect(api) as connector:
        api.down = True
        with pytest.raises(TransientSourceError, match="after 1 attempt"):
            connector.probe()
        assert len(api.requests) == 1  # no retries: probing must stay cheap
        api.down = False
        connector.probe()
    assert [r.status for r in api.requests] == [503, 200]


def test_probe_with_refused_credentials_is_permanent(api: ReadingsApi) -> None:
    api.auth = AUTHS["bearer"]
    with pytest.raises(PermanentSourceError, match="refused the credentials"):
        connect(api, auth=wrong(AUTHS["bearer"])).probe()


def test_probe_of_an_unreachable_source_is_transient(api: ReadingsApi) -> None:
    connector = connect(api, url=f"http://127.0.0.1:{free_port()}/readings")
    with pytest.raises(TransientSourceError, match="could not reach"):
        connector.probe()
