"""Big backfills: exact partition status after a failure, reruns of only what failed."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import psycopg
import pytest

from pull_pipeline import landing as landing_module
from pull_pipeline import pipeline
from pull_pipeline.config.loader import Project
from pull_pipeline.connectors import make_connector
from pull_pipeline.definitions import build_definitions
from pull_pipeline.defs.context import SourceContext
from pull_pipeline.defs.steps import windows_for
from pull_pipeline.errors import SinkUnavailable
from pull_pipeline.landing import LandingMissing, LocalLanding
from pull_pipeline.pipeline import LandStats, LoadStats, pull
from pull_pipeline.sink.timescale import TimescaleSink
from pull_pipeline_tests import fake_sources
from pull_pipeline_tests.helpers import failure_text, make_project, run_source

T0 = datetime(2024, 1, 1, tzinfo=UTC)
KEYS = [f"2024-01-01-{hour:02d}:00" for hour in range(6)]
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
RANGE = {RANGE_START: KEYS[0], RANGE_END: KEYS[-1]}
BROKEN: set[datetime] = set()  # windows (by start) that `fetch_or_fail` refuses


def fetch_or_fail(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """`fake_sources.fetch`, but a permanent error for the windows in `BROKEN`."""
    if start in BROKEN:
        raise RuntimeError(f"the historian cannot serve {start:%H:%M}")
    return fake_sources.fetch(start, end)


def config(dsn: str, table: str, function: str, per_transaction: int = 24,
           **extra: Any) -> dict[str, Any]:
    return {
        "sink": {"dsn": dsn, "table": table},
        "sources": {"plant": {
            "kind": "python", "function": f"pull_pipeline_tests.{function}",
            "partitions": {"cadence": "hourly", "start": "2024-01-01T00:00:00Z",
                           "windows_per_transaction": per_transaction},
            "max_reject_ratio": 0.1, **extra,
        }},
    }


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


@pytest.fixture(autouse=True)
def six_hours() -> None:
    fake_sources.reset(fake_sources.hourly_rows(T0, hours=6))
    BROKEN.clear()


def status(instance: dg.DagsterInstance, project: Project, asset: str) -> dict[str, str]:
    """Dagster's partition status of `plant/<asset>`, as the UI shows it, per window."""
    assets = {a.key: a for a in build_definitions(project).assets or []
              if isinstance(a, dg.AssetsDefinition)}
    key = dg.AssetKey(["plant", asset])
    partitions_def = assets[key].partitions_def
    assert partitions_def is not None
    found = instance.get_status_by_partition(key, KEYS, partitions_def)
    assert found is not None
    return {k: v.value if v else "MISSING" for k, v in found.items()}


def loaded_windows(dsn: str, table: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone() == (None,):
            return []
        rows = conn.execute(f"SELECT DISTINCT date_trunc('hour', ts) FROM {table} ORDER BY 1")
        return [hour.astimezone(UTC).strftime("%Y-%m-%d-%H:%M") for (hour,) in rows]


def test_a_bad_window_fails_alone_and_a_rerun_redoes_only_it(
    tmp_path: Path, pg_dsn: str, table_name: str, instance: dg.DagsterInstance
) -> None:
    bad_at = int((T0 + timedelta(hours=3, minutes=5)).timestamp())
    fake_sources.ROWS.extend(
        {"sensor_tag": "x", "relative_time": bad_at, "sensor_value": "n/a"} for _ in range(100))
    project = make_project(tmp_path, config(pg_dsn, table_name, "fake_sources:fetch"))

    result = run_source(project, "plant", instance=instance, tags=RANGE)

    assert not result.success
    assert "too many rows rejected in window 2024-01-01-03:00" in failure_text(result)
    loaded = [k for k in KEYS if k != KEYS[3]]
    assert loaded_windows(pg_dsn, table_name) == loaded
    assert status(instance, project, "raw") == dict.fromkeys(KEYS, "MATERIALIZED")
    assert status(instance, project, "readings") == {
        **dict.fromkeys(loaded, "MATERIALIZED"), KEYS[3]: "FAILED"}

    fake_sources.reset(fake_sources.hourly_rows(T0, hours=6))  # the source fixed its data
    failed = [k for k, v in status(instance, project, "readings").items() if v == "FAILED"]
    rerun = run_source(project, "plant", failed[0], instance=instance)
    assert rerun.success, failure_text(rerun)
    assert fake_sources.CALLS == [(T0 + timedelta(hours=3), T0 + timedelta(hours=4))]
    assert loaded_windows(pg_dsn, table_name) == KEYS
    assert set(status(instance, project, "readings").values()) == {"MATERIALIZED"}


def test_a_window_that_cannot_be_fetched_keeps_the_windows_loaded_before_it(
    tmp_path: Path, pg_dsn: str, table_name: str, instance: dg.DagsterInstance
) -> None:
    BROKEN.add(T0 + timedelta(hours=2))
    project = make_project(tmp_path, config(pg_dsn, table_name, "test_big_backfill:fetch_or_fail"))

    result = run_source(project, "plant", instance=instance, tags=RANGE)

    assert not result.success
    assert "the historian cannot serve 02:00" in failure_text(result)
    assert status(instance, project, "raw") == {
        **dict.fromkeys(KEYS[:2], "MATERIALIZED"), **dict.fromkeys(KEYS[2:], "FAILED")}
    # raw loaded each window as it landed: what landed before the bad window is in the sink
    assert status(instance, project, "readings") == status(instance, project, "raw")
    assert loaded_windows(pg_dsn, table_name) == KEYS[:2]


def test_a_ranged_run_writes_few_events_per_window(
    tmp_path: Path, pg_dsn: str, table_name: str, instance: dg.DagsterInstance
) -> None:
    """Per window: one planned event and one materialization per asset, and nothing else
    (no log line per window): Dagster's bookkeeping stays a small share of a backfill."""
    project = make_project(tmp_path, config(pg_dsn, table_name, "fake_sources:fetch"))
    result = run_source(project, "plant", instance=instance, tags=RANGE)
    assert result.success, failure_text(result)
    events = instance.all_logs(result.run_id)
    per_window = len(events) / len(KEYS)
    fixed = len(events) - 4 * len(KEYS)
    assert per_window <= 4 + 30 / len(KEYS), (per_window, fixed)


SEEN_IN_SINK: list[int] = []  # whether the first window was in the sink at each fetch
SINK: dict[str, str] = {}


def fetch_watching_sink(start: datetime, end: datetime) -> list[dict[str, Any]]:
    """`fetch_or_fail`, noting how many rows of the first window the sink holds already."""
    SEEN_IN_SINK.append(len([w for w in loaded_windows(SINK["dsn"], SINK["table"])
                             if w == KEYS[0]]))
    return fetch_or_fail(start, end)


def pull_directly(
    tmp_path: Path, dsn: str, table: str, load_error: type[Exception] | None = None,
    per_transaction: int = 1,
) -> tuple[LandStats, LoadStats]:
    """`pipeline.pull` over the six windows, without Dagster, committed `per_transaction`
    at a time; `load_error` is what it returns."""
    SINK.update(dsn=dsn, table=table)
    SEEN_IN_SINK.clear()
    project = make_project(tmp_path, config(dsn, table, "test_big_backfill:fetch_watching_sink",
                                            per_transaction, retries={"attempts": 1}))
    source = project.config.sources["plant"]
    ctx = SourceContext.build(project, "plant", source)
    windows = windows_for(ctx.partitions_def, KEYS)
    land_stats, load_stats = LandStats(), LoadStats()
    with make_connector("plant", source) as connector:
        error = pull("plant", source, connector, LocalLanding(tmp_path / "landing"),
                     TimescaleSink(dsn=dsn, table=table), windows, "run", land_stats=land_stats,
                     load_stats=load_stats)
    assert type(error) is load_error if load_error else error is None
    return land_stats, load_stats


def test_pull_loads_the_first_windows_while_later_ones_are_fetched(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    land_stats, load_stats = pull_directly(tmp_path, pg_dsn, table_name)
    assert [w.key for w in land_stats.landed] == KEYS
    assert list(load_stats.loaded_windows) == KEYS
    assert loaded_windows(pg_dsn, table_name) == KEYS
    assert SEEN_IN_SINK[0] == 0 and SEEN_IN_SINK[-1] == 1  # window 0 was queryable by then


def test_pull_loads_what_landed_before_a_window_that_cannot_be_fetched(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    BROKEN.add(T0 + timedelta(hours=3))
    with pytest.raises(RuntimeError, match="cannot serve 03:00"):
        pull_directly(tmp_path, pg_dsn, table_name)
    assert loaded_windows(pg_dsn, table_name) == KEYS[:3]



@pytest.mark.parametrize("per_transaction", [1, 2])
def test_pull_lands_every_window_when_the_sink_goes_away(
    tmp_path: Path, pg_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch,
    per_transaction: int,
) -> None:
    """The sink goes away at window 2 (alone, or in a group of two): what committed before
    counts, every window still lands."""
    load_window, load_together = pipeline._load_window, pipeline._load_together

    def sink_gone_at_window_2(*args: Any) -> Any:
        if args[4].key == KEYS[2]:
            raise SinkUnavailable("plant: the sink went away")
        return load_window(*args)

    def sink_gone_at_group_of_window_2(*args: Any) -> Any:
        if KEYS[2] in [item.window.key for item in args[3]]:
            raise SinkUnavailable("plant: the sink went away")
        return load_together(*args)

    monkeypatch.setattr(pipeline, "_load_window", sink_gone_at_window_2)
    monkeypatch.setattr(pipeline, "_load_together", sink_gone_at_group_of_window_2)
    land_stats, load_stats = pull_directly(tmp_path, pg_dsn, table_name, SinkUnavailable,
                                           per_transaction)
    assert [w.key for w in land_stats.landed] == KEYS  # `raw` may claim every window
    assert list(load_stats.loaded_windows) == KEYS[:2]


def test_a_window_that_cannot_be_read_ahead_keeps_the_one_loading_before_it(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    """`load` reads window i+1 while window i commits on the sink thread: when window i+1's
    file is gone, window i still counts as loaded, and nothing after it is touched."""
    SINK.update(dsn=pg_dsn, table=table_name)
    SEEN_IN_SINK.clear()
    project = make_project(tmp_path, config(pg_dsn, table_name,
                                            "test_big_backfill:fetch_watching_sink"))
    source = project.config.sources["plant"]
    windows = windows_for(SourceContext.build(project, "plant", source).partitions_def, KEYS)
    landing = LocalLanding(tmp_path / "landing")
    with make_connector("plant", source) as connector:
        pipeline.land("plant", source, connector, landing, windows[:3], "run")
    landing.folder.delete(landing.key("plant", KEYS[1]))
    stats = LoadStats()
    with pytest.raises(LandingMissing, match=KEYS[1]):
        pipeline.load("plant", source, landing, TimescaleSink(dsn=pg_dsn, table=table_name),
                      windows[:3], "run", stats)
    assert list(stats.loaded_windows) == KEYS[:1]
    assert list(stats.rejected_by_window) == KEYS[:1] and stats.fetched > 0  # counted once
    assert loaded_windows(pg_dsn, table_name) == KEYS[:1]


@pytest.mark.parametrize(("windows_per_run", "ranges"), [
    (4, [(KEYS[0], KEYS[3]), (KEYS[4], KEYS[5])]),
    (None, [(KEYS[0], KEYS[5])]),
])
def test_a_backfill_from_the_ui_runs_in_chunks_of_windows_per_run(
    tmp_path: Path, pg_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch,
    windows_per_run: int | None, ranges: list[tuple[str, str]],
) -> None:
    """Dagster's backfill daemon, against a real code server, cuts the six windows into runs
    of `partitions.windows_per_run` (each a ranged run: windows commit one by one)."""
    import logging

    import yaml
    from dagster._core.execution.backfill import PartitionBackfill
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import ModuleTarget
    from dagster._daemon.backfill import execute_backfill_iteration

    source = config(pg_dsn, table_name, "test_big_backfill:fetch_or_fail")
    source["sources"]["plant"]["partitions"]["windows_per_run"] = windows_per_run
    source["landing"] = {"path": str(tmp_path / "landing")}
    path = tmp_path / "sources.yaml"
    path.write_text(yaml.safe_dump(source))
    monkeypatch.setenv("PULL_PIPELINE_CONFIG", str(path))
    keys = [dg.AssetKey(["plant", "raw"]), dg.AssetKey(["plant", "readings"])]
    target = ModuleTarget(module_name="pull_pipeline.definitions", attribute="defs",
                          working_directory=str(Path(__file__).parents[1]), location_name="plant")
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance, \
            create_test_daemon_workspace_context(target, instance) as workspace:
        instance.add_backfill(PartitionBackfill.from_asset_partitions(
            backfill_id="chunks", asset_graph=workspace.create_request_context().asset_graph,
            partition_names=KEYS, asset_selection=keys, backfill_timestamp=time.time(), tags={},
            dynamic_partitions_store=instance, all_partitions=False, title=None,
            description=None, run_config=None))
        list(execute_backfill_iteration(workspace, logging.getLogger("backfill")))
        runs = instance.get_runs(dg.RunsFilter(tags={"dagster/backfill": "chunks"}))
    assert sorted((run.tags[RANGE_START], run.tags[RANGE_END]) for run in runs) == ranges


@pytest.mark.parametrize("page_rows", [100_000, 50])
def test_a_window_of_one_page_is_prepared_ahead_and_loads_as_one_of_many_pages(
    tmp_path: Path, pg_dsn: str, table_name: str, monkeypatch: pytest.MonkeyPatch,
    page_rows: int,
) -> None:
    """A window that is one landed page is sorted and COPY-encoded on the thread that
    validated it (`CheckedPage.prepared`); a window of several pages streams through the
    sink as before. Either way the sink holds the same rows: the first copy of a repeated
    key, and the bad row quarantined."""
    rows = fake_sources.hourly_rows(T0, hours=2)
    repeat = {**rows[0], "sensor_value": 999.0}  # the same key again, later in the window
    bad = {**rows[1], "relative_time": rows[1]["relative_time"] + 1, "sensor_value": True}
    fake_sources.reset([*rows[:90], repeat, bad, *rows[90:]])
    monkeypatch.setattr(landing_module, "READ_BATCH_ROWS", page_rows)
    project = make_project(tmp_path, config(pg_dsn, table_name, "fake_sources:fetch"))
    source = project.config.sources["plant"]
    windows = windows_for(SourceContext.build(project, "plant", source).partitions_def, KEYS)[:2]
    landing = LocalLanding(tmp_path / "landing")
    with make_connector("plant", source) as connector:
        pipeline.land("plant", source, connector, landing, windows, "run")
    pages = list(pipeline.checked_pages("plant", source, landing, windows[0],
                                        defaultdict(float), pipeline.CycleCollector()))
    prepared = [page.prepared is not None for page in pages]
    assert prepared == ([True] if page_rows > 182 else [False] * 4)
    stats = pipeline.load("plant", source, landing, TimescaleSink(dsn=pg_dsn, table=table_name),
                          windows, "run")
    assert stats.loaded_windows == {KEYS[0]: 180, KEYS[1]: 180}
    assert stats.rejected_by_window == {KEYS[0]: 1, KEYS[1]: 0}
    with psycopg.connect(pg_dsn) as conn:
        first = conn.execute(f"SELECT sensor_value FROM {table_name} WHERE sensor_tag = %s "
                             "AND ts = %s", (rows[0]["sensor_tag"], T0)).fetchall()
        rejects = conn.execute(f"SELECT partition_key FROM {table_name}_rejects").fetchall()
    assert first == [(rows[0]["sensor_value"],)] and rejects == [(KEYS[0],)]


def land_six(tmp_path: Path, dsn: str, table: str, per_transaction: int,
             **extra: Any) -> tuple[Any, list[Any], LocalLanding]:
    """The six hourly windows of `fake_sources.fetch`, landed; (source, windows, landing)."""
    fake_sources.reset(fake_sources.hourly_rows(T0, hours=6))
    project = make_project(tmp_path, config(dsn, table, "fake_sources:fetch", per_transaction,
                                            **extra))
    source = project.config.sources["plant"]
    windows = windows_for(SourceContext.build(project, "plant", source).partitions_def, KEYS)
    landing = LocalLanding(tmp_path / "landing")
    with make_connector("plant", source) as connector:
        pipeline.land("plant", source, connector, landing, windows, "run")
    return source, windows, landing


def transactions(dsn: str, table: str) -> list[list[str]]:
    """The windows of each transaction that wrote the table (rows share its xmin)."""
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT xmin::text, array_agg(DISTINCT to_char(date_trunc('hour', ts AT TIME ZONE "
            f"'UTC'), 'YYYY-MM-DD-HH24:MI')) FROM {table} GROUP BY 1 ORDER BY 2").fetchall()
    return [keys for _, keys in rows]


@pytest.mark.parametrize(("per_transaction", "groups"), [
    (4, [KEYS[:4], KEYS[4:]]),
    (1, [[key] for key in KEYS]),
])
def test_small_windows_commit_windows_per_transaction_at_a_time(
    tmp_path: Path, pg_dsn: str, table_name: str, per_transaction: int,
    groups: list[list[str]],
) -> None:
    """Windows of one page each load `partitions.windows_per_transaction` to a transaction
    (one COPY), and each still counts on its own: rows, rejects and rows replaced."""
    source, windows, landing = land_six(tmp_path, pg_dsn, table_name, per_transaction)
    sink = TimescaleSink(dsn=pg_dsn, table=table_name)
    first = pipeline.load("plant", source, landing, sink, windows, "run")
    assert transactions(pg_dsn, table_name) == groups
    assert first.loaded_windows == dict.fromkeys(KEYS, 180)
    assert first.rejected_by_window == dict.fromkeys(KEYS, 0)
    assert (first.result.staged, first.result.loaded, first.result.previous) == (1080, 1080, 0)
    again = pipeline.load("plant", source, landing, sink, windows, "run")  # a rerun: replaces
    assert (again.result.loaded, again.result.previous, again.fetched) == (1080, 1080, 1080)
    assert len(rows_of(pg_dsn, table_name)) == 1080


def rows_of(dsn: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT sensor_tag, ts, sensor_value FROM {table}").fetchall()


def test_a_window_the_sink_refuses_fails_alone_out_of_its_group(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    """The sink refuses window 2's rows (a trigger raises): its group of four loads again
    window by window, so windows 0, 1 and 3 commit and only window 2 fails, by name."""
    source, windows, landing = land_six(tmp_path, pg_dsn, table_name, 4)
    sink = TimescaleSink(dsn=pg_dsn, table=table_name)
    with sink.connection() as conn:
        conn.execute(f"""
            CREATE FUNCTION {table_name}_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.ts >= '{T0 + timedelta(hours=2)}' AND NEW.ts < '{T0 + timedelta(hours=3)}'
                THEN RAISE EXCEPTION 'no readings for this hour';
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER refuse BEFORE INSERT ON {table_name}
                FOR EACH ROW EXECUTE FUNCTION {table_name}_refuse();""")
        conn.commit()
    stats = LoadStats()
    with pytest.raises(pipeline.SinkError, match=f"(?s){KEYS[2]}.*no readings for this hour"):
        pipeline.load("plant", source, landing, sink, windows, "run", stats)
    assert list(stats.loaded_windows) == [KEYS[0], KEYS[1], KEYS[3], KEYS[4], KEYS[5]]
    assert loaded_windows(pg_dsn, table_name) == list(stats.loaded_windows)
    assert transactions(pg_dsn, table_name) == [[KEYS[0]], [KEYS[1]], [KEYS[3]], KEYS[4:]]
    assert stats.result.loaded == 900 and stats.fetched == 900  # window 2 counted nowhere


def test_a_window_over_the_reject_ratio_loads_alone_between_groups(
    tmp_path: Path, pg_dsn: str, table_name: str
) -> None:
    """A window with too many rejects keeps its rows, out of any group; the windows before
    and after it still load in groups."""
    rows = fake_sources.hourly_rows(T0, hours=6)
    fake_sources.reset([{**row, "sensor_value": True} if KEYS[2] <= key(row) < KEYS[3] else row
                        for row in rows])
    project = make_project(tmp_path, config(pg_dsn, table_name, "fake_sources:fetch", 4))
    source = project.config.sources["plant"]
    windows = windows_for(SourceContext.build(project, "plant", source).partitions_def, KEYS)
    landing = LocalLanding(tmp_path / "landing")
    with make_connector("plant", source) as connector:
        pipeline.land("plant", source, connector, landing, windows, "run")
    stats = LoadStats()
    with pytest.raises(pipeline.RejectRatioExceeded, match=KEYS[2]):
        pipeline.load("plant", source, landing, TimescaleSink(dsn=pg_dsn, table=table_name),
                      windows, "run", stats)
    assert transactions(pg_dsn, table_name) == [KEYS[:2], KEYS[3:]]
    assert stats.rejected_by_window[KEYS[2]] == 180
    with psycopg.connect(pg_dsn) as conn:
        quarantined = conn.execute(f"SELECT DISTINCT partition_key FROM {table_name}_rejects")
        assert quarantined.fetchall() == [(KEYS[2],)]


def key(row: dict[str, Any]) -> str:
    """The hourly partition key of a `fake_sources` row."""
    return datetime.fromtimestamp(row["relative_time"], UTC).strftime("%Y-%m-%d-%H:%M")
