"""Registries close the loop: one class from outside the package, and sources.yaml takes it.

`plugin_example` adds a source kind, a paginator and an auth type; a config using them
loads, and windows run through them and the production definitions into the sink.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import psycopg
import pytest
import yaml

from pull_pipeline.config import load_project, resolve_env
from pull_pipeline.config.models import SOURCE_KINDS, PaginationConfig, PythonSource
from pull_pipeline.config.registry import Registry
from pull_pipeline.connectors import SourceKind, make_connector
from pull_pipeline.connectors.rest import PAGINATORS, Page
from pull_pipeline.connectors.rest.pagination import build_paginator
from pull_pipeline_tests import plugin_example
from pull_pipeline_tests.helpers import failure_text, run_source
from pull_pipeline_tests.servers import WINDOW_START, ReadingsApi

TOKEN = "plugin-token-8c1f0e"


def write_config(tmp_path: Path, sources: dict[str, Any], **blocks: Any) -> Path:
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump({"landing": {"path": str(tmp_path / "landing")}, **blocks,
                                    "sources": sources}))
    return path


def ramp(**extra: Any) -> dict[str, Any]:
    return {"kind": "ramp", "tags": ["line_1", "line_2"], "every": "30min", "step": 0.5,
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}, **extra}


def vendor(api: ReadingsApi) -> dict[str, Any]:
    api.pagination = {"type": "offset", "param": "skip", "size_param": "take"}
    api.auth = {"type": "api_key", "header": "X-Token", "value": TOKEN}
    return {**api.source_config(), "pagination": {"type": "skip_take", "size": 7},
            "auth": {"type": "x_token", "token": "${PLUGIN_TOKEN}"}}


def test_the_config_accepts_the_plugin_classes(tmp_path: Path, readings_api: ReadingsApi) -> None:
    config = load_project(write_config(
        tmp_path, {"ramp_a": ramp(), "vendor": vendor(readings_api)})).config
    assert isinstance(config.sources["ramp_a"], plugin_example.Ramp)
    assert config.sources["ramp_a"].every == timedelta(minutes=30)
    rest = config.sources["vendor"]
    assert isinstance(rest.pagination, plugin_example.SkipTake)  # type: ignore[attr-defined]
    assert isinstance(rest.auth, plugin_example.XToken)  # type: ignore[attr-defined]


def test_a_window_runs_through_the_plugin_paginator_and_auth(
    tmp_path: Path, readings_api: ReadingsApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PLUGIN_TOKEN", TOKEN)
    source = load_project(write_config(tmp_path, {"vendor": vendor(readings_api)})
                          ).config.sources["vendor"]
    resolved = resolve_env(source, where="source 'vendor'")
    with make_connector("vendor", resolved) as connector:
        rows = [r for t in connector.fetch(WINDOW_START, WINDOW_START + timedelta(hours=1))
                for r in t.to_pylist()]
    assert len(rows) == len(readings_api.readings) == 180
    skips = [int(r.params["skip"]) for r in readings_api.requests]
    assert skips == list(range(0, 181, 7)) + [180]  # 26 pages of 7, a short one, an empty one
    assert {r.headers["x-token"] for r in readings_api.requests} == {TOKEN}


def test_a_plugin_kind_loads_through_the_production_definitions(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    project = load_project(write_config(tmp_path, {"ramp_a": ramp()},
                                        sink={"dsn": pg_dsn, "table": table_name}))
    result = run_source(project, "ramp_a", "2024-01-01-02:00")
    assert result.success, failure_text(result)
    with psycopg.connect(pg_dsn) as conn:
        loaded = conn.execute(f"SELECT sensor_tag, ts, sensor_value FROM {table_name} "
                              "ORDER BY ts, sensor_tag").fetchall()
    two = datetime(2024, 1, 1, 2, tzinfo=UTC)
    assert loaded == [(tag, two + timedelta(minutes=minutes), plugin_example.RAMP_START + value)
                      for minutes, value in ((0, 2.0), (30, 2.5))
                      for tag in ("line_1", "line_2")]


def test_each_window_gets_a_fresh_paginator() -> None:
    config = PAGINATORS.validate({"type": "skip_take", "size": 3})
    answer: Any = None  # SkipTake reads only the count
    first = build_paginator(config, "vendor")
    first.next(first.first("http://x", {}), answer, None, 3)
    second = build_paginator(config, "vendor")
    page = second.first("http://x", {})
    assert page.params == {"skip": 0, "take": 3}
    assert second.next(page, answer, None, 3) == Page("http://x", {"skip": 3, "take": 3})
    assert second.source == "vendor"


def test_registering_checks_the_class() -> None:
    class Untagged(SourceKind):
        def fetch(self, name: str, start: datetime, end: datetime) -> Any:
            return iter(())

    with pytest.raises(TypeError, match="must declare kind: Literal"):
        SOURCE_KINDS.register(Untagged)

    class Clash(PythonSource):
        kind: Literal["python"]

    with pytest.raises(ValueError, match="kind 'python' is already registered"):
        SOURCE_KINDS.register(Clash)
    with pytest.raises(TypeError, match="must subclass SourceBase"):
        SOURCE_KINDS.register(plugin_example.SkipTake)
    assert SOURCE_KINDS.choices()[:4] == ["rest", "sql", "files", "python"]


def test_a_registry_lists_builtins_without_importing_them() -> None:
    registry = Registry("type", PaginationConfig, {"lazy": "no.such.module:Nothing"})
    assert registry.choices() == ["lazy"]
    assert registry.get("other") is None
