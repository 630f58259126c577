"""The `pull-pipeline` command line against real HTTP servers on loopback and the real
PostgreSQL: check, preview and init-source, run in process and as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import psycopg
import pytest
import yaml

from pull_pipeline.cli import main
from pull_pipeline.cli.appending import add_source, with_source
from pull_pipeline.cli.guess import guess_fields, guess_records_path, infer_time_unit
from pull_pipeline.cli.windows import last_complete_window
from pull_pipeline.config.loader import load_project
from pull_pipeline.config.models import PartitionsConfig, RestSource, SqlSource
from pull_pipeline.errors import ConfigError
from pull_pipeline_tests.servers import ReadingsApi, sample_readings

REPO = Path(__file__).resolve().parents[1]
KEY = "s3cr3t/Key+v&l=ue"  # every character that percent-encoding changes
WRONG_KEY = "wr0ng/K3y+v&l=ue"
NOW = datetime.now(UTC)
HOUR = NOW.replace(minute=0, second=0, microsecond=0)


# --- helpers -----------------------------------------------------------------------------------


def write_config(tmp_path: Path, pg_dsn: str, table: str, sources: dict[str, Any]) -> Path:
    path = tmp_path / "sources.yaml"
    config = {"sink": {"dsn": pg_dsn, "table": table},
              "landing": {"path": str(tmp_path / "landing")}, "sources": sources}
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def rest_source(url: str, **overrides: Any) -> dict[str, Any]:
    return {"kind": "rest", "url": url, "partitions": {"cadence": "hourly", "start": "2024-01-01"},
            "retries": {"attempts": 1}, **overrides}


def run_cli(*args: str, env: dict[str, str] | None = None, stdin: str = "",
            cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    """The command as a user runs it: the installed script when there is one."""
    script = Path(sys.executable).parent / "pull-pipeline"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "pull_pipeline.cli"]
    return subprocess.run([*command, *args], input=stdin, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=30, check=False)


def run_in_process(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def flat(text: str) -> str:
    """Output with its 80-column wrapping undone, to match whole sentences."""
    return " ".join(text.split())


def assert_no_secret(text: str, *secrets: str) -> None:
    for secret in secrets:
        for form in (secret, quote(secret, safe=""), quote_plus(secret), quote(secret)):
            assert form not in text, f"{form!r} leaked"


@pytest.fixture
def json_server() -> Iterator[Callable[[Any], str]]:
    """Serve a fixed JSON body at any path (for answers ReadingsApi does not produce)."""
    servers: list[ThreadingHTTPServer] = []

    def serve(body: Any) -> str:
        payload = json.dumps(body).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                         daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/readings"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def recent_api(readings_api_factory: Callable[..., ReadingsApi]) -> ReadingsApi:
    """Readings every minute from 3 hours before the current hour, behind an API key."""
    readings = sample_readings(start=HOUR - timedelta(hours=3), duration=timedelta(hours=4))
    return readings_api_factory(readings, auth={"type": "api_key", "query_param": "api_key",
                                                "value": KEY})


def keyed(api: ReadingsApi, variable: str = "READINGS_KEY", **overrides: Any) -> dict[str, Any]:
    auth = {"type": "api_key", "query_param": "api_key", "value": f"${{{variable}}}"}
    settings = {"auth": auth, "records_path": "data",
                "pagination": {"type": "page_number", "size": 50}}
    return rest_source(api.url, **{**settings, **overrides})


def ms_records(count: int = 30) -> list[dict[str, Any]]:
    first = int((HOUR - timedelta(hours=1)).timestamp() * 1000)
    return [{"sensor_tag": f"tag_{i % 3}", "relative_time": first + i * 60_000,
             "sensor_value": 20.5 + i} for i in range(count)]


# --- check ---------------------------------------------------------------------------------------


def test_check_passes_on_a_good_rest_source_and_the_sink(
    tmp_path: Path, pg_dsn: str, table_name: str, recent_api: ReadingsApi
) -> None:
    config = write_config(tmp_path, pg_dsn, table_name, {"plant": keyed(recent_api)})
    script = ("import sys; from pull_pipeline.cli import main; code = main(); "
              "print('dagster imported:', 'dagster' in sys.modules); sys.exit(code)")
    done = subprocess.run(
        [sys.executable, "-c", script, "check", "--config", str(config)],
        capture_output=True, text=True, env={**os.environ, "READINGS_KEY": KEY}, timeout=30,
        check=False)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    assert "FAIL" not in out
    text = flat(out)
    assert "ok plant rest" in text
    assert "auth: accepted (api_key)" in text and "first page: 50 records at 'data'" in text
    assert "rows: all 50 of the first page are valid" in text
    assert "connected: PostgreSQL" in text and f"table {table_name}: not there yet" in text
    assert "dagster imported: False" in out  # start-up stays fast
    assert all(len(line) <= 80 for line in out.splitlines())
    assert_no_secret(out + done.stderr, KEY)


def test_check_names_the_variable_of_a_refused_key_and_prints_no_secret(
    tmp_path: Path, pg_dsn: str, table_name: str, recent_api: ReadingsApi
) -> None:
    config = write_config(tmp_path, pg_dsn, table_name, {"plant": keyed(recent_api)})
    done = run_cli("check", "--config", str(config), env={"READINGS_KEY": WRONG_KEY})
    assert done.returncode == 1
    text = flat(done.stdout)
    assert "FAIL auth: refused (HTTP 401 Unauthorized)" in text
    assert ("hint: the source refused the credentials; check auth and the variable "
            "${READINGS_KEY} it uses") in text
    assert_no_secret(done.stdout + done.stderr, WRONG_KEY, KEY)


def test_check_lists_the_keys_holding_lists_for_a_wrong_records_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    pg_dsn: str, table_name: str, recent_api: ReadingsApi,
) -> None:
    monkeypatch.setenv("READINGS_KEY", KEY)
    source = keyed(recent_api, records_path="items")
    config = write_config(tmp_path, pg_dsn, table_name, {"plant": source})
    code, out = run_in_process(capsys, "check", "--config", str(config))
    assert code == 1
    text = flat(out)
    assert "FAIL first page: records_path 'items' is not a list in the answer" in text
    assert "hint: keys that hold lists: data (50 items); set records_path: 'data'" in text


def test_check_spots_milliseconds_configured_as_seconds(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_dsn: str, table_name: str,
    json_server: Callable[[Any], str],
) -> None:
    url = json_server({"data": ms_records()})
    config = write_config(tmp_path, pg_dsn, table_name, {"vendor": rest_source(url)})
    code, out = run_in_process(capsys, "check", "--config", str(config), "vendor")
    assert code == 1
    assert "hint: relative_time looks like milliseconds; set time_unit: ms" in flat(out)


def test_check_names_the_fields_of_the_first_record_when_fields_are_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_dsn: str, table_name: str,
    json_server: Callable[[Any], str],
) -> None:
    records = [{"tag": "t1", "time": "2026-01-01T00:00:00Z", "value": 1.5}]
    url = json_server({"data": records})
    config = write_config(tmp_path, pg_dsn, table_name, {"vendor": rest_source(url)})
    code, out = run_in_process(capsys, "check", "--config", str(config))
    assert code == 1
    text = flat(out)
    assert ("fields.sensor_tag 'sensor_tag', fields.relative_time 'relative_time', "
            "fields.sensor_value 'sensor_value' not in the first record") in text
    assert "the first record has fields: tag, time, value" in text
    assert "maybe fields.sensor_tag: tag, fields.relative_time: time, " in text


def test_check_probes_a_sql_source_and_its_time_unit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_dsn: str, table_name: str,
) -> None:
    history = f"{table_name}_history"
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {history} (tag text, ts timestamptz, ms bigint, val float8)")
        conn.execute(  # a row a minute from 4 hours before the current UTC hour to its end
            f"INSERT INTO {history} SELECT 'tag_' || (i % 3), t, extract(epoch FROM t) * 1000, i"
            " FROM generate_series(1, 300) AS i, LATERAL (SELECT date_trunc('hour', now()"
            " AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' + interval '1 hour' - i * interval '1 minute'"
            " AS t) AS s")
    select = f"SELECT tag AS sensor_tag, {{col}} AS relative_time, val AS sensor_value FROM {history}"
    sources = {
        "historian": {"kind": "sql", "url": pg_dsn, "time_unit": "iso8601",
                      "query": select.format(col="ts") + " WHERE ts >= :start AND ts < :end",
                      "partitions": {"cadence": "hourly", "start": "2024-01-01"}},
        "historian_ms": {"kind": "sql", "url": pg_dsn,  # time_unit s, the column counts ms
                         "query": select.format(col="ms") + " WHERE ms >= :start AND ms < :end",
                         "partitions": {"cadence": "hourly", "start": "2024-01-01"}},
    }
    config = write_config(tmp_path, pg_dsn, table_name, sources)
    try:
        code, out = run_in_process(capsys, "check", "--config", str(config))
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {history}")
    text = flat(out)
    assert code == 1
    assert "ok historian sql postgresql" in text
    assert "rows: all 60 of the first page are valid" in text
    assert "FAIL historian_ms" in text
    assert "hint: relative_time looks like milliseconds; set time_unit: ms" in text


# --- preview -------------------------------------------------------------------------------------


def test_preview_shows_rows_rejects_and_totals_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_dsn: str, table_name: str,
    readings_api_factory: Callable[..., ReadingsApi],
) -> None:
    readings = sample_readings()  # 180 rows in 2024-01-01T00:00Z..01:00Z
    readings += [readings[5],  # a duplicate (sensor_tag, ts)
                 {"sensor_tag": "bad_1", "relative_time": "n/a", "sensor_value": 1},
                 {"sensor_tag": "bad_2", "relative_time": 1704067200, "sensor_value": "x"}]
    api = readings_api_factory(readings)
    source = rest_source(api.url, records_path="data",
                         pagination={"type": "page_number", "size": 50})
    config = write_config(tmp_path, pg_dsn, table_name, {"plant": source})
    code, out = run_in_process(capsys, "preview", "--config", str(config), "plant",
                               "--window", "2024-01-01-00:00", "--rows", "3", "--progress")
    assert code == 0, out
    text = flat(out)
    assert "plant: window 2024-01-01-00:00 = [2024-01-01T00:00:00Z, 2024-01-01T01:00:00Z)" in text
    assert "first 3 of 181 valid rows" in text
    assert "temperature_sensor_01 2024-01-01T00:00:00Z 20.0" in text
    assert "first 2 of 2 rejects" in text
    assert "could not be parsed as a time (check time_unit) (got 'n/a')" in text
    assert "sensor_value is missing or not a number (got 'x')" in text
    for total in ("fetched 183 rows in 4 pages/chunks", "valid 181", "rejected 2 (1.1%",
                  "deduplicated 1", "sensors 3", "ts 2024-01-01T00:00:00Z .. 2024-01-01T00:59:00Z"):
        assert total in text
    assert "plant: page 1: 50 rows" in text  # --progress, on stderr
    assert not (tmp_path / "landing").exists()
    with psycopg.connect(pg_dsn) as conn:
        found = conn.execute("SELECT to_regclass(%s), to_regclass(%s)",
                             (table_name, f"{table_name}_rejects")).fetchone()
    assert found == (None, None)


def test_preview_refuses_a_key_that_is_not_a_window(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, pg_dsn: str, table_name: str,
) -> None:
    config = write_config(tmp_path, pg_dsn, table_name,
                          {"plant": rest_source("http://127.0.0.1:9/readings")})
    for key in ("2024-01-01", "2023-12-31-23:00", "2024-01-01-00:30"):
        code, out = run_in_process(capsys, "preview", "--config", str(config), "plant",
                                   "--window", key)
        assert code == 1
        assert f"error: '{key}' is not a window of plant: its windows run from 2024-01-01-00:00" \
            in flat(out)


# --- init-source ---------------------------------------------------------------------------------

EXISTING = """\
# Our sources. This comment must survive.
sink:
  table: readings   # and this one

sources:
  old:
    kind: python
    function: my_package.module:fetch   # kept
    partitions: {cadence: daily, start: "2024-01-01"}

# alerts belong to the team
alerts:
  throttle: 1h
"""


def test_init_source_reads_answers_from_stdin_and_appends_a_block_that_loads(
    tmp_path: Path, readings_api_factory: Callable[..., ReadingsApi],
) -> None:
    token = "t0k/en+v&l=ue"
    records = [{"name": f"tag_{i % 3}", "t": r["relative_time"], "v": r["sensor_value"]}
               for i, r in enumerate(ms_records(60))]
    api = readings_api_factory(records, auth={"type": "bearer", "token": token},
                               records_path="result.items", pagination={"type": "none"})
    config = tmp_path / "sources.yaml"
    config.write_text(EXISTING)
    answers = ["vendor", "bearer", "VENDOR_TOKEN", token] + [""] * 8  # then accept every guess
    done = run_cli("init-source", "--config", str(config), "--kind", "rest", "--url", api.url,
                   stdin="\n".join(answers) + "\n")
    assert done.returncode == 0, done.stdout + done.stderr
    text = config.read_text()
    assert text.startswith(EXISTING.split("# alerts")[0])  # everything before it, unchanged
    assert text.endswith("# alerts belong to the team\nalerts:\n  throttle: 1h\n")
    source = load_project(config).config.sources["vendor"]
    assert isinstance(source, RestSource)
    assert source.records_path == "result.items"
    assert source.fields.model_dump() == {"sensor_tag": "name", "relative_time": "t",
                                          "sensor_value": "v"}
    assert source.time_unit == "ms"
    assert source.auth is not None
    assert source.auth.model_dump() == {"type": "bearer", "token": "${VENDOR_TOKEN}"}
    assert_no_secret(text + done.stdout + done.stderr, token)
    assert api.requests[0].headers["authorization"] == f"Bearer {token}"  # sampled with it
    out = flat(done.stdout)
    assert "export VENDOR_TOKEN=..." in out and "pull-pipeline check vendor" in out
    assert "pull-pipeline preview vendor --window " in out


def test_init_source_sql_with_flags_guesses_the_unit_and_moves_the_password_out(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    pg_dsn: str, table_name: str,
) -> None:
    monkeypatch.delenv("PLANT_DB_PASSWORD", raising=False)
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table_name} (tag text, epoch_ms bigint, reading float8)")
        conn.execute(f"INSERT INTO {table_name} SELECT 'p_' || (i % 2),"
                     " (extract(epoch FROM now()) * 1000)::bigint - i * 60000, i * 0.5"
                     " FROM generate_series(1, 50) AS i")
    host = pg_dsn.split("@", 1)[1]
    url = f"postgresql://postgres:pa55-w0rd@{host}"  # the test server trusts loopback
    config = tmp_path / "sources.yaml"
    try:
        code, out = run_in_process(
            capsys, "init-source", "--config", str(config), "--name", "plant", "--kind", "sql",
            "--url", url, "--query", f"SELECT * FROM {table_name} WHERE epoch_ms >= :start AND "
            "epoch_ms < :end", "--cadence", "daily", "--yes")
    finally:
        with psycopg.connect(pg_dsn, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table_name}")
    assert code == 0, out
    source = load_project(config).config.sources["plant"]
    assert isinstance(source, SqlSource)
    assert source.fields.model_dump() == {"sensor_tag": "tag", "relative_time": "epoch_ms",
                                          "sensor_value": "reading"}
    assert source.time_unit == "ms"
    assert source.password == "${PLANT_DB_PASSWORD}"
    assert "pa55-w0rd" not in config.read_text()
    assert_no_secret(out, "pa55-w0rd")


def test_init_source_refuses_an_existing_name_and_leaves_the_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text(EXISTING)
    code, out = run_in_process(capsys, "init-source", "--config", str(config), "--name", "old",
                               "--yes")
    assert code == 1
    assert "already has a source named 'old'" in out
    assert config.read_text() == EXISTING


# --- the pieces ----------------------------------------------------------------------------------


def test_add_source_appends_under_sources_and_refuses_what_would_not_load(tmp_path: Path) -> None:
    block = {"kind": "python", "function": "pkg.mod:fetch",
             "partitions": {"cadence": "hourly", "start": "2024-01-01"}}
    assert with_source("sources:\n    a: {kind: python}\n", "b", block).startswith(
        "sources:\n    a: {kind: python}\n\n    b:\n      kind: python\n")
    config = tmp_path / "sources.yaml"
    config.write_text(EXISTING)
    add_source(config, "new", block)
    assert set(load_project(config).config.sources) == {"old", "new"}
    before = config.read_text()
    with pytest.raises(ConfigError):
        add_source(config, "broken", {**block, "tyop": 1})
    assert config.read_text() == before
    assert [p.name for p in tmp_path.iterdir()] == ["sources.yaml"]  # no temporary file left


@pytest.mark.parametrize(("values", "unit"), [
    ([1_764_000_000, 1_764_000_060], "s"),
    ([1_764_000_000_000], "ms"),
    (["1764000000000000"], "us"),
    ([1.764e18], "ns"),
    (["2025-11-24T16:00:00Z", "2025-11-24 16:01:00+00"], "iso8601"),
    ([20.5, 21.0], None),
    (["temperature"], None),
])
def test_time_unit_is_inferred_from_magnitudes(values: list[Any], unit: str | None) -> None:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    assert infer_time_unit(values, epoch, datetime(2025, 11, 24, tzinfo=UTC)) == unit


def test_records_path_and_fields_are_guessed() -> None:
    body: dict[str, Any] = {"meta": {"warnings": []}, "result": {"items": [
        {"point": "p1", "timestamp": "2025-11-24T16:00:00Z", "reading": 1.5, "quality": "good"},
    ]}}
    assert guess_records_path(body) == "result.items"
    assert guess_records_path([{"a": 1}]) == ""
    guess = guess_fields(body["result"]["items"], datetime(1970, 1, 1, tzinfo=UTC), NOW)
    assert (guess.sensor_tag, guess.relative_time, guess.sensor_value) == (
        "point", "timestamp", "reading")


@pytest.mark.parametrize("timezone", ["UTC", "Europe/Berlin"])
@pytest.mark.parametrize("cadence", ["5min", "15min", "hourly", "daily", "weekly", "monthly"])
def test_recent_windows_are_dagsters_windows(cadence: str, timezone: str) -> None:
    from pull_pipeline.defs.partitions import build_partitions

    config = PartitionsConfig(cadence=cadence, start="2020-01-01", timezone=timezone)
    partitions = build_partitions(config, "x")
    now = datetime(2024, 3, 30, 22, 7, tzinfo=UTC)  # across the spring DST change in Berlin
    while now < datetime(2024, 4, 2, tzinfo=UTC):
        window = last_complete_window(config, now)
        assert window.key is not None
        span = partitions.time_window_for_partition_key(window.key)
        assert (span.start, span.end) == (window.start, window.end)
        following = partitions.get_next_partition_key(window.key)
        assert following is not None
        assert window.end <= now < partitions.time_window_for_partition_key(following).end
        now += timedelta(minutes=37)
