"""One broken source never stops the others: it is shown under its own name, alerts once,
and runs of the healthy sources (queued ones included) still run after the file broke."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest
import yaml

from pull_pipeline.config.loader import load_project
from pull_pipeline.definitions import build_definitions
from pull_pipeline.errors import ConfigError
from pull_pipeline_tests.daemon_harness import Clock, Daemon
from pull_pipeline_tests.helpers import failure_text

GOOD = {"kind": "python", "function": "pull_pipeline_tests.python_sources:fetch_frame",
        "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z"}}
KEY = "2024-01-01-02:00"

# What a typo in a source looks like, and what its error must name.
BREAKAGES: dict[str, tuple[dict[str, Any], str]] = {
    "unknown key": ({"functon": GOOD["function"]}, "unknown key 'sources.bad.functon'"),
    "bad cadence": ({"partitions": {"cadence": "hourlyy", "start": "2024-01-01"}},
                    "partitions.cadence: must be one of"),
    "impossible cron": ({"partitions": {"cadence": "99 * * * *", "start": "2024-01-01"}},
                        "invalid cron schedule '99 * * * *'"),
    "missing function": ({"function": "pull_pipeline_tests.python_sources:nope"},
                         "has no function 'nope'"),
    "unresolvable module": ({"function": "no_such_package.mod:fetch"},
                            "cannot import 'no_such_package.mod'"),
    "bad paginator type": ({"kind": "rest", "url": "http://127.0.0.1:9/x", "function": None,
                            "pagination": {"type": "pages"}}, "pagination.type: must be one of"),
}

# Errors of the file's text, which the CLI's strict reading reports too; the others show
# only where the source would run (Dagster refuses the cron, the function is imported).
STRICT = ("unknown key", "bad cadence", "bad paginator type")


def broken_block(change: dict[str, Any]) -> dict[str, Any]:
    block = {**GOOD, **change}
    return {key: value for key, value in block.items() if value is not None}


def write(path: Path, sources: dict[str, Any], **blocks: Any) -> Path:
    path.write_text(yaml.safe_dump({"landing": {"path": str(path.parent / "landing")},
                                    **blocks, "sources": sources}))
    return path


@pytest.mark.parametrize("breakage", list(BREAKAGES))
def test_a_broken_source_is_shown_by_name_and_the_others_load(
    tmp_path: Path, breakage: str
) -> None:
    change, expected = BREAKAGES[breakage]
    config = write(tmp_path / "sources.yaml", {"good": GOOD, "bad": broken_block(change)})
    defs = build_definitions(load_project(config, contain=True))
    repo = defs.get_repository_def()  # the code location loads
    assert {"/".join(key.path) for key in repo.asset_graph.get_all_asset_keys()} == {
        "good/raw", "good/readings", "bad/config"}
    assert {job.name for job in repo.get_all_jobs()} >= {"pull_good", "replay_good"}
    assert "pull_bad" not in {job.name for job in repo.get_all_jobs()}
    assert repo.has_sensor_def("config_bad") and repo.has_sensor_def("recover_good")
    node = repo.asset_graph.get(dg.AssetKey(["bad", "config"]))
    assert expected in (node.description or "")
    assert str(config) in (node.description or "") and "reload the code location" in (
        node.description or "")
    if breakage in STRICT:
        with pytest.raises(ConfigError, match="source 'bad'"):
            load_project(config)  # the CLI still reads the file strictly


@pytest.mark.parametrize("blocks, expected", [
    ({"sink": {"tabel": "x"}}, "unknown key 'sink.tabel'"),
    ({"alerts": {"throttle": "often"}}, "alerts.throttle"),
    ({"sourcez": {}}, "unknown key 'sourcez'"),
])
def test_errors_outside_sources_still_fail_the_load(
    tmp_path: Path, blocks: dict[str, Any], expected: str
) -> None:
    config = write(tmp_path / "sources.yaml", {"good": GOOD}, **blocks)
    with pytest.raises(ConfigError, match=expected):
        load_project(config, contain=True)


def test_yaml_that_cannot_be_parsed_fails_the_load(tmp_path: Path) -> None:
    config = tmp_path / "sources.yaml"
    config.write_text("sources:\n  good: {kind: python\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_project(config, contain=True)


def test_a_broken_source_alerts_once_and_its_check_fails(
    tmp_path: Path, webhook_receiver: Any
) -> None:
    config = write(tmp_path / "sources.yaml",
                   {"good": GOOD, "bad": broken_block({"functon": "x"})},
                   alerts={"webhooks": [{"url": webhook_receiver.url}]})
    project = load_project(config, contain=True)
    with dg.instance_for_test() as instance:
        ops = Daemon(project, instance, Clock(datetime.now(UTC)))
        ops.sensor_tick("alert_on_run_failure")  # starts watching from here
        assert ops.sensor_tick("config_bad").asset_events  # recorded without a run
        check = dg.AssetCheckKey(dg.AssetKey(["bad", "config"]), "valid_config")
        (record,) = instance.event_log_storage.get_asset_check_execution_history(check, limit=5)
        assert record.event is not None
        evaluation = record.event.get_dagster_event().event_specific_data
        assert isinstance(evaluation, dg.AssetCheckEvaluation)
        assert not evaluation.passed
        assert "unknown key 'sources.bad.functon'" in (evaluation.description or "")
        assert "still invalid" in (ops.sensor_tick("config_bad").skip_message or "")

        result = dg.materialize([a for a in ops.defs.assets or [] if isinstance(
            a, dg.AssetsDefinition) and a.key == check.asset_key],
            instance=instance, raise_on_error=False)
        assert not result.success
        assert "unknown key 'sources.bad.functon'" in failure_text(result)
        ops.sensor_tick("alert_on_run_failure")  # the failed run: alerted already

        ops.cursors.clear()  # a new sensor (say the location moved): the throttle holds
        ops.sensor_tick("config_bad")
    (payload,) = webhook_receiver.payloads
    assert "bad: invalid config" in payload["text"]
    assert "unknown key 'sources.bad.functon'" in payload["text"]
    assert "reload the code location" in payload["text"]


def test_a_run_queued_before_another_source_broke_still_runs(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    sink = {"dsn": pg_dsn, "table": table_name}
    config = write(tmp_path / "sources.yaml", {"good": GOOD, "other": GOOD}, sink=sink)
    with dg.instance_for_test() as instance:
        before = build_definitions(load_project(config, contain=True)).resolve_job_def("pull_good")
        # Launched, not started. (A QUEUED run also needs a code location's origin, which
        # only a workspace gives: the job name and snapshot are what the worker resolves.)
        queued = instance.create_run_for_job(
            before, status=dg.DagsterRunStatus.NOT_STARTED,
            tags={**before.tags, "dagster/partition": KEY},
            asset_selection=frozenset(before.asset_layer.selected_asset_keys))

        write(config, {"good": GOOD, "other": broken_block({"functon": "x"})}, sink=sink)
        reloaded = build_definitions(load_project(config, contain=True))
        job = reloaded.resolve_job_def(queued.job_name)
        assert job.asset_layer.selected_asset_keys == queued.asset_selection  # the same job
        result = job.execute_in_process(partition_key=KEY, instance=instance,
                                        tags=queued.tags, raise_on_error=False)
    assert result.success, failure_text(result)
    with psycopg.connect(pg_dsn) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table_name}").fetchone()
    assert row is not None
    (rows,) = row
    assert rows > 0
