"""sources.yaml: every documented key parses; errors name the file, source, key and fix."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from pull_pipeline.config import load_project, parse_config, resolve_env
from pull_pipeline.config.models import RestSource
from pull_pipeline.errors import ConfigError
from pull_pipeline.redaction import redact

CONTRACT = """
sink:
  dsn: ${SINK_DSN}
  table: metrics.sensor_readings
  chunk_interval: 1 day
  compress_after: 7 days
  retention: 365 days
landing:
  path: .pull_pipeline/landing
alerts:
  webui_url: http://localhost:3000
  throttle: 30min
  webhooks:
    - url: ${ALERT_WEBHOOK_URL}
  email:
    smtp_host: smtp.example.com
    smtp_port: 587
    starttls: true
    username: ${SMTP_USER}
    password: ${SMTP_PASSWORD}
    sender: pull-pipeline@example.com
    to: [oncall@example.com]
sources:
  plant_a:
    kind: rest
    url: http://127.0.0.1:8080/readings
    auth: {type: api_key, header: X-API-Key, value: ${PLANT_A_KEY}}
    window_params: {start: start, end: end}
    window_format: epoch_s
    pagination: {type: page_number, param: page, size_param: page_size, size: 10000}
    records_path: data
    fields: {sensor_tag: sensor_tag, relative_time: relative_time, sensor_value: sensor_value}
    time_unit: s
    reference_epoch: "1970-01-01T00:00:00Z"
    max_requests_per_second: 10
    partitions: {cadence: hourly, start: "2024-01-01T00:00:00Z", lag: 5min}
    max_reject_ratio: 0.05
    paused: false
    lookback: 2
    expected_interval: 10s
    gaps_blocking: false
    freshness: {warn_after: 1h, fail_after: 2h}
    recovery: {horizon: 7 days, max_windows_per_tick: 24}
    concurrency: 1
  plant_b:
    kind: sql
    url: postgresql+psycopg://reader:${PLANT_B_PASSWORD}@db.example:5432/historian
    query: >
      SELECT tag AS sensor_tag, recorded_at AS relative_time, value AS sensor_value
      FROM readings WHERE recorded_at >= :start AND recorded_at < :end
    time_unit: iso8601
    partitions: {cadence: daily, start: 2024-01-01}
  plant_c:
    kind: files
    path: s3://bucket/prefix
    format: csv
    pattern: "readings_{%Y%m%d%H}.csv"
    s3: {endpoint_url: http://127.0.0.1:9000, region_name: us-east-1,
         aws_access_key_id: ${S3_KEY}, aws_secret_access_key: ${S3_SECRET}}
    fields: {sensor_tag: tag, relative_time: time, sensor_value: value}
    partitions: {cadence: hourly, start: "2024-01-01T00:00:00Z"}
  plant_d:
    kind: python
    function: my_package.module:fetch
    options: {site: north}
    partitions: {cadence: daily, start: "2024-01-01"}
archive:
  path: s3://bucket/archive
  s3: {endpoint_url: http://127.0.0.1:9000, region_name: us-east-1}
  export_after: 90 days
  drop_after_export: false
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(text)
    return path


def test_every_contract_key_parses(tmp_path: Path) -> None:
    project = load_project(write(tmp_path, CONTRACT))
    config = project.config
    assert set(config.sources) == {"plant_a", "plant_b", "plant_c", "plant_d"}
    plant_a = config.sources["plant_a"]
    assert isinstance(plant_a, RestSource)
    assert plant_a.partitions.lag == timedelta(minutes=5)
    assert plant_a.freshness and plant_a.freshness.fail_after == timedelta(hours=2)
    assert config.sink.retention == timedelta(days=365)
    assert config.sources["plant_b"].partitions.start == "2024-01-01"
    assert config.archive and config.archive.export_after == timedelta(days=90)
    assert project.state_dir == (tmp_path / ".pull_pipeline").resolve()


@pytest.mark.parametrize(
    ("snippet", "expected"),
    [
        ({"urll": "x"}, "unknown key 'sources.plant_a.urll'"),
        ({"auth": {"type": "api_key", "value": "k", "hedaer": "X"}}, "allowed keys here: header"),
        ({"auth": {"type": "tokn"}}, "auth.type: must be one of 'api_key', 'bearer', 'basic'"),
        ({"pagination": {"type": "page_number", "size": 0}}, "pagination.size"),
        ({"time_unit": "minutes"}, "time_unit"),
        ({"reference_epoch": "the 1st of May"}, "reference_epoch: 'the 1st of May' is not an ISO"),
        ({"partitions": {"start": "2024-01-01", "lag": "5 parsecs"}}, "expected a duration"),
        ({"partitions": {"start": "2024-01-01", "windows_per_run": 0}},
         "partitions.windows_per_run"),
        ({"partitions": {"start": "2024-01-01", "windows_per_run": True}},
         "expected a number, not true or false"),
        ({"max_reject_ratio": True}, "max_reject_ratio: expected a number, not true or false"),
        ({"pagination": {"type": "page_number", "size": False}}, "pagination.size"),
        ({"auth": {"type": "api_key", "value": "k"}}, "exactly one of 'header' or 'query_param'"),
    ],
)
def test_errors_name_source_key_and_fix(tmp_path: Path, snippet: dict, expected: str) -> None:
    source = {"kind": "rest", "url": "http://x", "partitions": {"start": "2024-01-01"}, **snippet}
    with pytest.raises(ConfigError) as error:
        parse_config({"sources": {"plant_a": source}}, origin=str(tmp_path / "sources.yaml"))
    message = str(error.value)
    assert str(tmp_path / "sources.yaml") in message
    assert "source 'plant_a'" in message
    assert expected in message


@pytest.mark.parametrize(
    ("snippet", "key", "expected"),
    [
        ({"partitions": {"start": "2024-01-01", "cadence": "every hour"}},
         "sources.plant_a.partitions.cadence", "must be one of 5min, 10min"),
        ({"partitions": {"start": "2024-01-01", "timezone": "Mars/Olympus"}},
         "sources.plant_a.partitions.timezone", "not a time zone name"),
        ({"partitions": {"start": "last monday"}},
         "sources.plant_a.partitions.start", "expected a date such as 2024-01-01"),
        ({"timeout": "5 parsecs"}, "sources.plant_a.timeout", "expected a duration"),
        ({"retries": {"backoff": "soon"}}, "sources.plant_a.retries.backoff",
         "expected a duration"),
        ({"url": "ftp://x/readings"}, "sources.plant_a.url", "must start with http://"),
        ({"max_pagess": 3}, "sources.plant_a.max_pagess", "allowed keys here: allow_empty_replace, auth"),
        ({"kind": "ftp"}, "sources.plant_a.kind",
         "must be one of 'rest', 'sql', 'files', 'python'"),
        ({"kind": None}, "sources.plant_a.kind", "must be one of"),
        ({"auth": {"type": "tokn"}}, "sources.plant_a.auth.type",
         "must be one of 'api_key', 'bearer', 'basic'"),
        ({"auth": {"token": "x"}}, "sources.plant_a.auth", "needs a 'type' key"),
        ({"pagination": {"type": "pages"}}, "sources.plant_a.pagination.type",
         "must be one of 'page_number', 'offset', 'cursor', 'next_link', 'none'"),
        ({"pagination": {"type": "cursor", "cursor": "x"}}, "sources.plant_a.pagination.cursor",
         "allowed keys here: cursor_path, param, type"),
    ],
)
def test_every_error_names_file_source_and_key(
    tmp_path: Path, snippet: dict, key: str, expected: str
) -> None:
    source = {"kind": "rest", "url": "http://x", "partitions": {"start": "2024-01-01"}, **snippet}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": {"plant_a": source}}))
    with pytest.raises(ConfigError) as error:
        load_project(path)
    message = str(error.value)
    assert str(path) in message
    assert "source 'plant_a'" in message
    assert key in message
    assert expected in message


def test_unknown_top_level_and_kind(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown key 'sinks'"):
        parse_config({"sinks": {}})
    with pytest.raises(ConfigError, match="kind: must be one of 'rest', 'sql', 'files', 'python'"):
        parse_config({"sources": {"a": {"kind": "ftp"}}})


def test_sql_query_must_bind_the_window() -> None:
    with pytest.raises(ConfigError, match=":start and :end"):
        parse_config({"sources": {"b": {"kind": "sql", "url": "sqlite://", "query": "SELECT 1",
                                        "partitions": {"start": "2024-01-01"}}}})


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file not found"):
        load_project(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_project(write(tmp_path, "sources: [\n"))


def test_a_missing_config_is_an_error_never_the_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PULL_PIPELINE_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as error:
        load_project()
    assert f"{tmp_path / 'sources.yaml'}: config file not found" in str(error.value)
    assert "PULL_PIPELINE_CONFIG" in str(error.value)
    monkeypatch.setenv("PULL_PIPELINE_CONFIG", str(tmp_path / "mine.yaml"))
    with pytest.raises(ConfigError, match="mine.yaml: config file not found"):
        load_project()


def test_env_resolved_late_and_redacted(tmp_path: Path) -> None:
    config = load_project(write(tmp_path, CONTRACT)).config
    plant_a = config.sources["plant_a"]
    assert isinstance(plant_a, RestSource)
    assert plant_a.auth.value == "${PLANT_A_KEY}"  # type: ignore[union-attr]
    with pytest.raises(ConfigError) as error:
        resolve_env(plant_a, where="source 'plant_a'", environ={})
    assert "PLANT_A_KEY" in str(error.value) and "source 'plant_a'" in str(error.value)
    resolved = resolve_env(plant_a, "source 'plant_a'", environ={"PLANT_A_KEY": "k-123456789"})
    assert resolved.auth.value == "k-123456789"  # type: ignore[union-attr]
    assert redact("sent header X-API-Key: k-123456789") == "sent header X-API-Key: ***"


def test_a_lag_the_cadence_cannot_take_names_file_source_and_key(tmp_path: Path) -> None:
    """The schedule's cron is the cadence's moved by `lag`; one it cannot express fails at load."""
    source = {"kind": "rest", "url": "http://x",
              "partitions": {"start": "2024-01-01", "cadence": "0 0 28 * *", "lag": "2 days"}}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"sources": {"x": source}}))
    with pytest.raises(ConfigError) as error:
        load_project(path)
    contained = load_project(path, contain=True)
    assert [broken.name for broken in contained.broken] == ["x"]
    for message in (str(error.value), contained.broken[0].error):
        assert str(path) in message
        assert "source 'x'" in message
        assert "partitions.lag" in message
        assert "cannot be added to the cadence '0 0 28 * *'" in message


def test_run_time_config_errors_name_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`${NAME}` is resolved when the source runs; its error still names file, source and key."""
    from pull_pipeline.connectors import make_connector
    from pull_pipeline.defs.context import SourceContext
    from pull_pipeline.defs.recovery import probe_source

    monkeypatch.delenv("PP_TEST_UNSET_KEY", raising=False)
    path = write(tmp_path, """
sources:
  x:
    kind: rest
    url: http://127.0.0.1:9/readings
    auth: {type: api_key, header: X-API-Key, value: ${PP_TEST_UNSET_KEY}}
    partitions: {start: "2024-01-01"}
  y:
    kind: sql
    url: nosuchdb://reader@host/db
    query: SELECT * FROM t WHERE ts >= :start AND ts < :end
    partitions: {start: "2024-01-01"}
""")
    project = load_project(path)
    x = project.config.sources["x"]
    with pytest.raises(ConfigError) as error:
        resolve_env(x, where=project.where("x"))
    probe = probe_source(SourceContext.build(project, "x", x))
    for message in (str(error.value), probe.message):
        assert f"{path}: source 'x'" in message
        assert "PP_TEST_UNSET_KEY" in message and "'value'" in message
    with pytest.raises(ConfigError) as error:
        make_connector("y", project.config.sources["y"], project.path)
    assert str(path) in str(error.value) and "'y'" in str(error.value)
    assert "nosuchdb" in str(error.value)


def test_redaction_masks_url_passwords_and_query_keys() -> None:
    assert redact("postgresql://reader:hunter22@db/x") == "postgresql://reader:***@db/x"
    assert redact("GET http://h/r?start=1&api_key=abcdef&page=2") == (
        "GET http://h/r?start=1&api_key=***&page=2")


def test_a_bad_value_is_quoted_once() -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({"sources": {"x": {"kind": "sql", "url": "sqlite://", "lock_timeout": "nope",
                                        "query": "SELECT :start, :end",
                                        "partitions": {"start": "2024-01-01"}}}})
    assert str(error.value).count("'nope'") == 1, error.value
